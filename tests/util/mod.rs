//! Test support shared by the modules of the `tests` binary: an emulated cluster with a
//! kubeconfig, a target Deployment applied as a user would, a webhook endpoint on loopback, the
//! `aviary` binary and what it printed, temporary directories, and GitHub's output file.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod gcs;

use kube_emulator::{Config, Emulator};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A webhook endpoint answering every POST with a settable status.
pub struct Hook {
    pub status: Arc<AtomicU16>,
    pub calls: Arc<AtomicUsize>,
    pub url: String,
    /// Every request body received, in order.
    pub bodies: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Hook {
    pub fn start() -> Hook {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = format!(
            "http://{}/",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let status = Arc::new(AtomicU16::new(200));
        let calls = Arc::new(AtomicUsize::new(0));
        let (s, c) = (status.clone(), calls.clone());
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, c, b) = (s.clone(), c.clone(), b.clone());
                std::thread::spawn(move || {
                    let Some(request) = read_request(&stream) else {
                        return;
                    };
                    if let Ok(mut all) = b.lock() {
                        all.push(request.body);
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                    let code = s.load(Ordering::SeqCst);
                    let mut w = &stream;
                    let _ = write!(
                        w,
                        "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                });
            }
        });
        Hook {
            status,
            calls,
            url,
            bodies,
        }
    }

    pub fn set(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

/// One HTTP/1.1 request as a test server reads it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// Reads one request (its head and a `Content-Length` body) from `stream`; `None` when the peer
/// closed before a whole head arrived.
pub fn read_request(stream: &std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    if reader.read_line(&mut head).ok()? == 0 {
        return None;
    }
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim().to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if l.is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    Some(Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub struct Cluster {
    pub emu: Emulator,
    /// The test's directory (the kubeconfig, canaries, reports), removed with the cluster.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    _dir: TempDir,
}

pub fn cluster() -> Cluster {
    cluster_with(&["default", "test"])
}

/// An emulated cluster with these namespaces; the kubeconfig's namespace is `test`.
pub fn cluster_with(namespaces: &[&str]) -> Cluster {
    let config = Config {
        deployment_ready_delay: Duration::from_millis(100),
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        ..Config::default()
    };
    let emu = match Emulator::start_blocking(config) {
        Ok(e) => e,
        Err(e) => panic!("emulator: {e}"),
    };
    let tmp = tempdir();
    let dir = tmp.path().to_path_buf();
    let kubeconfig = dir.join("kubeconfig");
    if let Err(e) = emu.write_kubeconfig(&kubeconfig, "test") {
        panic!("{e}");
    }
    Cluster {
        emu,
        dir,
        kubeconfig,
        _dir: tmp,
    }
}

/// The binary under test: `AVIARY_TEST_BIN` when set (to run the fault suite against an older
/// build and see each test fail before its fix), else the one cargo built for these tests.
pub fn aviary_bin() -> PathBuf {
    std::env::var_os("AVIARY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_aviary")))
}

/// A fresh temporary directory for one test, removed when dropped.
pub fn tempdir() -> TempDir {
    match tempfile::Builder::new().prefix("aviary-test-").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    }
}

/// Writes `text` to `dir/name` (creating the directories it needs); returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

/// A file's text; empty when it cannot be read (a host file the binary did not write).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `$GITHUB_OUTPUT` parsed as the runner parses it (both the `k=v` and the heredoc forms).
pub fn outputs(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((k, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(k.to_string(), value.join("\n"));
        } else if let Some((k, v)) = line.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

impl Cluster {
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        if let Err(e) = std::fs::write(&p, text) {
            panic!("{e}");
        }
        p
    }

    /// Creates or replaces the target Deployment, as a user's `kubectl apply` would.
    pub fn apply_target(&self, image: &str, replicas: i64) {
        let dep = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test", "labels": {"app": "podinfo"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "podinfo", "image": image,
                        "ports": [{"containerPort": 9898, "name": "http"}],
                        "envFrom": [{"configMapRef": {"name": "podinfo-settings"}}]}]}
                }
            }
        });
        match self
            .emu
            .get("apps/v1", "deployments", Some("test"), "podinfo")
        {
            None => {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "podinfo-settings", "namespace": "test"},
                    "data": {"GREETING": "hello"}});
                if let Err(e) = self.emu.insert(cm) {
                    panic!("{e}");
                }
                if let Err(e) = self.emu.insert(dep) {
                    panic!("{e}");
                }
            }
            Some(_) => self.kubectl_apply(&dep),
        }
    }

    /// Runs `work` with a kube client for this cluster (connected as `kubectl` would, through the
    /// kubeconfig), on a runtime of its own; panics with `what` when it fails.
    pub fn with_client<T, F, Fut>(&self, what: &str, work: F) -> T
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("{e}"),
        };
        let result: Result<T, String> = rt.block_on(async {
            let kc =
                kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| e.to_string())?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
            work(client).await.map_err(|e| e.to_string())
        });
        match result {
            Ok(v) => v,
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// `kubectl apply --server-side --force-conflicts`, through the real kube client.
    pub fn kubectl_apply(&self, object: &Value) {
        self.with_client("kubectl apply", |client| async move {
            let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                kube::Api::namespaced(client, "test");
            let params = kube::api::PatchParams::apply("kubectl").force();
            api.patch("podinfo", &params, &kube::api::Patch::Apply(object))
                .await
                .map(|_| ())
        })
    }

    /// `kubectl patch --type merge` of one object in namespace `test`, through the real kube
    /// client.
    pub fn merge_patch(&self, api_version: &str, kind: &str, name: &str, patch: Value) {
        let plural = if kind.ends_with('s') {
            format!("{}es", kind.to_lowercase())
        } else {
            format!("{}s", kind.to_lowercase())
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural);
        self.with_client(&format!("patch {kind} {name}"), |client| async move {
            let api: kube::Api<kube::api::DynamicObject> =
                kube::Api::namespaced_with(client, "test", &resource);
            api.patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
        })
    }

    pub fn get(&self, api: &str, plural: &str, name: &str) -> Value {
        self.emu
            .get(api, plural, Some("test"), name)
            .unwrap_or(Value::Null)
    }

    pub fn aviary(&self, canary: &Path, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(aviary_bin());
        cmd.args(["rollout", "-f"])
            .arg(canary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "2s", "--timeout", "5m"])
            .env_remove("AVIARY_LOG")
            .env_remove("KUBECONFIG")
            .env_remove("GITHUB_RUN_ID")
            .env_remove("GITHUB_REPOSITORY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, canary: &Path) -> Output {
        match self.aviary(canary, &[]).output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn spawn(&self, canary: &Path, env: &[(&str, &str)]) -> Child {
        match self
            .aviary(canary, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// The canary weight in the state aviary saved in the cluster.
    pub fn saved_weight(&self) -> i64 {
        let cm = self.get("v1", "configmaps", "podinfo-aviary");
        let engine: Value = cm["data"]["engine.json"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        engine["state"]["routes"]["canary"].as_i64().unwrap_or(0)
    }

    /// Canary weights of every stored version of the HTTPRoute, consecutive repeats removed.
    pub fn route_weights(&self) -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        for v in self.emu.history(
            "gateway.networking.k8s.io/v1",
            "httproutes",
            Some("test"),
            "podinfo",
        ) {
            if let Some(w) = canary_weight(&v) {
                if out.last() != Some(&w) {
                    out.push(w);
                }
            }
        }
        out
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut(&Cluster) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            if start.elapsed() > limit {
                panic!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The canary backend's weight in the first rule of an HTTPRoute.
pub fn canary_weight(route: &Value) -> Option<i64> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "podinfo-canary")?["weight"]
        .as_i64()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn canary_yaml(provider: &str, hook: &str, analysis: &str) -> String {
    format!(
        "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: {provider}
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 30
  service:
    port: 9898
    hosts: [podinfo.example.com]
    gatewayRefs:
      - name: public
        namespace: gateway-system
  analysis:
    interval: 1s
    threshold: 2
{analysis}
    webhooks:
      - name: acceptance
        type: rollout
        url: {hook}
"
    )
}

pub fn image(dep: &Value) -> String {
    dep["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Copies a directory tree (an example project) into `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    if let Err(e) = std::fs::create_dir_all(to) {
        panic!("{}: {e}", to.display());
    }
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) => panic!("{}: {e}", from.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &dest);
        } else if let Err(e) = std::fs::copy(&path, &dest) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// A cluster where a `provider` Canary (with `analysis` lines, see [`canary_yaml`]) bootstrapped
/// its primary from `podinfo:1`, and `podinfo:2` was just applied: the state in which a rollout
/// analyses a new revision.
pub fn with_new_revision(provider: &str, analysis: &str) -> (Cluster, Hook, PathBuf) {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write("canary.yaml", &canary_yaml(provider, &hook.url, analysis));
    c.apply_target("podinfo:1", 2);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "bootstrap: {}", stderr(&out));
    c.apply_target("podinfo:2", 2);
    (c, hook, canary)
}

/// `aviary step` as GitHub runs the action's main (or, `post`, its post) entrypoint: the
/// runner's variables, the inputs of a `rollout` of `canary`, and `state` as `STATE_*`.
pub fn github_step(c: &Cluster, canary: &Path, post: bool, state: &[(&str, String)]) -> Command {
    let files = c.dir.join("runner");
    if let Err(e) = std::fs::create_dir_all(&files) {
        panic!("{e}");
    }
    let program = if post {
        // The image links `aviary-post` to the binary; GitHub runs it with no arguments.
        let link = files.join("aviary-post");
        if !link.exists() {
            if let Err(e) = std::os::unix::fs::symlink(aviary_bin(), &link) {
                panic!("{e}");
            }
        }
        link
    } else {
        aviary_bin()
    };
    let mut cmd = Command::new(program);
    if !post {
        cmd.arg("step");
    }
    cmd.current_dir(&c.dir)
        .env_remove("KUBECONFIG")
        .env_remove("AVIARY_LOG")
        .env_remove("GITHUB_RUN_ID")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_REPOSITORY", "acme/shop")
        .env("GITHUB_WORKSPACE", &c.dir)
        .env("GITHUB_OUTPUT", files.join("output"))
        .env("GITHUB_STATE", files.join("state"))
        .env("GITHUB_STEP_SUMMARY", files.join("summary.md"))
        .env("INPUT_COMMAND", "rollout")
        .env("INPUT_CANARY-FILE", canary)
        .env("INPUT_PROVIDER", "gatewayapi")
        .env("INPUT_KUBECONFIG", &c.kubeconfig);
    for (k, v) in state {
        cmd.env(format!("STATE_{k}"), v);
    }
    cmd
}
