//! A release of several canaries in one run (every Canary of the file), against the API
//! emulator: a canary whose revision did not change is left alone, the verdict policies
//! (all-or-nothing, independent), a Lease held on one canary of three (exit 4, nothing
//! changed), SIGTERM (every canary's traffic back on its primary), and the GitHub post step of a
//! killed release (every canary rolled back).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// The Deployment `name` in namespace `test`, serving `image`.
fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "test", "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image,
                    "ports": [{"containerPort": 9898, "name": "http"}]}]}
            }
        }
    })
}

/// Creates or updates the Deployment `name`, as `kubectl apply` would.
fn put(c: &Cluster, name: &str, image: &str) {
    let dep = deployment(name, image);
    if c.emu
        .get("apps/v1", "deployments", Some("test"), name)
        .is_none()
    {
        if let Err(e) = c.emu.insert(dep) {
            panic!("{e}");
        }
        return;
    }
    let name = name.to_string();
    c.with_client("apply", |client| async move {
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client, "test");
        let params = kube::api::PatchParams::apply("kubectl").force();
        api.patch(&name, &params, &kube::api::Patch::Apply(&dep))
            .await
            .map(|_| ())
    })
}

/// One Canary per `(name, webhook URL, analysis lines)`, in one file.
fn canaries(specs: &[(&str, &str, &str)]) -> String {
    specs
        .iter()
        .map(|(name, hook, analysis)| {
            format!(
                "apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: {name}
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  progressDeadlineSeconds: 30
  service:
    port: 9898
    gatewayRefs: [{{name: public, namespace: gateway-system}}]
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
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

const QUICK: &str = "    maxWeight: 50\n    stepWeight: 25";

/// The canary backend's weight in the HTTPRoute of `name`, now.
fn weight(c: &Cluster, name: &str) -> i64 {
    let route = c.get("gateway.networking.k8s.io/v1", "httproutes", name);
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == format!("{name}-canary")))
        .and_then(|b| b["weight"].as_i64())
        .unwrap_or(0)
}

/// Every canary weight the HTTPRoute of `name` ever had.
fn weights(c: &Cluster, name: &str) -> Vec<i64> {
    c.emu
        .history(
            "gateway.networking.k8s.io/v1",
            "httproutes",
            Some("test"),
            name,
        )
        .iter()
        .filter_map(|r| {
            r["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["name"] == format!("{name}-canary")))
                .and_then(|b| b["weight"].as_i64())
        })
        .collect()
}

fn primary_image(c: &Cluster, name: &str) -> String {
    image(&c.get("apps/v1", "deployments", &format!("{name}-primary")))
}

/// The phase aviary saved for the canary `name`.
fn saved_phase(c: &Cluster, name: &str) -> String {
    let cm = c.get("v1", "configmaps", &format!("{name}-aviary"));
    let engine: Value = cm["data"]["engine.json"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    engine["state"]["phase"].as_str().unwrap_or("").to_string()
}

/// A cluster where the canaries of `specs` bootstrapped their primaries from `:1` in one run,
/// and the Canary file.
fn bootstrapped(specs: &[(&str, &str, &str)]) -> (Cluster, PathBuf) {
    let c = cluster();
    for (name, _, _) in specs {
        put(&c, name, &format!("{name}:1"));
    }
    let file = c.write("canaries.yaml", &canaries(specs));
    let out = c.run(&file);
    assert_eq!(code(&out), 0, "bootstrap: {}", stderr(&out));
    for (name, _, _) in specs {
        assert_eq!(primary_image(&c, name), format!("{name}:1"));
    }
    (c, file)
}

/// Three canaries (api, podinfo, web) with `analysis`, all calling `hook`, bootstrapped from
/// `:1`, with `:2` applied to each: a release of three changed services, ready to run.
fn three_changed(hook: &str, analysis: &str) -> (Cluster, PathBuf) {
    let (c, file) = bootstrapped(&[
        ("api", hook, analysis),
        ("podinfo", hook, analysis),
        ("web", hook, analysis),
    ]);
    for name in ["api", "podinfo", "web"] {
        put(&c, name, &format!("{name}:2"));
    }
    (c, file)
}

/// Waits until every canary of [`three_changed`] serves at least `w`%.
fn wait_all_serving(c: &Cluster, w: i64) {
    c.wait_for("every canary serving", Duration::from_secs(90), |c| {
        ["api", "podinfo", "web"].iter().all(|n| weight(c, n) >= w)
    });
}

/// Runs the release of `file` with these extra flags; its output and JSON report.
fn release(c: &Cluster, file: &std::path::Path, flags: &[&str]) -> (std::process::Output, Value) {
    let report = c.dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let out = match c
        .aviary(file, &[])
        .arg("--report")
        .arg(&report)
        .args(flags)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let json = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (out, json)
}

/// The verdict of the canary `name` in a release's report.
fn verdict_of(report: &Value, name: &str) -> String {
    report["canaries"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|r| r["canary"] == format!("{name}.test"))
                .and_then(|r| r["verdict"].as_str())
        })
        .unwrap_or("")
        .to_string()
}

/// The release of `file` in the background, its log in a file (a pipe nobody reads could fill
/// and stall it).
fn spawn(c: &Cluster, file: &Path, flags: &[&str]) -> (Child, PathBuf) {
    let log = c.dir.join("release.log");
    let err = match std::fs::File::create(&log) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    match c
        .aviary(file, &[])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
    {
        Ok(child) => (child, log),
        Err(e) => panic!("{e}"),
    }
}

/// Waits for a background release (a hang past `limit` fails the test): its exit code and log.
fn wait_bounded(mut child: Child, log: &Path, limit: Duration) -> (i32, String) {
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("aviary still ran after {limit:?}: {}", read(log));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}"),
        }
    };
    (status.code().unwrap_or(-1), read(log))
}

