//! `aviary deploy --target dev` and `aviary rollout --target prod` on the example repositories:
//! the real Kustomize renders, the real binary applies through the real kube client, and the
//! emulator's Deployment controller rolls the workloads out (or, told to, never does).

use std::path::Path;
use std::process::{Command, Output};

use crate::util::*;

fn aviary(c: &Cluster, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .current_dir(dir)
        .env_remove("KUBECONFIG")
        .env_remove("AVIARY_LOG")
        .env_remove("GITHUB_RUN_ID")
        .env_remove("GITHUB_REPOSITORY");
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn get(c: &Cluster, api: &str, plural: &str, ns: &str, name: &str) -> serde_json::Value {
    c.emu
        .get(api, plural, Some(ns), name)
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn deploy_dev_applies_the_overlay_and_waits_for_it() {
    let c = cluster_with(&["default", "dev", "test"]);
    let out = aviary(
        &c,
        &example("istio"),
        &["deploy", "--target", "dev", "--timeout", "30s"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Deployment dev/podinfo rolled out"),
        "{}",
        stderr(&out)
    );
    let dep = get(&c, "apps/v1", "deployments", "dev", "podinfo");
    assert_eq!(dep["spec"]["replicas"], 1, "the dev overlay's patch");
    assert_eq!(
        dep["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "aviary"
    );
    assert_eq!(dep["metadata"]["labels"]["aviary.dev/target"], "dev");
    let cm_name = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]
        ["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cm_name.starts_with("podinfo-settings-"), "{cm_name}");
    assert_eq!(
        get(&c, "v1", "configmaps", "dev", &cm_name)["data"]["PODINFO_UI_MESSAGE"],
        "hello from podinfo"
    );
    assert_eq!(
        get(&c, "v1", "services", "dev", "podinfo")["spec"]["selector"]["app"],
        "podinfo"
    );
    assert!(!get(
        &c,
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "dev",
        "podinfo"
    )
    .is_null());
    // No canary in dev: nothing of the canary machinery was created.
    assert!(get(&c, "apps/v1", "deployments", "dev", "podinfo-primary").is_null());
}

#[test]
fn deploy_reports_why_a_workload_does_not_roll_out() {
    let c = cluster_with(&["default", "dev", "test"]);
    c.emu.set_never_ready("dev", "podinfo", true);
    let out = aviary(
        &c,
        &example("gatewayapi"),
        &["deploy", "--target", "dev", "--timeout", "3s"],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Deployment dev/podinfo did not roll out"),
        "{err}"
    );
    assert!(
        err.contains("CrashLoopBackOff"),
        "the failing container's state: {err}"
    );
}

#[test]
fn prune_removes_what_is_no_longer_rendered() {
    let c = cluster_with(&["default", "dev", "test"]);
    let project = c.dir.join("project");
    copy_tree(&example("istio"), &project);
    let out = aviary(
        &c,
        &project,
        &["deploy", "--target", "dev", "--timeout", "30s"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!get(
        &c,
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "dev",
        "podinfo"
    )
    .is_null());

    // The HPA leaves the base.
    let kustomization = project.join("base/kustomization.yaml");
    let text = std::fs::read_to_string(&kustomization).unwrap_or_default();
    if let Err(e) = std::fs::write(&kustomization, text.replace("  - hpa.yaml\n", "")) {
        panic!("{e}");
    }
    let out = aviary(
        &c,
        &project,
        &["deploy", "--target", "dev", "--timeout", "30s"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !get(
            &c,
            "autoscaling/v2",
            "horizontalpodautoscalers",
            "dev",
            "podinfo"
        )
        .is_null(),
        "without --prune nothing is deleted"
    );
    let out = aviary(
        &c,
        &project,
        &["deploy", "--target", "dev", "--timeout", "30s", "--prune"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pruned HorizontalPodAutoscaler dev/podinfo"),
        "{}",
        stderr(&out)
    );
    assert!(get(
        &c,
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "dev",
        "podinfo"
    )
    .is_null());
    assert!(!get(&c, "apps/v1", "deployments", "dev", "podinfo").is_null());
}

#[test]
fn rollout_target_prod_bootstraps_then_analyses_a_new_image() {
    let c = cluster_with(&["default", "dev", "prod", "test"]);
    let hook = Hook::start();
    let project = c.dir.join("project");
    copy_tree(&example("gatewayapi"), &project);
    // The example's canary analyses Prometheus metrics, which arrive in a later issue; this one
    // judges the release by a webhook.
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
        hook.url
    );
    if let Err(e) = std::fs::write(project.join("overlays/prod/canary.yaml"), canary) {
        panic!("{e}");
    }
    let rollout = |image: &str| {
        aviary(
            &c,
            &project,
            &[
                "rollout",
                "--target",
                "prod",
                "--images",
                &format!("ghcr.io/stefanprodan/podinfo=ghcr.io/stefanprodan/podinfo:{image}"),
                "--timeout",
                "2m",
            ],
        )
    };
    let out = rollout("6.6.0");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("bootstrapped"), "{}", stderr(&out));
    let primary = get(&c, "apps/v1", "deployments", "prod", "podinfo-primary");
    assert_eq!(image(&primary), "ghcr.io/stefanprodan/podinfo:6.6.0");
    // The Canary itself is never applied to the cluster.
    assert!(c
        .emu
        .list("flagger.app/v1beta1", "canaries", Some("prod"))
        .is_empty());

    let out = rollout("6.7.0");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("verdict: promoted"),
        "{}",
        stderr(&out)
    );
    let primary = get(&c, "apps/v1", "deployments", "prod", "podinfo-primary");
    assert_eq!(image(&primary), "ghcr.io/stefanprodan/podinfo:6.7.0");
    assert_eq!(
        get(&c, "apps/v1", "deployments", "prod", "podinfo")["spec"]["replicas"],
        0
    );

    // The same image again: nothing to analyse, and the canary stays scaled down.
    let out = rollout("6.7.0");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        get(&c, "apps/v1", "deployments", "prod", "podinfo")["spec"]["replicas"],
        0
    );
}

/// Every example's prod target, as shipped, renders, applies and bootstraps its primary (the
/// first rollout of a target analyses nothing, so the examples' metrics are not needed yet).
#[test]
fn every_example_prod_target_bootstraps() {
    for (name, ns) in [
        ("gatewayapi", "prod"),
        ("cloud-deploy", "prod"),
        ("istio", "test"),
        ("gloo-canary", "test"),
        ("gloo-ab", "test"),
        ("kubernetes", "prod"),
    ] {
        let c = cluster_with(&["default", "dev", "prod", "test"]);
        let out = aviary(
            &c,
            &example(name),
            &["rollout", "--target", "prod", "--timeout", "1m"],
        );
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("bootstrapped"),
            "{name}: {}",
            stderr(&out)
        );
        let primary = get(&c, "apps/v1", "deployments", ns, "podinfo-primary");
        assert_eq!(
            image(&primary),
            "ghcr.io/stefanprodan/podinfo:6.5.0",
            "{name}"
        );
        assert_eq!(
            get(&c, "apps/v1", "deployments", ns, "podinfo")["spec"]["replicas"],
            0,
            "{name}"
        );
        let apex = get(&c, "v1", "services", ns, "podinfo");
        assert!(!apex.is_null(), "{name}: the apex Service");
    }
}
