//! `aviary rollout` end to end: the real binary, through the real kube client, against the API
//! server emulator, with a real webhook server on loopback. Each test asserts the objects aviary
//! wrote at each step (weights, selectors, replicas, images), read back from the emulator.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::util::*;
use kube_emulator::{Fault, FaultKind};

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
    // The payload is the flagger-loadtester's: name, namespace, phase, checksum (the revision).
    let first: serde_json::Value = hook
        .bodies
        .lock()
        .ok()
        .and_then(|b| b.first().cloned())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    assert_eq!(first["name"], "podinfo");
    assert_eq!(first["namespace"], "test");
    assert_eq!(first["phase"], "Progressing");
    assert_eq!(
        first["checksum"].as_str().map(str::len),
        Some(16),
        "{first}"
    );

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

    // A bad revision: the webhook fails twice; the primary keeps the old template.
    c.apply_target("podinfo:3", 3);
    hook.set(500);
    let out = c.run(&canary);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );
    let apex = c.emu.history("v1", "services", Some("test"), "podinfo");
    assert!(apex
        .iter()
        .all(|s| s["spec"]["selector"]["app"] == "podinfo-primary"));
}

#[test]
fn sigterm_returns_traffic_and_exits_cancelled() {
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 100\n    stepWeight: 10");
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
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 100\n    stepWeight: 5");
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
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 60\n    stepWeight: 20");
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

#[test]
fn replica_ratio_splits_the_replicas() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "kubernetes:replicas",
            &hook.url,
            "    maxWeight: 75\n    stepWeight: 25",
        ),
    );
    c.apply_target("podinfo:1", 4);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The apex selects the label both workloads' pods carry.
    let apex = c.get("v1", "services", "podinfo");
    assert_eq!(apex["spec"]["selector"]["aviary.dev/service"], "podinfo");
    assert!(apex["spec"]["selector"].get("app").is_none());
    let primary = c.get("apps/v1", "deployments", "podinfo-primary");
    assert_eq!(
        primary["spec"]["template"]["metadata"]["labels"]["aviary.dev/service"],
        "podinfo"
    );

    c.apply_target("podinfo:2", 4);
    let out = c.run(&canary);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let replicas = |name: &str| -> Vec<i64> {
        let mut out: Vec<i64> = Vec::new();
        for v in c.emu.history("apps/v1", "deployments", Some("test"), name) {
            let r = v["spec"]["replicas"].as_i64().unwrap_or(-1);
            if out.last() != Some(&r) {
                out.push(r);
            }
        }
        out
    };
    // 25% → 1 of 4, 50% → 2, 75% → 3; the primary gives up as many, then takes all back.
    let canary_replicas = replicas("podinfo");
    assert!(
        canary_replicas.ends_with(&[4, 1, 2, 3, 0]),
        "canary replicas {canary_replicas:?}"
    );
    let primary_replicas = replicas("podinfo-primary");
    assert!(
        primary_replicas.ends_with(&[4, 3, 2, 1, 4]),
        "primary replicas {primary_replicas:?}"
    );
    // The canary's pods were behind the apex only while it had a weight.
    let labelled: Vec<bool> = c
        .emu
        .history("apps/v1", "deployments", Some("test"), "podinfo")
        .iter()
        .map(|d| d["spec"]["template"]["metadata"]["labels"]["aviary.dev/service"] == "podinfo")
        .collect();
    assert!(labelled.contains(&true));
    assert_eq!(labelled.last(), Some(&false));
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );

    // A bad revision: rolled back at 25% (1 of 4), the primary back to 4 replicas of podinfo:2.
    c.apply_target("podinfo:3", 4);
    hook.set(500);
    let out = c.run(&canary);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let canary_replicas = replicas("podinfo");
    assert!(
        canary_replicas.ends_with(&[0, 4, 1, 0]),
        "canary replicas {canary_replicas:?}"
    );
    let primary_replicas = replicas("podinfo-primary");
    assert!(
        primary_replicas.ends_with(&[4, 3, 4]),
        "primary replicas {primary_replicas:?}"
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    let last = c.get("apps/v1", "deployments", "podinfo");
    assert!(last["spec"]["template"]["metadata"]["labels"]["aviary.dev/service"].is_null());
}