#[test]
fn a_canary_whose_revision_did_not_change_is_left_alone() {
    let hook = Hook::start();
    let (c, file) = bootstrapped(&[("backend", &hook.url, QUICK), ("podinfo", &hook.url, QUICK)]);
    put(&c, "podinfo", "podinfo:2");
    let (out, report) = release(&c, &file, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Each canary's lines say which canary they are about.
    assert!(
        stderr(&out).contains("canary{name=podinfo.test}: Advance podinfo.test canary weight 25"),
        "{}",
        stderr(&out)
    );
    assert_eq!(report["verdict"], "promoted", "{report}");
    assert_eq!(report["policy"], "all-or-nothing");
    assert_eq!(verdict_of(&report, "podinfo"), "promoted", "{report}");
    assert_eq!(verdict_of(&report, "backend"), "up_to_date", "{report}");
    assert_eq!(primary_image(&c, "podinfo"), "podinfo:2");
    assert_eq!(primary_image(&c, "backend"), "backend:1");
    // The unchanged canary's traffic never moved, and its gate did not hold the other.
    assert!(
        weights(&c, "backend").iter().all(|w| *w == 0),
        "{:?}",
        weights(&c, "backend")
    );
    assert!(weights(&c, "podinfo").contains(&50));
}

#[test]
fn all_or_nothing_holds_the_passed_canaries_and_rolls_them_back_with_the_failed_one() {
    let good = Hook::start();
    let late = Hook::start();
    // `api` analyses slowly (25 steps); `podinfo` and `web` pass in two and wait for it.
    let slow = "    maxWeight: 50\n    stepWeight: 2";
    let (c, file) = bootstrapped(&[
        ("api", &late.url, slow),
        ("podinfo", &good.url, QUICK),
        ("web", &good.url, QUICK),
    ]);
    for name in ["api", "podinfo", "web"] {
        put(&c, name, &format!("{name}:2"));
    }
    let report_path = c.dir.join("report.json");
    let report_flag = report_path.display().to_string();
    let (child, log) = spawn(&c, &file, &["--report", &report_flag]);
    c.wait_for(
        "podinfo and web at the release gate",
        Duration::from_secs(90),
        |c| {
            saved_phase(c, "podinfo") == "WaitingPromotion"
                && saved_phase(c, "web") == "WaitingPromotion"
        },
    );
    // Passed, and still not promoted: the release waits for api.
    assert_eq!(primary_image(&c, "podinfo"), "podinfo:1");
    assert_eq!(weight(&c, "podinfo"), 50);
    late.set(500);
    let (code, log) = wait_bounded(child, &log, Duration::from_secs(120));
    assert_eq!(code, 1, "{log}");
    let report: Value = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert_eq!(report["verdict"], "rolled_back", "{report}");
    for name in ["api", "podinfo", "web"] {
        assert_eq!(verdict_of(&report, name), "rolled_back", "{name}: {report}");
        assert_eq!(weight(&c, name), 0, "{name}'s traffic is on its primary");
        assert_eq!(primary_image(&c, name), format!("{name}:1"), "{name}");
    }
    let text = report.to_string();
    assert!(
        text.contains("rolled back with the release: api.test failed"),
        "{report}"
    );
}

#[test]
fn independent_canaries_keep_their_own_verdicts_and_the_release_takes_the_worst() {
    let good = Hook::start();
    let bad = Hook::start();
    bad.set(500);
    let (c, file) = bootstrapped(&[
        ("api", &bad.url, QUICK),
        ("podinfo", &good.url, QUICK),
        ("web", &good.url, QUICK),
    ]);
    // The bootstrap runs no webhook; from here on api's fails.
    for name in ["api", "podinfo", "web"] {
        put(&c, name, &format!("{name}:2"));
    }
    let (out, report) = release(&c, &file, &["--verdict-policy", "independent"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(report["verdict"], "rolled_back", "{report}");
    assert_eq!(report["policy"], "independent");
    assert_eq!(verdict_of(&report, "api"), "rolled_back", "{report}");
    assert_eq!(verdict_of(&report, "podinfo"), "promoted", "{report}");
    assert_eq!(verdict_of(&report, "web"), "promoted", "{report}");
    assert_eq!(primary_image(&c, "api"), "api:1");
    assert_eq!(primary_image(&c, "podinfo"), "podinfo:2");
    assert_eq!(primary_image(&c, "web"), "web:2");
    assert!(
        report["failed_metrics"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "api.test/acceptance")),
        "{report}"
    );
}

#[test]
fn a_lease_held_on_one_canary_of_three_refuses_the_release_and_changes_nothing() {
    let hook = Hook::start();
    let (c, file) = three_changed(&hook.url, QUICK);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "podinfo-aviary", "namespace": "test"},
        "spec": {"holderIdentity": "run:elsewhere", "leaseDurationSeconds": 3600,
                 "acquireTime": "2099-01-01T00:00:00.000000Z",
                 "renewTime": "2099-01-01T00:00:00.000000Z"}
    });
    if c.emu
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some("test"),
            "podinfo-aviary",
        )
        .is_some()
    {
        if let Err(e) = c.emu.delete(
            "coordination.k8s.io/v1",
            "leases",
            Some("test"),
            "podinfo-aviary",
        ) {
            panic!("{e}");
        }
    }
    if let Err(e) = c.emu.insert(lease) {
        panic!("{e}");
    }
    let writes = |c: &Cluster| {
        c.emu
            .requests()
            .iter()
            .filter(|r| r.method != "GET" && !r.path.contains("/leases/"))
            .count()
    };
    let before = writes(&c);
    let (out, _) = release(&c, &file, &[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("canary podinfo.test is being rolled out by run:elsewhere"),
        "{}",
        stderr(&out)
    );
    assert_eq!(writes(&c), before, "the refused release wrote nothing");
    for name in ["api", "web"] {
        assert!(weights(&c, name).iter().all(|w| *w == 0), "{name}");
        assert_eq!(primary_image(&c, name), format!("{name}:1"));
        // The Leases it took on the way are given back.
        let lease = c.get(
            "coordination.k8s.io/v1",
            "leases",
            &format!("{name}-aviary"),
        );
        let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or("");
        assert!(
            lease.is_null() || holder.is_empty(),
            "{name}'s lease is still held: {lease}"
        );
    }
    assert_eq!(
        c.get("coordination.k8s.io/v1", "leases", "podinfo-aviary")["spec"]["holderIdentity"],
        "run:elsewhere"
    );
}

