//! `spec.service`: the ports, the routing fields of the mesh and ingress providers, header
//! operations and the custom metadata of the apex, primary and canary Services.

use super::diagnostics::{Cx, Hint};
use super::fields::{Field, Reader};
use super::matches::decode_matches;
use super::names::is_dns_subdomain;
use crate::spec::types::{
    preview_gap, Canary, CustomMetadata, GatewayRef, HeaderOperations, Headers, HttpRetry,
    HttpRewrite, IntOrString, MirrorBackend, Service, UnmanagedMetadata,
};
use crate::spec::yaml::{Node, Value};

pub(super) fn decode_service(cx: &mut Cx, mut r: Reader, target_name: &str) -> Option<Service> {
    let name = r
        .string(cx, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| target_name.to_string());
    let port = r.req(cx, "port", |f, cx| f.int(cx, 1, Some(65535)));
    let port_name = r
        .string(cx, "portName")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "http".to_string());
    let target_port = r.field("targetPort").and_then(|f| match &f.node.value {
        Value::Str(s) if s.parse::<i64>().is_ok() => {
            f.expected(cx, "a port number 1-65535 or a port name")
                .hint(format!("remove the quotes: {s}"));
            None
        }
        Value::Str(s) if !s.is_empty() => Some(IntOrString::String(s.clone())),
        Value::Int(_) => f.int(cx, 1, Some(65535)).map(IntOrString::Int),
        _ => {
            f.expected(cx, "a port number 1-65535 or a port name");
            None
        }
    });
    let app_protocol = r.string(cx, "appProtocol");
    let port_discovery = r.flag(cx, "portDiscovery");
    let timeout = r.field("timeout").and_then(|f| f.duration_text(cx));
    let gateways = r.str_list(cx, "gateways");
    let gateway_refs = r
        .list(cx, "gatewayRefs")
        .iter()
        .filter_map(|item| {
            let mut g = item.map(cx)?;
            let group = g.string(cx, "group");
            let kind = g.string(cx, "kind");
            let namespace = g.string(cx, "namespace");
            let name = g.req_string(cx, "name");
            let section_name = g.string(cx, "sectionName");
            let port = g.int(cx, "port", 1, Some(65535));
            g.finish(cx);
            Some(GatewayRef {
                group,
                kind,
                namespace,
                name: name?,
                section_name,
                port,
            })
        })
        .collect();
    let hosts = r.str_list(cx, "hosts");
    let delegation = r.flag(cx, "delegation");
    let traffic_policy = r.field("trafficPolicy").and_then(|f| f.json_map(cx));
    let match_items = r.list(cx, "match");
    let matches = decode_matches(cx, match_items);
    let rewrite = r.map(cx, "rewrite").map(|mut rw| {
        let uri = rw.string(cx, "uri");
        let authority = rw.string(cx, "authority");
        let r#type = rw.string(cx, "type").filter(|t| !t.is_empty());
        rw.finish(cx);
        HttpRewrite {
            uri,
            authority,
            r#type,
        }
    });
    let retries = r.map(cx, "retries").map(|mut rt| {
        let attempts = rt.int(cx, "attempts", 0, None);
        let per_try_timeout = rt.field("perTryTimeout").and_then(|f| f.duration_text(cx));
        let retry_on = rt.string(cx, "retryOn");
        rt.finish(cx);
        HttpRetry {
            attempts,
            per_try_timeout,
            retry_on,
        }
    });
    let headers = r.map(cx, "headers").map(|mut h| {
        let request = h.map(cx, "request").map(|ops| decode_header_ops(cx, ops));
        let response = h.map(cx, "response").map(|ops| decode_header_ops(cx, ops));
        h.finish(cx);
        Headers { request, response }
    });
    let cors_policy = r.field("corsPolicy").and_then(|f| f.json_map(cx));
    let mesh_name = r.string(cx, "meshName");
    let backends = r.str_list(cx, "backends");
    let apex = r.map(cx, "apex").map(|m| decode_custom_metadata(cx, m));
    let primary = r.map(cx, "primary").map(|m| decode_custom_metadata(cx, m));
    let canary = r.map(cx, "canary").map(|m| decode_custom_metadata(cx, m));
    let backend_timeout = r.field("backendTimeout").and_then(|f| f.duration_text(cx));
    let headless = r.flag(cx, "headless");
    let traffic_distribution = r
        .field("trafficDistribution")
        .and_then(|f| f.one_of(cx, "trafficDistribution", &TRAFFIC_DISTRIBUTIONS));
    let mirror = r
        .list(cx, "mirror")
        .iter()
        .filter_map(|item| decode_mirror(cx, item))
        .collect();
    let unmanaged_metadata = r.map(cx, "unmanagedMetadata").map(|mut m| {
        let labels = m.str_list(cx, "labels");
        let annotations = m.str_list(cx, "annotations");
        m.finish(cx);
        UnmanagedMetadata {
            labels,
            annotations,
        }
    });
    // An aviary addition: under flagger.app it stays an unknown field (Flagger would drop it).
    let preview_hosts = if cx.strict {
        r.field("previewHosts")
            .map(|f| decode_preview_hosts(cx, &f, &hosts))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    r.finish(cx);
    let port = port?;
    Some(Service {
        name,
        port: u16::try_from(port).unwrap_or(0),
        port_name,
        target_port: Some(target_port.unwrap_or(IntOrString::Int(port))),
        app_protocol,
        port_discovery,
        timeout,
        gateways,
        gateway_refs,
        hosts,
        delegation,
        traffic_policy,
        r#match: matches,
        rewrite,
        retries,
        headers,
        cors_policy,
        mesh_name,
        backends,
        apex,
        primary,
        canary,
        backend_timeout,
        headless,
        traffic_distribution,
        mirror,
        unmanaged_metadata,
        preview_hosts,
    })
}