/// The provider may come from `--provider` (Flagger's `-mesh-provider`) rather than the spec;
/// replica-ratio mode must follow it all the same.
#[test]
fn replica_ratio_from_the_provider_flag() {
    let c = cluster();
    let hook = Hook::start();
    let text = canary_yaml("kubernetes:replicas", &hook.url, "    stepWeight: 25")
        .replace("  provider: kubernetes:replicas\n", "");
    assert!(!text.contains("provider:"));
    let canary = c.write("canary.yaml", &text);
    c.apply_target("podinfo:1", 4);
    let out = c
        .aviary(&canary, &[])
        .args(["--provider", "kubernetes:replicas"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let apex = c.get("v1", "services", "podinfo");
    assert_eq!(apex["spec"]["selector"]["aviary.dev/service"], "podinfo");
}

#[test]
fn abort_and_status_talk_to_a_running_rollout() {
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 100\n    stepWeight: 10");
    let child = c.spawn(&canary, &[]);
    c.wait_for("a saved weight of 20", Duration::from_secs(30), |c| {
        c.saved_weight() >= 20
    });
    let control = |args: &[&str]| -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .env_remove("KUBECONFIG");
        match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    };
    let status = control(&["status", "podinfo", "-n", "test", "--json"]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    assert_eq!(s["phase"], "Progressing");
    assert!(s["canary_weight"].as_i64().unwrap_or(0) >= 20);
    assert!(s["runner"].as_str().unwrap_or("").contains("pid-"), "{s}");

    let abort = control(&["abort", "podinfo", "-n", "test", "--reason", "smoke alarm"]);
    assert_eq!(code(&abort), 0, "{}", stderr(&abort));
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Rolling back podinfo.test abort requested: smoke alarm"),
        "{}",
        stderr(&out)
    );
    let route = c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo");
    assert_eq!(canary_weight(&route), Some(0));
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        0
    );

    // `status` after the run: Failed, nobody running. `abort` on an unknown canary: a clear error.
    let status = control(&["status", "podinfo", "-n", "test"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("phase          Failed"), "{text}");
    assert!(text.contains("runner         none running"), "{text}");
    // The last events aviary recorded in the cluster, the rollback's Warnings among them.
    assert!(text.contains("  events         (the last "), "{text}");
    assert!(
        text.lines().any(|l| l.contains("Warning")
            && l.contains("Rolling back podinfo.test abort requested: smoke alarm")),
        "{text}"
    );
    let missing = control(&["abort", "nosuch", "-n", "test"]);
    assert_ne!(code(&missing), 0);
    assert!(
        stderr(&missing).contains("no rollout of canary nosuch.test was found"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn promote_opens_a_closed_gate() {
    let c = cluster();
    let hook = Hook::start();
    let gate = Hook::start();
    gate.set(403); // the gate stays closed on its own
    let text = canary_yaml(
        "gatewayapi",
        &hook.url,
        "    maxWeight: 40\n    stepWeight: 20",
    ) + &format!(
        "      - name: approve\n        type: confirm-promotion\n        url: {}\n",
        gate.url
    );
    let canary = c.write("canary.yaml", &text);
    c.apply_target("podinfo:1", 2);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 2);
    let child = c.spawn(&canary, &[]);
    c.wait_for("WaitingPromotion", Duration::from_secs(30), |c| {
        let cm = c.get("v1", "configmaps", "podinfo-aviary");
        cm["data"]["engine.json"]
            .as_str()
            .is_some_and(|t| t.contains("\"phase\":\"WaitingPromotion\""))
    });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
    cmd.args(["promote", "podinfo", "-n", "test", "--kubeconfig"])
        .arg(&c.kubeconfig);
    let promote = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&promote), 0, "{}", stderr(&promote));
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gates opened by `aviary promote`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    assert!(gate.calls.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_primary_that_breaks_after_promotion_does_not_get_the_traffic() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml(
            "gatewayapi",
            &hook.url,
            "    maxWeight: 40\n    stepWeight: 20",
        ),
    );
    let target = |image: &str| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "replicas": 2,
                "progressDeadlineSeconds": 2,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"labels": {"app": "podinfo"}},
                             "spec": {"containers": [{"name": "podinfo", "image": image}]}}
            }
        })
    };
    if let Err(e) = c.emu.insert(target("podinfo:1")) {
        panic!("{e}");
    }
    assert_eq!(code(&c.run(&canary)), 0);
    // Rollouts now take a while to report, so the test can break the primary right after the
    // canary's template was copied to it, before it becomes ready.
    c.emu.set_ready_delay(Duration::from_millis(1500));
    c.kubectl_apply(&target("podinfo:2"));
    let child = c.spawn(&canary, &[]);
    c.wait_for("Promoting", Duration::from_secs(60), |c| {
        let cm = c.get("v1", "configmaps", "podinfo-aviary");
        cm["data"]["engine.json"]
            .as_str()
            .is_some_and(|t| t.contains("\"phase\":\"Promoting\""))
    });
    c.emu.set_never_ready("test", "podinfo-primary", true);
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "Promotion of podinfo.test failed, primary not ready: podinfo-primary.test not ready: "
        ),
        "{}",
        stderr(&out)
    );
    let route = c.get("gateway.networking.k8s.io/v1", "httproutes", "podinfo");
    assert_eq!(
        canary_weight(&route),
        Some(100),
        "traffic stays on the healthy canary"
    );
    assert_eq!(
        c.get("apps/v1", "deployments", "podinfo")["spec"]["replicas"],
        2
    );
}