#[test]
fn sigterm_during_a_release_returns_every_canarys_traffic_to_its_primary() {
    let hook = Hook::start();
    let long = "    maxWeight: 50\n    stepWeight: 5";
    let (c, file) = three_changed(&hook.url, long);
    let (child, log) = spawn(&c, &file, &[]);
    wait_all_serving(&c, 5);
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(sent.map(|s| s.success()).unwrap_or(false));
    let (code, log) = wait_bounded(child, &log, Duration::from_secs(60));
    assert_eq!(code, 130, "{log}");
    for name in ["api", "podinfo", "web"] {
        assert_eq!(weight(&c, name), 0, "{name}'s traffic is on its primary");
        assert_eq!(primary_image(&c, name), format!("{name}:1"));
    }
}

/// `aviary abort` of one canary of a running release is acted on (the release's shared reader
/// of control requests sees it), and under all-or-nothing the others follow it back; the
/// release read those requests with a few LISTs, not one GET per canary twice a second.
#[test]
fn an_abort_of_one_canary_of_a_release_rolls_the_release_back() {
    let hook = Hook::start();
    let long = "    maxWeight: 50\n    stepWeight: 5";
    let (c, file) = three_changed(&hook.url, long);
    let started = c.emu.requests().len();
    let (child, log) = spawn(&c, &file, &[]);
    wait_all_serving(&c, 10);
    let abort = match Command::new(aviary_bin())
        .args(["abort", "web", "-n", "test", "--reason", "bad smell"])
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .env_remove("KUBECONFIG")
        .env_remove("AVIARY_LOG")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&abort), 0, "{}", stderr(&abort));
    let (code, log) = wait_bounded(child, &log, Duration::from_secs(90));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("bad smell"), "{log}");
    assert!(
        log.contains("rolled back with the release: web.test failed (aborted: bad smell)"),
        "{log}"
    );
    for name in ["api", "podinfo", "web"] {
        assert_eq!(weight(&c, name), 0, "{name}'s traffic is on its primary");
        assert_eq!(primary_image(&c, name), format!("{name}:1"));
    }
    let requests = c.emu.requests();
    let during = &requests[started.min(requests.len())..];
    let lists = during
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/configmaps"))
        .count();
    let gets = during
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/configmaps/api-aviary"))
        .count();
    assert!(lists >= 4, "{lists} LISTs of the state ConfigMaps");
    // api read its own state once, when its run began (a save reads it only on a conflict),
    // not once per poll.
    let writes = during
        .iter()
        .filter(|r| r.method != "GET" && r.path.ends_with("/configmaps/api-aviary"))
        .count();
    assert!(
        gets <= 2 && writes >= 3,
        "api's state was read {gets} times on its own ({writes} writes) beside {lists} shared LISTs"
    );
}

