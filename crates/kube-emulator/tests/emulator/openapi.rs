//! The OpenAPI documents and `fieldValidation`, over plain HTTP.

use std::io::{Read, Write};

use kube_emulator::{Config, Emulator};
use serde_json::{json, Value};

use crate::TestResult;

/// One HTTP/1.1 request: (status, head, body).
fn http(
    emu: &Emulator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), Box<dyn std::error::Error + Send + Sync>> {
    let addr = emu.url().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").ok_or("no end of head")?;
    let status: u16 = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, head.to_string(), body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn get_json(emu: &Emulator, path: &str) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let (status, _, body) = http(emu, "GET", path, &[("Accept", "application/json")], "")?;
    assert_eq!(status, 200, "{path}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[test]
fn openapi_v3_documents_describe_kinds_and_operations() -> TestResult {
    let emu = Emulator::start_blocking(Config::default())?;
    let index = get_json(&emu, "/openapi/v3")?;
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/gateway.networking.k8s.io/v1",
        "apis/flagger.app/v1beta1",
    ] {
        let url = index["paths"][gv]["serverRelativeURL"].as_str().ok_or(gv)?;
        assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
    }
    let apps_url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .ok_or("no apps")?;
    let apps = get_json(&emu, apps_url)?;
    let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .ok_or("no parameters")?
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        params.contains(&"fieldValidation") && params.contains(&"force"),
        "{params:?}"
    );
    let schemas = &apps["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");

    let gw = get_json(&emu, "/openapi/v3/apis/gateway.networking.k8s.io/v1")?;
    let route = &gw["components"]["schemas"]["io.k8s.networking.gateway.v1.HTTPRoute"];
    assert!(route["properties"]["spec"]["properties"]["rules"].is_object());
    let content = &gw["paths"]
        ["/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{name}"]["patch"]
        ["requestBody"]["content"];
    assert!(content.get("application/merge-patch+json").is_some());
    assert!(content
        .get("application/strategic-merge-patch+json")
        .is_none());

    let (status, _, _) = http(
        &emu,
        "GET",
        "/openapi/v3/apis/nothing.example.com/v1",
        &[],
        "",
    )?;
    assert_eq!(status, 404);
    Ok(())
}

#[test]
fn openapi_v2_is_json_only() -> TestResult {
    let emu = Emulator::start_blocking(Config::default())?;
    let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let (status, _, body) = http(&emu, "GET", "/openapi/v2", &[("Accept", pb)], "")?;
    assert_eq!(status, 406, "{body}");
    let v2 = get_json(&emu, "/openapi/v2")?;
    assert_eq!(v2["swagger"], "2.0");
    let spec = &v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
    assert_eq!(
        spec["$ref"],
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    );
    Ok(())
}

#[test]
fn field_validation_directives() -> TestResult {
    let emu = Emulator::start_blocking(Config::default())?;
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"NAME"},"data":{"a":"b"},"foo":1}"#;
    let post = |name: &str, query: &str| {
        http(
            &emu,
            "POST",
            &format!("/api/v1/namespaces/default/configmaps{query}"),
            &[("Content-Type", "application/json")],
            &cm.replace("NAME", name),
        )
    };
    // Default (Warn): stored without the field, one warning.
    let (status, head, body) = post("warned", "")?;
    assert_eq!(status, 201, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains(r#"warning: 299 - "unknown field \"foo\"""#),
        "{head}"
    );
    let stored = emu
        .get("v1", "configmaps", Some("default"), "warned")
        .ok_or("not stored")?;
    assert!(stored.get("foo").is_none());
    // Ignore: the same, silently.
    let (status, head, _) = post("ignored", "?fieldValidation=Ignore")?;
    assert_eq!(status, 201);
    assert!(!head.to_ascii_lowercase().contains("warning"), "{head}");
    // Strict: refused.
    let (status, _, body) = post("strict", "?fieldValidation=Strict")?;
    assert_eq!(status, 400);
    let err: Value = serde_json::from_str(&body)?;
    assert_eq!(err["reason"], "BadRequest");
    assert_eq!(
        err["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "foo""#
    );
    assert!(emu
        .get("v1", "configmaps", Some("default"), "strict")
        .is_none());
    // An unknown directive: the request's options are invalid.
    let (status, _, body) = post("odd", "?fieldValidation=Loud")?;
    assert_eq!(status, 422, "{body}");
    let err: Value = serde_json::from_str(&body)?;
    assert_eq!(
        err["message"],
        r#"CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loud": supported values: "", "Ignore", "Strict", "Warn""#
    );
    // A merge patch adding an unknown field: refused under Strict.
    let (status, _, body) = http(
        &emu,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/warned?fieldValidation=Strict",
        &[("Content-Type", "application/merge-patch+json")],
        r#"{"data":{"c":"d"},"bar":{"x":1}}"#,
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(r#"unknown field \"bar\""#), "{body}");
    Ok(())
}