#[test]
fn a_new_revision_during_the_analysis_restarts_it() {
    let (c, _hook, canary) =
        with_new_revision("gatewayapi", "    maxWeight: 60\n    stepWeight: 20");
    let child = c.spawn(&canary, &[]);
    c.wait_for("a saved weight of 40", Duration::from_secs(30), |c| {
        c.saved_weight() >= 40
    });
    c.apply_target("podinfo:3", 2);
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("New revision detected! Restarting analysis for podinfo.test"),
        "{}",
        stderr(&out)
    );
    let weights = c.route_weights();
    let restart = weights.iter().skip(2).position(|w| *w == 0).map(|i| i + 2);
    assert!(
        restart.is_some_and(|i| weights[i..].starts_with(&[0, 20, 40, 60, 0])),
        "traffic went back to the primary and the analysis started over: {weights:?}"
    );
    assert_eq!(
        image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:3"
    );
}

#[test]
fn json_logs_carry_the_canary_revision_and_tick_of_each_event() {
    let c = cluster();
    let hook = Hook::start();
    let canary = c.write(
        "canary.yaml",
        &canary_yaml("kubernetes", &hook.url, "    iterations: 2"),
    );
    c.apply_target("podinfo:1", 1);
    assert_eq!(code(&c.run(&canary)), 0);
    c.apply_target("podinfo:2", 1);
    let out = match c
        .aviary(&canary, &[])
        .args(["--log-format", "json"])
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("aviary: {e}"),
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!events.is_empty(), "{}", stderr(&out));
    // Every event of the run names its canary and namespace; once the revision is read, it too.
    let in_rollout: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["spans"].as_array().is_some_and(|s| !s.is_empty()))
        .collect();
    assert!(!in_rollout.is_empty(), "{}", stderr(&out));
    for e in &in_rollout {
        assert_eq!(e["spans"][0]["name"], "rollout", "{e}");
        assert_eq!(e["spans"][0]["canary"], "podinfo", "{e}");
        assert_eq!(e["spans"][0]["namespace"], "test", "{e}");
    }
    assert!(
        in_rollout.iter().any(|e| e["spans"][0]["revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty())),
        "{}",
        stderr(&out)
    );
    // Events of a tick carry its number and the phase it began in.
    assert!(
        events.iter().any(|e| e["span"]["name"] == "tick"
            && e["span"]["n"].as_u64().is_some_and(|n| n >= 1)
            && e["span"]["phase"].is_string()),
        "{}",
        stderr(&out)
    );
}