/// The GitHub step of a release saves every canary of it for the action's post step; when the
/// step is killed mid-release (a job timeout, a cancel past the runner's grace period), the post
/// step rolls each of them back to its primary.
#[test]
fn the_post_step_rolls_back_every_canary_of_a_killed_release() {
    let hook = Hook::start();
    let long = "    maxWeight: 50\n    stepWeight: 5";
    let (c, file) = three_changed(&hook.url, long);
    let mut child = match github_step(&c, &file, false, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("{e}"),
    };
    wait_all_serving(&c, 5);
    let saved = outputs(&read(&c.dir.join("runner/state")));
    let held = saved.get("aviary_rollout").cloned().unwrap_or_default();
    assert_eq!(held, "test/api,test/podinfo,test/web");
    let _ = child.kill();
    let _ = child.wait();
    for name in ["api", "podinfo", "web"] {
        assert!(weight(&c, name) > 0, "{name} was left serving");
    }

    let post = match github_step(&c, &file, true, &[("aviary_rollout", held)]).output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&post), 0, "{}", stderr(&post));
    for name in ["api", "podinfo", "web"] {
        assert!(
            stdout(&post).contains(&format!(
                "::error title=aviary post::{name}.test: the step ended before its rollout did"
            )),
            "{}",
            stdout(&post)
        );
        assert_eq!(weight(&c, name), 0, "{name}'s traffic is on its primary");
        assert_eq!(saved_phase(&c, name), "Failed");
        assert_eq!(primary_image(&c, name), format!("{name}:1"));
    }
}

/// In a terminal (here a pseudo-terminal from `script`), a release draws one live line per
/// canary under its log: name, weight bar and percentage, phase and failed checks, left on the
/// screen as each canary ended. Piped (CI logs, every other test here) there is no such line.
#[test]
fn a_release_in_a_terminal_draws_a_live_line_per_canary() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` is needed: apt-get install -y bsdutils");
    }
    let hook = Hook::start();
    let (c, file) = three_changed(&hook.url, QUICK);
    let typescript = c.dir.join("typescript");
    let line = format!(
        "'{}' rollout -f '{}' --kubeconfig '{}' --request-timeout 2s --timeout 5m",
        aviary_bin().display(),
        file.display(),
        c.kubeconfig.display()
    );
    let out = match Command::new("script")
        .args(["-qec", &line])
        .arg(&typescript)
        .env_remove("CI")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("AVIARY_LOG")
        .env_remove("KUBECONFIG")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let screen = read(&typescript);
    assert!(out.status.success(), "{screen}");
    for name in ["api", "podinfo", "web"] {
        // A line drawn while the canary was at 25% (QUICK: 25, 50), and its last one.
        assert!(
            screen.contains(&format!("{name}.test ")) && screen.contains("▏ 25%  Progressing"),
            "no live line for {name}: {screen}"
        );
        assert!(
            screen.lines().any(|l| l.contains(&format!("{name}.test "))
                && l.contains("Succeeded · failed checks 0")),
            "{name}'s line does not end at Succeeded: {screen}"
        );
    }
    // The same release piped draws none.
    for name in ["api", "podinfo", "web"] {
        put(&c, name, &format!("{name}:3"));
    }
    let (piped, _) = release(&c, &file, &[]);
    assert_eq!(code(&piped), 0, "{}", stderr(&piped));
    assert!(!stderr(&piped).contains('▕'), "{}", stderr(&piped));
}
