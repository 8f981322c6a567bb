//! Fault tests: the runner against the cluster: promotion pinning, signals, leases, aborts, API
//! outages. Each runs the real `aviary` binary against the API emulator, with webhook servers
//! on loopback that the test holds and releases to put the runner exactly where a fault bites.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kube_emulator::{Fault, FaultKind};
use serde_json::Value;

use crate::util::*;

/// What a [`Gate`] does with one call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Status(u16),
    /// Hold the call until the test calls [`Gate::release`], then answer 200.
    Hold,
    /// Keep the connection open and never answer.
    Never,
}

/// A webhook server whose every answer the test decides: `policy(n)` for the n-th call
/// (1-based). Each call is announced on `arrivals` as it comes in.
struct Gate {
    url: String,
    arrivals: mpsc::Receiver<usize>,
    released: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    fn start(policy: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Gate {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}/"),
            Err(e) => panic!("{e}"),
        };
        let (tx, arrivals) = mpsc::channel();
        let released = Arc::new((Mutex::new(false), Condvar::new()));
        let policy = Arc::new(policy);
        let rel = released.clone();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().flatten().enumerate() {
                let n = i + 1;
                let (tx, rel, policy) = (tx.clone(), rel.clone(), policy.clone());
                std::thread::spawn(move || {
                    if read_request(&stream).is_none() {
                        return;
                    }
                    let _ = tx.send(n);
                    let code = match policy(n) {
                        Answer::Status(code) => code,
                        Answer::Hold => {
                            let (lock, cvar) = &*rel;
                            let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
                            while !*open {
                                open = cvar.wait(open).unwrap_or_else(|e| e.into_inner());
                            }
                            200
                        }
                        Answer::Never => loop {
                            std::thread::park();
                        },
                    };
                    let mut w = &stream;
                    let _ = write!(
                        w,
                        "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                });
            }
        });
        Gate {
            url,
            arrivals,
            released,
        }
    }

    /// A gate that answers `special` to call `n` and 200 to every other.
    fn at(n: usize, special: Answer) -> Gate {
        Gate::start(move |k| if k == n { special } else { Answer::Status(200) })
    }

    /// Waits for the n-th call to arrive.
    fn wait_for_call(&self, n: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.arrivals.recv_timeout(left) {
                Ok(k) if k >= n => return,
                Ok(_) => {}
                Err(_) => panic!("webhook call {n} did not come within {limit:?}"),
            }
        }
    }

    fn release(&self) {
        let (lock, cvar) = &*self.released;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
    }
}

/// A Canary whose `rollout` webhook (called once per analysis, at each weight) is `hook`.
fn canary_with(c: &Cluster, hook: &str, analysis: &str) -> std::path::PathBuf {
    c.write("canary.yaml", &canary_yaml("gatewayapi", hook, analysis))
}

/// A cluster with podinfo:1 bootstrapped as the primary and podinfo:2 applied to the target.
fn bootstrapped(hook: &Gate, analysis: &str) -> (Cluster, std::path::PathBuf) {
    let c = cluster();
    let canary = canary_with(&c, &hook.url, analysis);
    c.apply_target("podinfo:1", 2);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "bootstrap: {}", stderr(&out));
    c.apply_target("podinfo:2", 2);
    (c, canary)
}

/// Starts `aviary rollout` writing its report to `report.json` in the cluster's directory.
fn spawn_reporting(c: &Cluster, canary: &Path) -> (Child, std::path::PathBuf) {
    let path = c.dir.join("report.json");
    let child = match c
        .aviary(canary, &[])
        .arg("--report")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    (child, path)
}

/// A run SIGKILLed during its analysis at 40% (its rollout webhook held there): the state is
/// saved at 40%, the lease is still valid, and nothing was cleaned up.
fn killed_at_40() -> (Gate, Cluster, std::path::PathBuf) {
    let gate = Gate::at(2, Answer::Hold);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let mut child = c.spawn(&canary, &[]);
    gate.wait_for_call(2, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 40);
    let _ = child.kill();
    let _ = child.wait();
    gate.release();
    (gate, c, canary)
}