/// `service.previewHosts`: exact host names (lower-case RFC 1123, no wildcard), each once, none
/// of them one of the main `hosts` (a host is either split or previewed).
fn decode_preview_hosts(cx: &mut Cx, f: &Field, hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, item) in f.list(cx).iter().enumerate() {
        let Some(host) = item.nonempty_string(cx) else {
            continue;
        };
        if host.starts_with("*.") || host == "*" {
            item.error(cx, format!("previewHosts[{i}] is the wildcard {host:?}; a preview host is one exact host name"))
                .hint("name the one host that reaches the canary, e.g. canary.example.com");
        } else if !is_dns_subdomain(&host) {
            let lower = host.to_ascii_lowercase();
            let e = item.error(cx, format!("{host:?} is not a host name (lower-case letters, digits, '-' and '.', no port, no scheme)"));
            if lower != host && is_dns_subdomain(&lower) {
                e.hint(format!("write it in lower case: {lower}"));
            } else {
                e.hint("write the bare host name, e.g. canary.example.com");
            }
        } else if hosts.contains(&host) {
            item.error(cx, format!("{host} is also in service.hosts, whose traffic is split; a preview host must be a host of its own"))
                .hint(format!("remove {host} from previewHosts, or use another name, e.g. canary.{host}"));
        } else if out.contains(&host) {
            item.warn(cx, format!("{host} is listed twice"))
                .hint("remove the repeated entry");
        } else {
            out.push(host);
        }
    }
    out
}

/// The values Flagger's CRD allows for `service.trafficDistribution`.
const TRAFFIC_DISTRIBUTIONS: [&str; 3] = ["PreferClose", "PreferSameZone", "PreferSameNode"];

/// One `service.mirror[]` entry: `{backendRef: {group, kind, name, namespace, port}}`, with the
/// CRD's rule that a Service reference needs a port.
fn decode_mirror(cx: &mut Cx, item: &Field) -> Option<MirrorBackend> {
    let mut m = item.map(cx)?;
    let backend = m.req(cx, "backendRef", |f, cx| {
        let mut b = f.map(cx)?;
        let group = b.string(cx, "group");
        let kind = b.string(cx, "kind");
        let name = b.req(cx, "name", |n, cx| n.nonempty_string(cx));
        let namespace = b.string(cx, "namespace");
        let port = b.int(cx, "port", 1, Some(65535));
        let service = group.as_deref().unwrap_or("").is_empty()
            && kind.as_deref().unwrap_or("Service") == "Service";
        if service && port.is_none() && !b.present("port") {
            cx.error(
                f.key_line,
                &f.path,
                "a mirror backend that is a Service needs a port",
            )
            .hint("add port: with the Service's port, e.g. port: 80");
        }
        b.finish(cx);
        Some(MirrorBackend {
            group,
            kind,
            name: name?,
            namespace,
            port,
        })
    });
    m.finish(cx);
    backend
}

pub(super) fn decode_header_ops(cx: &mut Cx, mut r: Reader) -> HeaderOperations {
    let set = r.str_map(cx, "set");
    let add = r.str_map(cx, "add");
    let remove = r.str_list(cx, "remove");
    r.finish(cx);
    HeaderOperations { set, add, remove }
}

