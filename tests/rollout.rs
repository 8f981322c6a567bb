//! `aviary rollout` end to end: the real binary, through the real kube client, against the API
//! server emulator, with a real webhook server on loopback. Each test asserts the objects aviary
//! wrote at each step (weights, selectors, replicas, images), read back from the emulator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_emulator::{Config, Emulator, Fault, FaultKind};
use serde_json::{json, Value};

/// A webhook endpoint answering every POST with a settable status.
struct Hook {
    status: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
    url: String,
}

impl Hook {
    fn start() -> Hook {
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
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, c) = (s.clone(), c.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
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
        Hook { status, calls, url }
    }

    fn set(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

struct Cluster {
    emu: Emulator,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

fn cluster() -> Cluster {
    let config = Config {
        deployment_ready_delay: Duration::from_millis(100),
        namespaces: vec!["default".into(), "test".into()],
        ..Config::default()
    };
    let emu = match Emulator::start_blocking(config) {
        Ok(e) => e,
        Err(e) => panic!("emulator: {e}"),
    };
    let dir = std::env::temp_dir().join(format!(
        "aviary-rollout-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_suffix()
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{e}");
    }
    let kubeconfig = dir.join("kubeconfig");
    if let Err(e) = emu.write_kubeconfig(&kubeconfig, "test") {
        panic!("{e}");
    }
    Cluster {
        emu,
        dir,
        kubeconfig,
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Cluster {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        if let Err(e) = std::fs::write(&p, text) {
            panic!("{e}");
        }
        p
    }

    /// Creates or replaces the target Deployment, as a user's `kubectl apply` would.
    fn apply_target(&self, image: &str, replicas: i64) {
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

    /// `kubectl apply --server-side --force-conflicts`, through the real kube client.
    fn kubectl_apply(&self, object: &Value) {
        let kubeconfig = self.kubeconfig.clone();
        let object = object.clone();
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("{e}"),
        };
        let result: Result<(), String> = rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| e.to_string())?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
            let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                kube::Api::namespaced(client, "test");
            let params = kube::api::PatchParams::apply("kubectl").force();
            api.patch("podinfo", &params, &kube::api::Patch::Apply(&object))
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        });
        if let Err(e) = result {
            panic!("kubectl apply: {e}");
        }
    }

    fn get(&self, api: &str, plural: &str, name: &str) -> Value {
        self.emu
            .get(api, plural, Some("test"), name)
            .unwrap_or(Value::Null)
    }

    fn aviary(&self, canary: &Path, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
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

    fn run(&self, canary: &Path) -> Output {
        match self.aviary(canary, &[]).output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    fn spawn(&self, canary: &Path, env: &[(&str, &str)]) -> Child {
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
    fn saved_weight(&self) -> i64 {
        let cm = self.get("v1", "configmaps", "podinfo-aviary");
        let engine: Value = cm["data"]["engine.json"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        engine["state"]["routes"]["canary"].as_i64().unwrap_or(0)
    }

    /// Canary weights of every stored version of the HTTPRoute, consecutive repeats removed.
    fn route_weights(&self) -> Vec<i64> {
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

    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut(&Cluster) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            if start.elapsed() > limit {
                panic!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The canary backend's weight in the first rule of an HTTPRoute.
fn canary_weight(route: &Value) -> Option<i64> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "podinfo-canary")?["weight"]
        .as_i64()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn canary_yaml(provider: &str, hook: &str, analysis: &str) -> String {
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

fn image(dep: &Value) -> String {
    dep["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn gatewayapi_bootstrap_promote_and_rollback() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "gatewayapi",
            &hook.url,
            "    maxWeight: 60\n    stepWeight: 20",
        ),
    );
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.0.0", 2);

    // First run: no primary yet, so bootstrap and stop.
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("bootstrapped"), "{}", stderr(&out));
    let primary = c.get("apps/v1", "deployments", "podinfo-primary");
    assert_eq!(image(&primary), "ghcr.io/stefanprodan/podinfo:6.0.0");
    assert_eq!(primary["spec"]["replicas"], 2);
    assert_eq!(
        primary["spec"]["selector"]["matchLabels"]["app"],
        "podinfo-primary"
    );
    assert_eq!(
        primary["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "podinfo-settings-primary"
    );
    assert_eq!(
        primary["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "aviary"
    );
    assert_eq!(
        c.get("v1", "configmaps", "podinfo-settings-primary")["data"]["GREETING"],
        "hello"
    );
    assert_eq!(
        c.get("v1", "services", "podinfo")["spec"]["selector"]["app"],
        "podinfo-primary"
    );
    assert_eq!(
        c.get("v1", "services", "podinfo-primary")["spec"]["selector"]["app"],
        "podinfo-primary"
    );
    assert_eq!(
        c.get("v1", "services", "podinfo-canary")["spec"]["selector"]["app"],
        "podinfo"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    let route = c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo");
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "public");
    assert_eq!(route["spec"]["hostnames"][0], "podinfo.example.com");
    assert_eq!(canary_weight(&route), Some(0));
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);

    // A good revision: 20, 40, 60, promoted, traffic back on the (new) primary.
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.1.0", 2);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("verdict: promoted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.route_weights(), vec![0, 20, 40, 60, 0]);
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "ghcr.io/stefanprodan/podinfo:6.1.0"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    assert!(hook.calls.load(Ordering::SeqCst) >= 3);

    // A bad revision: the acceptance webhook fails twice and the canary is rolled back at 20%.
    c.apply_target("ghcr.io/stefanprodan/podinfo:6.2.0", 2);
    hook.set(500);
    let out = c.run(&canary);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Rolling back podinfo.test failed checks threshold reached 2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.route_weights(), vec![0, 20, 40, 60, 0, 20, 0]);
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "ghcr.io/stefanprodan/podinfo:6.1.0"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );

    // Running again on the same rolled-back revision does nothing and still says so.
    let out = c.run(&canary);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rolled back before"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kubernetes_provider_is_blue_green() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml("kubernetes", &hook.url, "    iterations: 2"),
    );
    c.apply_target("podinfo:1", 3);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 3);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo-primary")["spec"]["replicas"],
        3
    );
    // The apex never left the primary and no mesh object was written.
    let apex = c.emu.history("v1", "services", Some("test"), "podinfo");
    assert!(apex
        .iter()
        .all(|s| s["spec"]["selector"]["app"] == "podinfo-primary"));
    assert!(c
        .emu
        .list("gateway.networking.k8s.io/v1", "httproutes", Some("test"))
        .is_empty());
}

#[test]
fn sigterm_returns_traffic_and_exits_cancelled() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "gatewayapi",
            &hook.url,
            "    maxWeight: 100\n    stepWeight: 10",
        ),
    );
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    let child = c.spawn(&canary, &[]);
    c.wait_for("weight 20", Duration::from_secs(30), |c| {
        canary_weight(&c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo")).unwrap_or(0)
            >= 20
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(status.map(|s| s.success()).unwrap_or(false));
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    let route = c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo");
    assert_eq!(canary_weight(&route), Some(0));
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 100);
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:1"
    );
}