fn route_weight(c: &Cluster) -> i64 {
    canary_weight(&c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo")).unwrap_or(-1)
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    assert!(status.map(|s| s.success()).unwrap_or(false));
}

/// Waits for a child with a generous bound (a hang is a failure, not a wait).
fn wait_bounded(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output();
                panic!(
                    "aviary still ran after {limit:?}: {}",
                    out.map(|o| stderr(&o)).unwrap_or_default()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}"),
        }
    }
    let took = start.elapsed();
    match child.wait_with_output() {
        Ok(o) => (o, took),
        Err(e) => panic!("{e}"),
    }
}

/// `aviary <args> --kubeconfig ...` (status, abort, promote).
fn control(c: &Cluster, args: &[&str]) -> Output {
    let mut cmd = Command::new(aviary_bin());
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .env_remove("KUBECONFIG")
        .env_remove("AVIARY_LOG");
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

/// The images the Deployment `name` had, in order, consecutive repeats removed, each with the
/// resourceVersion it was stored at.
fn image_history(c: &Cluster, name: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for v in c.emu.history("apps/v1", "deployments", Some("test"), name) {
        let img = image(&v);
        let rv = rv(&v);
        if out.last().map(|(i, _)| i) != Some(&img) {
            out.push((img, rv));
        }
    }
    out
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The HTTPRoute's canary weights, consecutive repeats removed, with their resourceVersions.
fn route_history(c: &Cluster) -> Vec<(i64, u64)> {
    let mut out: Vec<(i64, u64)> = Vec::new();
    for v in c.emu.history(
        "gateway.networking.k8s.io/v1",
        "httproutes",
        Some("test"),
        "podinfo",
    ) {
        if let Some(w) = canary_weight(&v) {
            if out.last().map(|(x, _)| *x) != Some(w) {
                out.push((w, rv(&v)));
            }
        }
    }
    out
}

fn saved_engine(c: &Cluster) -> Value {
    let cm = c.get("v1", "configmaps", "podinfo-aviary");
    cm["data"]["engine.json"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn report(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Sets the HTTPRoute's weights by hand (as a run killed between its two writes leaves them).
fn set_route_weights(c: &Cluster, primary: i64, canary: i64) {
    let mut route = c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo");
    let Some(refs) = route["spec"]["rules"][0]["backendRefs"].as_array_mut() else {
        panic!("no backendRefs: {route}");
    };
    for r in refs.iter_mut() {
        r["weight"] = if r["name"] == "podinfo-canary" {
            canary.into()
        } else {
            primary.into()
        };
    }
    let rules = route["spec"]["rules"].clone();
    c.merge_patch(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "podinfo",
        serde_json::json!({"spec": {"rules": rules}}),
    );
}

fn always(method: Option<&str>, path_regex: &str, kind: FaultKind) -> Fault {
    Fault {
        method: method.map(str::to_string),
        path_regex: path_regex.into(),
        probability: 1.0,
        kind,
        seed: 1,
    }
}

const STEPS_TO_60: &str = "    maxWeight: 60\n    stepWeight: 20";

/// Item 6, the lease's side: writes of the Lease that fail with 503 are retried (a write whose
/// answer was lost counts as taken when the lease names this runner), so a flaky API server
/// does not stop a rollout before it starts.
#[test]
fn f06_lease_writes_that_fail_transiently_are_retried() {
    let gate = Gate::start(|_| Answer::Status(200));
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    // Seed 3 rolls 0.11 first: the first write of the Lease (taking it) gets the 503.
    c.emu.set_faults(vec![Fault {
        method: Some("PUT".into()),
        path_regex: "/leases".into(),
        probability: 0.5,
        kind: FaultKind::Status(503),
        seed: 3,
    }]);
    let out = c.run(&canary);
    c.emu.set_faults(Vec::new());
    let injected = c
        .emu
        .requests()
        .iter()
        .filter(|r| r.injected_fault && r.path.contains("/leases") && r.method != "GET")
        .count();
    assert!(injected >= 1, "no lease write met a fault");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
}

/// Item 6, the state's side: half the saves of the state ConfigMap are stored but their answer
/// is lost (504, as an API server answers a committed write it could not confirm in time). A
/// retried write then meets the resourceVersion it made itself (409); that is this runner's own
/// save, not another runner's, so the rollout goes on and promotes.
#[test]
fn f06_a_state_save_whose_answer_is_lost_is_not_another_runner() {
    let gate = Gate::start(|_| Answer::Status(200));
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    c.emu.set_faults(vec![Fault {
        method: Some("PUT".into()),
        path_regex: "/configmaps/podinfo-aviary$".into(),
        probability: 0.5,
        kind: FaultKind::AnswerLost,
        seed: 1,
    }]);
    let out = c.run(&canary);
    c.emu.set_faults(Vec::new());
    let lost = c
        .emu
        .requests()
        .iter()
        .filter(|r| r.injected_fault && r.method == "PUT")
        .count();
    assert!(lost >= 3, "only {lost} state saves lost their answer");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("another process"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
}

/// Item 2, during the promotion: the primary already runs the analysed revision and traffic
/// moves to it step by step; a signal then leaves both sides serving the analysed revision,
/// which is a clean cancel (130), and the next run finishes the promotion.
#[test]
fn f02_a_signal_during_the_promotion_is_a_clean_cancel() {
    let gate = Gate::start(|_| Answer::Status(200));
    let (c, canary) = bootstrapped(
        &gate,
        "    maxWeight: 60\n    stepWeight: 20\n    stepWeightPromotion: 10",
    );
    let (child, report_path) = spawn_reporting(&c, &canary);
    c.wait_for("the promotion", Duration::from_secs(60), |c| {
        saved_engine(c)["state"]["phase"] == "Promoting" && route_weight(c) < 60
    });
    kill(&child, "TERM");
    let (out, _) = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    let r = report(&report_path);
    assert_eq!(r["traffic"]["promoting"], true, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("both serve the analysed revision"),
        "{r}"
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(route_weight(&c), 0);
}

/// Item 1: a release applied to the target while the last analysis tick runs (its webhook held
/// at 60%) must not be promoted as if it had been analysed: the promotion finds another
/// revision than the analysed one, copies nothing, and the new revision is analysed from 0%.
#[test]
fn f01_a_new_image_during_the_last_analysis_tick_is_not_promoted() {
    // Rollout webhook calls: 1 at 20%, 2 at 40%, 3 at 60% (the last analysis), then the new
    // revision's 4, 5, 6.
    let gate = Gate::at(3, Answer::Hold);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let child = c.spawn(&canary, &[]);
    gate.wait_for_call(3, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 60, "the last analysis runs at 60%");
    c.apply_target("podinfo:3", 2);
    let applied_rv = c.emu.resource_version();
    gate.release();
    let (out, _) = wait_bounded(child, Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not promoting: the target changed"),
        "{}",
        stderr(&out)
    );
    let primary = image_history(&c, "podinfo-primary");
    let images: Vec<&str> = primary.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(
        images,
        ["podinfo:1", "podinfo:3"],
        "podinfo:2 was superseded"
    );
    // podinfo:3 reached the primary only after its own analysis went through 20, 40 and 60%.
    let promoted_at = primary[1].1;
    let after: Vec<i64> = route_history(&c)
        .into_iter()
        .filter(|(_, v)| *v > applied_rv && *v < promoted_at)
        .map(|(w, _)| w)
        .collect();
    assert_eq!(after, [0, 20, 40, 60], "{:?}", route_history(&c));
}

/// Item 2: SIGTERM while a webhook never answers (its own timeout is an hour) interrupts the
/// call, returns traffic and exits 130, without waiting for the tick to end.
#[test]
fn f02_sigterm_interrupts_a_webhook_that_never_answers() {
    let gate = Gate::at(2, Answer::Never);
    let c = cluster();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml("gatewayapi", &gate.url, STEPS_TO_60)
            .replace("        url: ", "        timeout: 1h\n        url: "),
    );
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    let child = c.spawn(&canary, &[]);
    gate.wait_for_call(2, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 40);
    kill(&child, "TERM");
    let (out, took) = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(route_weight(&c), 0);
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:1"
    );
}

/// Item 2, metrics side: a Prometheus that accepts the query and never answers.
#[test]
fn f02_sigterm_interrupts_a_metric_query_that_never_answers() {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let prometheus = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => panic!("{e}"),
    };
    let (tx, queried) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let _ = tx.send(());
            held.push(stream); // never answered, never closed
        }
    });
    let gate = Gate::start(|_| Answer::Status(200));
    let (c, canary) = bootstrapped(
        &gate,
        "    maxWeight: 60\n    stepWeight: 20\n    metrics:\n      - name: request-success-rate\n        thresholdRange: {min: 99}\n        interval: 1m",
    );
    let child = match c
        .aviary(&canary, &[])
        .args(["--prometheus-url", &prometheus])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    if queried.recv_timeout(Duration::from_secs(60)).is_err() {
        panic!("no metric query came");
    }
    kill(&child, "TERM");
    let (out, took) = wait_bounded(child, Duration::from_secs(40));
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(route_weight(&c), 0);
}

/// Item 3: `aviary abort` while the runner is dead (killed at 40%) rolls back itself instead
/// of saying a runner will act, and the next run of the same revision does not promote it.
#[test]
fn f03_abort_with_the_runner_dead_rolls_back_and_the_next_run_does_not_promote() {
    let (_gate, c, canary) = killed_at_40();
    let abort = control(&c, &["abort", "podinfo", "-n", "test", "--reason", "pager"]);
    assert_eq!(code(&abort), 0, "{}", stderr(&abort));
    assert!(
        stderr(&abort).contains("no runner is rolling out podinfo.test"),
        "{}",
        stderr(&abort)
    );
    assert_eq!(route_weight(&c), 0, "traffic is back on the primary");
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    assert_eq!(saved_engine(&c)["state"]["phase"], "Failed");
    assert!(
        c.get("v1", "configmaps", "podinfo-aviary")["metadata"]["annotations"]["aviary.dev/abort"]
            .is_null()
    );
    // The next pipeline run of this revision says it was rolled back; it does not promote it.
    let out = c.run(&canary);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:1"
    );
}