pub(super) fn decode_custom_metadata(cx: &mut Cx, mut r: Reader) -> CustomMetadata {
    let labels = r.str_map(cx, "labels");
    let annotations = r.str_map(cx, "annotations");
    r.finish(cx);
    CustomMetadata {
        labels,
        annotations,
    }
}

/// Warns when the Canary's own provider leaves `service.previewHosts` unrouted
/// ([`preview_gap`]), at the field's line.
pub(super) fn check_preview(cx: &mut Cx, spec: &Node, canary: &Canary) {
    let Some(provider) = &canary.provider else {
        return;
    };
    let Some((message, help)) = preview_gap(&canary.service, provider) else {
        return;
    };
    let line = spec
        .get("service")
        .and_then(|s| s.entry("previewHosts"))
        .map_or(canary.origin.line, |(k, _)| k.line);
    cx.warn(line, "spec.service.previewHosts", message)
        .hint(help);
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        canary, decode, errors, warnings, AVIARY_API as AVIARY, FLAGGER_API, STEPS,
    };

    /// The minimal canary with `lines` added under `spec.service` (from line 11 on).
    fn with_service(api: &str, lines: &str) -> String {
        canary(api, STEPS).replace("    port: 9898\n", &format!("    port: 9898\n{lines}"))
    }

    #[test]
    fn preview_hosts_are_read_under_aviary_dev() {
        let text = with_service(
            AVIARY,
            "    hosts: [app.example.com]\n    previewHosts: [canary.example.com, beta.example.com]\n",
        );
        let docs = decode(&text);
        assert_eq!(
            docs.canaries[0].service.preview_hosts,
            ["canary.example.com", "beta.example.com"]
        );
        assert!(warnings(&text).is_empty(), "{:?}", warnings(&text));
    }

    #[test]
    fn preview_hosts_are_an_unknown_field_to_flagger() {
        let text = with_service(FLAGGER_API, "    previewHosts: [canary.example.com]\n");
        let docs = decode(&text);
        assert!(docs.canaries[0].service.preview_hosts.is_empty());
        let w = warnings(&text);
        assert!(
            w.iter()
                .any(|w| w.contains("spec.service.previewHosts") && w.contains("unknown field")),
            "{w:?}"
        );
    }

    #[test]
    fn a_preview_host_must_be_one_exact_host_of_its_own() {
        let e = |hosts: &str| {
            errors(&with_service(
                AVIARY,
                &format!("    hosts: [app.example.com]\n    previewHosts: [{hosts}]\n"),
            ))
        };
        assert_eq!(
            e("\"*.example.com\""),
            vec!["canary.yaml:12: spec.service.previewHosts[0]: previewHosts[0] is the wildcard \"*.example.com\"; a preview host is one exact host name\n  help: name the one host that reaches the canary, e.g. canary.example.com"]
        );
        assert_eq!(
            e("Canary.Example.com"),
            vec!["canary.yaml:12: spec.service.previewHosts[0]: \"Canary.Example.com\" is not a host name (lower-case letters, digits, '-' and '.', no port, no scheme)\n  help: write it in lower case: canary.example.com"]
        );
        assert!(e("\"https://canary.example.com\"")[0].contains("help: write the bare host name"));
        assert_eq!(
            e("app.example.com"),
            vec!["canary.yaml:12: spec.service.previewHosts[0]: app.example.com is also in service.hosts, whose traffic is split; a preview host must be a host of its own\n  help: remove app.example.com from previewHosts, or use another name, e.g. canary.app.example.com"]
        );
    }

    #[test]
    fn a_provider_that_routes_no_host_is_warned_about() {
        let text = with_service(AVIARY, "    previewHosts: [canary.example.com]\n")
            .replace("spec:\n", "spec:\n  provider: kubernetes:replicas\n");
        let w = warnings(&text);
        assert_eq!(
            w,
            vec!["canary.yaml:12: warning: spec.service.previewHosts: service.previewHosts has no effect with provider kubernetes:replicas, which routes no host names\n  help: use provider gatewayapi, istio or nginx to reach the canary at its own host"]
        );
        let mesh = with_service(AVIARY, "    previewHosts: [canary.example.com]\n")
            .replace("spec:\n", "spec:\n  provider: linkerd\n");
        assert!(warnings(&mesh)
            .iter()
            .any(|w| w.contains("no spec.service.gatewayRefs")));
    }
}