#[test]
fn a_killed_run_resumes_from_the_saved_state() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "gatewayapi",
            &hook.url,
            "    maxWeight: 60\n    stepWeight: 20",
        ),
    );
    let run_env = [("GITHUB_REPOSITORY", "acme/app"), ("GITHUB_RUN_ID", "77")];
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    let mut child = c.spawn(&canary, &run_env);
    c.wait_for("a saved weight of 40", Duration::from_secs(30), |c| {
        c.saved_weight() >= 40
    });
    let _ = child.kill(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    let saved = c.saved_weight();
    // The same pipeline run, re-run: it holds the same lease identity and picks up where it was.
    let out = match c.aviary(&canary, &run_env).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "resuming podinfo.test in phase Progressing at canary weight {saved}%"
        )),
        "{}",
        stderr(&out)
    );
    let weights = c.route_weights();
    assert_eq!(
        weights,
        vec![0, 20, 40, 60, 0],
        "the resumed run does not start over"
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
}

#[test]
fn a_second_runner_is_refused_by_the_lease() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "gatewayapi",
            &hook.url,
            "    maxWeight: 100\n    stepWeight: 5",
        ),
    );
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    let mut first = c.spawn(
        &canary,
        &[("GITHUB_REPOSITORY", "acme/app"), ("GITHUB_RUN_ID", "1")],
    );
    c.wait_for("the first runner to start", Duration::from_secs(30), |c| {
        canary_weight(&c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo")).unwrap_or(0)
            >= 5
    });
    let out = match c
        .aviary(
            &canary,
            &[("GITHUB_REPOSITORY", "acme/app"), ("GITHUB_RUN_ID", "2")],
        )
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is being rolled out by github:acme/app/actions/runs/1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn api_faults_are_retried_and_the_rollout_still_succeeds() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "gatewayapi",
            &hook.url,
            "    maxWeight: 60\n    stepWeight: 20",
        ),
    );
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    c.emu.set_faults(vec![
        Fault {
            method: None,
            path_regex: ".*".into(),
            probability: 0.1,
            kind: FaultKind::Status(503),
            seed: 1,
        },
        Fault {
            method: Some("PATCH".into()),
            path_regex: ".*".into(),
            probability: 0.1,
            kind: FaultKind::Status(409),
            seed: 2,
        },
        Fault {
            method: Some("GET".into()),
            path_regex: ".*".into(),
            probability: 0.1,
            kind: FaultKind::Timeout,
            seed: 3,
        },
        Fault {
            method: None,
            path_regex: ".*".into(),
            probability: 0.2,
            kind: FaultKind::Latency(Duration::from_millis(50)),
            seed: 4,
        },
    ]);
    let out = c.run(&canary);
    c.emu.set_faults(Vec::new());
    let injected = c.emu.requests().iter().filter(|r| r.injected_fault).count();
    assert!(injected >= 5, "only {injected} faults were injected");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(c.route_weights(), vec![0, 20, 40, 60, 0]);
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
}