/// Item 3, with a live runner stuck in a tick (its webhook never answers): the abort does not
/// wait for the tick; the runner drops it, rolls back and exits 1, and `abort` says so.
#[test]
fn f03_abort_interrupts_a_tick_that_waits_on_a_webhook() {
    let gate = Gate::at(2, Answer::Never);
    let c = cluster();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml("gatewayapi", &gate.url, STEPS_TO_60)
            .replace("        url: ", "        timeout: 1h\n        url: "),
    );
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    let child = c.spawn(&canary, &[]);
    gate.wait_for_call(2, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 40);
    let abort = control(&c, &["abort", "podinfo", "-n", "test", "--reason", "pager"]);
    assert_eq!(code(&abort), 0, "{}", stderr(&abort));
    assert!(
        stderr(&abort).contains("the runner of podinfo.test rolled it back"),
        "{}",
        stderr(&abort)
    );
    let (out, _) = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(route_weight(&c), 0);
    assert_eq!(saved_engine(&c)["state"]["phase"], "Failed");
}

/// Item 3, the durable half: an abort request left with no runner (written, and the
/// command killed before it could act) is acted on by the next run of that revision.
#[test]
fn f03_an_abort_left_behind_is_acted_on_by_the_next_run() {
    let (_gate, c, canary) = killed_at_40();
    // What `aviary abort` writes, left there as if it had been killed right after.
    let revision = saved_engine(&c)["state"]["targetRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!revision.is_empty());
    let value = format!(r#"{{"reason":"left behind","revision":"{revision}"}}"#);
    c.merge_patch(
        "v1",
        "ConfigMap",
        "podinfo-aviary",
        serde_json::json!({"metadata": {"annotations": {"aviary.dev/abort": value}}}),
    );
    let out = c.run(&canary);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("left behind"), "{}", stderr(&out));
    assert_eq!(route_weight(&c), 0);
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:1"
    );
}

/// Item 18, the runner's half: a run killed between changing the route and saving its state
/// leaves the route ahead of the state; the next run puts the saved split back before its first
/// tick, so traffic never sits at a weight the analysis did not choose.
#[test]
fn f18_a_resumed_run_puts_the_saved_routes_back_first() {
    let (_gate, c, canary) = killed_at_40();
    assert_eq!(c.saved_weight(), 40);
    set_route_weights(&c, 40, 60);
    let patched = c.emu.resource_version();
    assert_eq!(route_weight(&c), 60);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("putting the saved routes back"),
        "{}",
        stderr(&out)
    );
    let after: Vec<i64> = route_history(&c)
        .into_iter()
        .filter(|(_, v)| *v > patched)
        .map(|(w, _)| w)
        .collect();
    assert_eq!(after, [40, 60, 0], "{:?}", route_history(&c));
}

/// Item 4: two rollouts with the same AVIARY_RUN_ID (two jobs of one workflow run) cannot both
/// drive the canary: the second is refused with exit 4 and changes nothing, and the first keeps
/// its lease and finishes alone.
#[test]
fn f04_two_rollouts_with_the_same_run_id_cannot_both_drive() {
    let gate = Gate::at(1, Answer::Hold);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let run = [("AVIARY_RUN_ID", "42")];
    let first = c.spawn(&canary, &run);
    gate.wait_for_call(1, Duration::from_secs(60));
    let holder = c.get("coordination.k8s.io/v1", "leases", "podinfo-aviary")["spec"]
        ["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(holder.starts_with("run:42"), "{holder}");
    let writes_before = c
        .emu
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/leases/"))
        .count();
    let second = match c.aviary(&canary, &run).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    assert!(
        stderr(&second).contains("is being rolled out by run:42"),
        "{}",
        stderr(&second)
    );
    let writes_after = c
        .emu
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/leases/"))
        .count();
    assert_eq!(writes_before, writes_after, "the refused run wrote nothing");
    assert_eq!(
        c.get("coordination.k8s.io/v1", "leases", "podinfo-aviary")["spec"]["holderIdentity"],
        Value::String(holder),
        "the refused run left the lease alone"
    );
    gate.release();
    let (out, _) = wait_bounded(first, Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(c.route_weights(), vec![0, 20, 40, 60, 0]);
}

/// Item 4b: a runner whose lease renewals keep failing stops before the lease expires (so no
/// other runner can take over while it drives), returns traffic, and exits 3 saying why.
#[test]
fn f04b_a_runner_that_cannot_renew_its_lease_returns_traffic_and_stops() {
    let gate = Gate::start(|_| Answer::Status(200));
    let (c, canary) = bootstrapped(&gate, "    maxWeight: 100\n    stepWeight: 1");
    let child = c.spawn(&canary, &[]);
    c.wait_for("weight 2", Duration::from_secs(60), |c| {
        route_weight(c) >= 2
    });
    c.emu
        .set_faults(vec![always(None, "/leases/", FaultKind::Status(503))]);
    let (out, _) = wait_bounded(child, Duration::from_secs(90));
    c.emu.set_faults(Vec::new());
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the lease could not be renewed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(route_weight(&c), 0, "traffic is back on the primary");
    assert!(route_weight(&c) == 0 && c.route_weights().iter().max() < Some(&100));
}

/// Item 5: `rollout --target` of a new release while another pipeline analyses one takes the
/// lease before it applies anything: refused with exit 4, the target never sees its image.
#[test]
fn f05_a_locked_rollout_of_a_target_changes_nothing() {
    let c = cluster_with(&["default", "dev", "prod", "test"]);
    let gate = Gate::at(1, Answer::Hold);
    let project = c.dir.join("project");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gatewayapi"),
        &project,
    );
    let canary = format!(
        "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
spec:
  provider: gatewayapi
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 9898
    gatewayRefs: [{{name: public, namespace: gateway-system}}]
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 50
    stepWeight: 25
    webhooks:
      - name: acceptance
        url: {}
",
        gate.url
    );
    if let Err(e) = std::fs::write(project.join("overlays/prod/canary.yaml"), canary) {
        panic!("{e}");
    }
    let rollout = |tag: &str| {
        let mut cmd = Command::new(aviary_bin());
        cmd.args([
            "rollout",
            "--target",
            "prod",
            "--images",
            &format!("ghcr.io/stefanprodan/podinfo=ghcr.io/stefanprodan/podinfo:{tag}"),
            "--timeout",
            "2m",
            "--kubeconfig",
        ])
        .arg(&c.kubeconfig)
        .current_dir(&project)
        .env_remove("KUBECONFIG")
        .env_remove("AVIARY_LOG")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("GITHUB_REPOSITORY");
        cmd
    };
    let out = rollout("6.6.0").output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first = match rollout("6.7.0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    gate.wait_for_call(1, Duration::from_secs(60));
    let second = match rollout("6.8.0").output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    let images: Vec<String> = c
        .emu
        .history("apps/v1", "deployments", Some("prod"), "podinfo")
        .iter()
        .map(image)
        .collect();
    assert!(
        !images.iter().any(|i| i.ends_with(":6.8.0")),
        "the locked run applied its image: {images:?}"
    );
    gate.release();
    let (out, _) = wait_bounded(first, Duration::from_secs(120));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        image(
            &c.emu
                .get("apps/v1", "deployments", Some("prod"), "podinfo-primary")
                .unwrap_or(Value::Null)
        ),
        "ghcr.io/stefanprodan/podinfo:6.7.0"
    );
}

/// Item 6: an API server that answers 503 to everything: `status` gives up within the retry
/// budget (exit 3) instead of retrying for half an hour.
#[test]
fn f06_status_gives_up_on_an_api_that_always_answers_503() {
    let c = cluster();
    c.emu
        .set_faults(vec![always(None, ".*", FaultKind::Status(503))]);
    let child = match Command::new(aviary_bin())
        .args(["status", "podinfo", "-n", "test", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let (out, _) = wait_bounded(child, Duration::from_secs(60));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
}

/// Item 6, with a signal: the API fails every request while a webhook holds the tick; SIGTERM
/// is honoured at once, and as traffic cannot be returned, the exit is 3 and the report says
/// where traffic was left.
#[test]
fn f06_sigterm_is_honoured_while_the_api_answers_503() {
    let gate = Gate::at(2, Answer::Never);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let (child, report_path) = spawn_reporting(&c, &canary);
    gate.wait_for_call(2, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 40);
    c.emu
        .set_faults(vec![always(None, ".*", FaultKind::Status(503))]);
    kill(&child, "TERM");
    let (out, _) = wait_bounded(child, Duration::from_secs(60));
    c.emu.set_faults(Vec::new());
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(route_weight(&c), 40, "the API refused every change");
    let r = report(&report_path);
    assert_eq!(r["traffic"]["canary"], 40, "{r}");
    assert_eq!(r["traffic"]["on_primary"], false, "{r}");
    assert!(
        stderr(&out).contains("traffic could not be returned to the primary"),
        "{}",
        stderr(&out)
    );
}

/// Item 10: the state ConfigMap cannot be saved (409 on every write) mid-analysis: the run
/// returns traffic to the primary before it exits 3.
#[test]
fn f10_a_state_that_cannot_be_saved_returns_traffic_before_exiting() {
    let gate = Gate::at(1, Answer::Hold);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let (child, report_path) = spawn_reporting(&c, &canary);
    gate.wait_for_call(1, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 20);
    c.emu.set_faults(vec![
        always(
            Some("PUT"),
            "/configmaps/podinfo-aviary$",
            FaultKind::Status(409),
        ),
        always(
            Some("PATCH"),
            "/configmaps/podinfo-aviary$",
            FaultKind::Status(409),
        ),
    ]);
    gate.release();
    let (out, _) = wait_bounded(child, Duration::from_secs(90));
    c.emu.set_faults(Vec::new());
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(route_weight(&c), 0, "traffic is back on the primary");
    let r = report(&report_path);
    assert_eq!(r["traffic"]["on_primary"], true, "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
}

/// Item 10, the route side: the route update keeps failing; the run gives up, and its report
/// and its last words say traffic was left split (and at what weights).
#[test]
fn f10_a_route_that_cannot_be_reset_is_reported_where_it_was_left() {
    let gate = Gate::at(1, Answer::Hold);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let (child, report_path) = spawn_reporting(&c, &canary);
    gate.wait_for_call(1, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 20);
    c.emu.set_faults(vec![
        always(Some("PATCH"), "/httproutes/", FaultKind::Status(503)),
        always(Some("PUT"), "/httproutes/", FaultKind::Status(503)),
    ]);
    gate.release();
    let (out, _) = wait_bounded(child, Duration::from_secs(120));
    c.emu.set_faults(Vec::new());
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(route_weight(&c), 20);
    let r = report(&report_path);
    assert_eq!(r["traffic"]["canary"], 20, "{r}");
    assert_eq!(r["traffic"]["on_primary"], false, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("traffic could not be returned to the primary"),
        "{r}"
    );
}

/// Issue 14 (post-entrypoint): the runner SIGKILLs the step's container (a job timeout, or a
/// cancel past its grace period) while the step holds a canary at 40%. The step had saved the
/// canary in `$GITHUB_STATE`; the post step, run with that state, rolls it back (the lease of
/// the dead run expires first). With the state cleared, as a step that ended leaves it, the post
/// step touches nothing, even with a rollout in progress.
#[test]
fn f03_the_post_step_rolls_back_a_canary_its_killed_step_left() {
    let gate = Gate::at(2, Answer::Hold);
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let mut child = match github_step(&c, &canary, false, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("{e}"),
    };
    gate.wait_for_call(2, Duration::from_secs(60));
    assert_eq!(route_weight(&c), 40);
    let saved = outputs(&read(&c.dir.join("runner/state")));
    assert_eq!(
        saved.get("aviary_rollout").map(String::as_str),
        Some("test/podinfo")
    );

    // The state a finished step leaves: nothing to do, the rollout in progress is not touched.
    let idle = match github_step(&c, &canary, true, &[("aviary_rollout", String::new())]).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&idle), 0, "{}", stderr(&idle));
    assert!(stderr(&idle).contains("nothing to do"), "{}", stderr(&idle));
    assert_eq!(route_weight(&c), 40);
    assert_eq!(saved_engine(&c)["state"]["phase"], "Progressing");

    let _ = child.kill();
    let _ = child.wait();
    gate.release();
    let saved = outputs(&read(&c.dir.join("runner/state")));
    let state = vec![(
        "aviary_rollout",
        saved.get("aviary_rollout").cloned().unwrap_or_default(),
    )];
    let post = match github_step(&c, &canary, true, &state).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&post), 0, "{}", stderr(&post));
    assert!(
        stdout(&post).contains(
            "::error title=aviary post::podinfo.test: the step ended before its rollout did"
        ),
        "{}",
        stdout(&post)
    );
    assert_eq!(route_weight(&c), 0, "traffic is back on the primary");
    assert_eq!(saved_engine(&c)["state"]["phase"], "Failed");
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:1"
    );
}

/// A step whose rollout ends (here promoted) clears the canary it saved for the post step.
#[test]
fn a_step_that_finishes_its_rollout_leaves_nothing_for_the_post_step() {
    let gate = Gate::start(|_| Answer::Status(200));
    let (c, canary) = bootstrapped(&gate, STEPS_TO_60);
    let out = match github_step(&c, &canary, false, &[]).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = read(&c.dir.join("runner/state"));
    assert!(text.contains("aviary_rollout=test/podinfo\n"), "{text}");
    assert_eq!(
        outputs(&text).get("aviary_rollout").map(String::as_str),
        Some(""),
        "{text}"
    );
}

/// A saved state that is not `namespace/name` (a hand-edited or foreign `STATE_aviary_rollout`):
/// the post step says what it got and what it expects, exit 2, and touches nothing.
#[test]
fn the_post_step_refuses_a_state_that_is_no_canary() {
    let c = cluster();
    let canary = c.dir.join("canary.yaml");
    let out = match github_step(&c, &canary, true, &[("aviary_rollout", "podinfo".into())]).output()
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("aviary_rollout=\"podinfo\" is not namespace/name"),
        "{}",
        stderr(&out)
    );
    assert!(c.get("v1", "configmaps", "podinfo-aviary").is_null());
}
