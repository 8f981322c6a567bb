//! Contract tests of the pipeline hosts: the real binary runs with each host's environment and
//! files laid out as the host lays them out, and the tests read back what the host would read:
//! GitHub's `$GITHUB_OUTPUT`, step summary, workflow commands and Deployment API calls; Tekton's
//! result files; Cloud Deploy's `results.json` in a real (local) GCS server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{code, outputs, read, stderr, stdout, tempdir, Cluster, Hook};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with a clean environment: no host variables leak in from the machine running the
/// tests (CI may itself be a GitHub runner).
fn aviary(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(crate::util::aviary_bin());
    cmd.args(args).env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    }
}

/// GitHub's file commands and defaults for a Docker action, in `dir`.
fn github_env(dir: &Path, inputs: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("GITHUB_ACTIONS".to_string(), "true".to_string()),
        ("CI".into(), "true".into()),
        ("GITHUB_REPOSITORY".into(), "acme/shop".into()),
        ("GITHUB_RUN_ID".into(), "4242".into()),
        (
            "GITHUB_SHA".into(),
            "0123456789abcdef0123456789abcdef01234567".into(),
        ),
        ("GITHUB_SERVER_URL".into(), "https://github.com".into()),
        ("GITHUB_WORKSPACE".into(), root().display().to_string()),
        (
            "GITHUB_OUTPUT".into(),
            dir.join("output").display().to_string(),
        ),
        (
            "GITHUB_STEP_SUMMARY".into(),
            dir.join("summary.md").display().to_string(),
        ),
        ("RUNNER_TEMP".into(), dir.display().to_string()),
        // The default (`aviary-report.json` in the workspace, here the repository) is
        // tests/github.rs's; these tests keep their reports in their own directory.
        (
            "INPUT_REPORT".into(),
            dir.join("aviary-report.json").display().to_string(),
        ),
    ];
    for (k, v) in inputs {
        env.push((format!("INPUT_{}", k.to_uppercase()), v.clone()));
    }
    env
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, String)> {
    env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
}

#[test]
fn github_reports_a_rolled_back_simulation_in_outputs_summary_and_an_error_annotation() {
    let tmp = tempdir();
    let dir = tmp.path();
    let env = github_env(
        dir,
        &[
            ("command", "simulate".into()),
            (
                "canary-file",
                "examples/gatewayapi/overlays/prod/canary.yaml".into(),
            ),
            ("metrics", "examples/gatewayapi/timelines/bad.yaml".into()),
        ],
    );
    let mut cmd_env = as_refs(&env);
    cmd_env.push(("AVIARY_LOG", "warn".into()));
    let out = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
        cmd.arg("step").current_dir(root()).env_clear();
        if let Ok(p) = std::env::var("PATH") {
            cmd.env("PATH", p);
        }
        for (k, v) in &cmd_env {
            cmd.env(k, v);
        }
        match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    let o = outputs(&read(&dir.join("output")));
    assert_eq!(o.get("verdict").map(String::as_str), Some("rolled_back"));
    assert_eq!(o.get("failed-checks").map(String::as_str), Some("5"));
    assert_eq!(o.get("exit-code").map(String::as_str), Some("1"));
    let failing = o.get("failed-metrics").cloned().unwrap_or_default();
    assert!(!failing.is_empty(), "{o:?}");
    let report_path = o.get("report").cloned().unwrap_or_default();
    assert_eq!(
        report_path,
        dir.join("aviary-report.json").display().to_string()
    );
    let report: Value = serde_json::from_str(&read(Path::new(&report_path))).unwrap_or_default();
    assert_eq!(report["verdict"], "rolled_back");
    assert_eq!(report["host"], "github");
    assert_eq!(report["exit_code"], 1);

    let summary = read(&dir.join("summary.md"));
    assert!(summary.contains("rolled back"), "{summary}");
    assert!(summary.contains("```mermaid\nxychart-beta"), "{summary}");
    assert!(
        summary.contains(&format!(
            "| {} | metric |",
            failing.split(',').next().unwrap_or("")
        )),
        "{summary}"
    );

    // The error annotation names the failing metric, escaped for the runner.
    let stdout = stdout(&out);
    let error = stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no error annotation in {stdout}"));
    assert!(
        error.starts_with("::error title=aviary%3A rolled back::"),
        "{error}"
    );
    assert!(error.contains(&failing), "{error}");
    assert!(
        !error[2..].contains("::") || error.matches("::").count() == 2,
        "{error}"
    );
    // Each stage is a collapsible group, and every group is closed.
    assert!(stdout.contains("::group::aviary simulate"), "{stdout}");
    assert_eq!(
        stdout.matches("::group::").count(),
        stdout.matches("::endgroup::").count(),
        "{stdout}"
    );
}

#[test]
fn github_annotates_spec_errors_at_their_file_and_line() {
    let tmp = tempdir();
    let dir = tmp.path();
    let canary = dir.join("canary.yaml");
    let text = read(&root().join("examples/gatewayapi/overlays/prod/canary.yaml"))
        .replace("threshold: 5", "threshold: five");
    if let Err(e) = std::fs::write(&canary, &text) {
        panic!("{e}");
    }
    let line = text
        .lines()
        .position(|l| l.contains("threshold: five"))
        .map(|i| i + 1)
        .unwrap_or(0);
    assert!(line > 0, "the example has a threshold");
    let env = github_env(
        dir,
        &[
            ("command", "simulate".into()),
            ("canary-file", canary.display().to_string()),
            ("metrics", "examples/gatewayapi/timelines/good.yaml".into()),
        ],
    );
    let mut e = as_refs(&env);
    e.push(("GITHUB_WORKSPACE", dir.display().to_string()));
    let out = aviary(&["step"], &e);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let stdout = stdout(&out);
    let expected = format!("::error file=canary.yaml,line={line},title=spec.analysis.threshold::");
    assert!(stdout.contains(&expected), "{expected} not in {stdout}");
    let o = outputs(&read(&dir.join("output")));
    assert_eq!(o.get("verdict").map(String::as_str), Some("failed"));
    assert_eq!(o.get("exit-code").map(String::as_str), Some("2"));
}

#[test]
fn github_deployment_statuses_follow_a_rollback_and_the_token_never_shows() {
    let token = "ghs_aviaryTestToken0123456789";
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let server = rt.block_on(async {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/repos/acme/shop/deployments"))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 77})))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/repos/acme/shop/deployments/77/statuses"))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({"id": 1})))
            .mount(&server)
            .await;
        server
    });
    let (c, hook, canary) =
        crate::util::with_new_revision("gatewayapi", "    maxWeight: 60\n    stepWeight: 20");
    hook.set(500);
    let tmp = tempdir();
    let dir = tmp.path();
    let mut env = github_env(
        dir,
        &[
            ("command", "rollout".into()),
            ("canary-file", canary.display().to_string()),
            ("kubeconfig", c.kubeconfig.display().to_string()),
            ("timeout", "2m".into()),
            ("github-token", token.into()),
            ("environment", "production".into()),
            ("environment-url", "https://shop.example.com".into()),
        ],
    );
    env.push(("GITHUB_API_URL".into(), server.uri()));
    let out = aviary(&["step"], &as_refs(&env));
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));

    let requests = rt.block_on(server.received_requests()).unwrap_or_default();
    let bodies: Vec<(String, Value)> = requests
        .iter()
        .map(|r| {
            (
                r.url.path().to_string(),
                serde_json::from_slice(&r.body).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[0].0, "/repos/acme/shop/deployments");
    assert_eq!(bodies[0].1["environment"], "production");
    assert_eq!(
        bodies[0].1["ref"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(bodies[0].1["auto_merge"], false);
    assert_eq!(bodies[0].1["required_contexts"], serde_json::json!([]));
    let states: Vec<&str> = bodies[1..]
        .iter()
        .map(|(_, b)| b["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, vec!["in_progress", "failure"]);
    assert_eq!(
        bodies[1].1["log_url"],
        "https://github.com/acme/shop/actions/runs/4242"
    );
    assert_eq!(bodies[2].1["environment_url"], "https://shop.example.com");
    let description = bodies[2].1["description"].as_str().unwrap_or("");
    assert!(description.chars().count() <= 140, "{description}");
    assert!(description.contains("rolled back"), "{description}");
    assert!(requests.iter().all(|r| r
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.ends_with(token))));

    // The failing check is named, in the outputs and the annotation.
    let o = outputs(&read(&dir.join("output")));
    assert_eq!(o.get("verdict").map(String::as_str), Some("rolled_back"));
    assert_eq!(
        o.get("failed-metrics").map(String::as_str),
        Some("acceptance")
    );
    let stdout = stdout(&out);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("::error ") && l.contains("acceptance")),
        "{stdout}"
    );
    // The token is masked first thing, and appears nowhere else.
    let mask = format!("::add-mask::{token}");
    assert!(stdout.starts_with(&mask), "{stdout}");
    assert_eq!(stdout.matches(token).count(), 1, "{stdout}");
    for (what, text) in [
        ("stderr", stderr(&out)),
        ("outputs", read(&dir.join("output"))),
        ("summary", read(&dir.join("summary.md"))),
        ("report", read(&dir.join("aviary-report.json"))),
    ] {
        assert!(
            !text.contains(token),
            "the token leaked into {what}: {text}"
        );
    }
    // Traffic is back on the primary.
    assert_eq!(c.route_weights().last(), Some(&0));
}

#[test]
fn tekton_writes_small_results_without_a_trailing_newline() {
    let tmp = tempdir();
    let dir = tmp.path();
    let results = dir.join("results");
    if let Err(e) = std::fs::create_dir_all(&results) {
        panic!("{e}");
    }
    let mut env: Vec<(&str, String)> = vec![
        ("AVIARY_HOST", "tekton".into()),
        ("PARAM_COMMAND", "simulate".into()),
        (
            "PARAM_CANARY_FILE",
            root()
                .join("examples/istio/overlays/prod/canary.yaml")
                .display()
                .to_string(),
        ),
        (
            "PARAM_METRICS",
            root()
                .join("examples/istio/timelines/good.yaml")
                .display()
                .to_string(),
        ),
        (
            "PARAM_REPORT",
            dir.join("ws/aviary-report.json").display().to_string(),
        ),
    ];
    let paths: Vec<(String, PathBuf)> = aviary_hosts::tekton::RESULTS
        .iter()
        .map(|n| {
            (
                format!("RESULT_{}_PATH", n.replace('-', "_").to_uppercase()),
                results.join(n),
            )
        })
        .collect();
    for (k, p) in &paths {
        env.push((k.as_str(), p.display().to_string()));
    }
    let out = aviary(&["step"], &env);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(read(&results.join("verdict")), "promoted");
    assert_eq!(read(&results.join("weight")), "0");
    assert_eq!(read(&results.join("failed-checks")), "0");
    assert_eq!(read(&results.join("failed-metrics")), "");
    assert_eq!(read(&results.join("exit-code")), "0");
    let report_path = read(&results.join("report"));
    assert_eq!(
        report_path,
        dir.join("ws/aviary-report.json").display().to_string()
    );
    let total: usize = paths.iter().map(|(_, p)| read(p).len()).sum();
    assert!(total < 4096, "{total} bytes of results");
    let report: Value = serde_json::from_str(&read(Path::new(&report_path))).unwrap_or_default();
    assert_eq!(report["verdict"], "promoted");
    assert_eq!(report["host"], "tekton");
    assert!(report["checks"].as_array().is_some_and(|c| !c.is_empty()));
    // No workflow commands outside GitHub.
    assert!(!stdout(&out).contains("::"), "{}", stdout(&out));
}

/// A release source as `gcloud deploy releases create --source` uploads it: a tar.gz of a
/// Skaffold project (raw YAML: the podinfo Deployment and its Canary).
/// `extra` files (`(path, text)`) are added to it.
pub(crate) fn release_source_with(hook: &str, extra: Vec<(&str, String)>) -> Vec<u8> {
    let tmp = tempdir();
    let dir = tmp.path();
    let mut files = vec![
        (
            "skaffold.yaml",
            "apiVersion: skaffold/v4beta11\nkind: Config\nbuild:\n  artifacts:\n    - image: podinfo\nmanifests:\n  rawYaml:\n    - k8s/deployment.yaml\n    - k8s/canary.yaml\n".to_string(),
        ),
        (
            "k8s/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\n  namespace: test\n  labels: {app: podinfo}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: podinfo}\n  template:\n    metadata:\n      labels: {app: podinfo}\n    spec:\n      containers:\n        - name: podinfo\n          image: podinfo\n          ports: [{containerPort: 9898, name: http}]\n".to_string(),
        ),
        (
            "k8s/canary.yaml",
            crate::util::canary_yaml("gatewayapi", hook, "    maxWeight: 50\n    stepWeight: 10"),
        ),
    ];
    files.extend(extra);
    let mut tgz = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut tgz, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, text) in &files {
            let p = dir.join(name);
            if let Some(parent) = p.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::write(&p, text) {
                panic!("{e}");
            }
            if let Err(e) = tar.append_path_with_name(&p, name) {
                panic!("{e}");
            }
        }
        match tar.into_inner().and_then(|gz| gz.finish()) {
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    tgz
}

pub(crate) struct CloudDeploy {
    pub(crate) gcs: crate::util::gcs::Gcs,
    pub(crate) cluster: Cluster,
    pub(crate) hook: Hook,
    /// The kubeconfig, as a gs:// deploy parameter would fetch it.
    pub(crate) kubeconfig_url: String,
    /// The GCS server's seed data, removed after the server stopped.
    _data: tempfile::TempDir,
}

impl CloudDeploy {
    pub(crate) fn start() -> CloudDeploy {
        CloudDeploy::start_with(|_| Vec::new())
    }

    /// A release source with the files `extra` gives for the cluster, beside the usual ones.
    pub(crate) fn start_with(
        extra: impl Fn(&Cluster) -> Vec<(&'static str, String)>,
    ) -> CloudDeploy {
        let cluster = crate::util::cluster();
        let hook = Hook::start();
        let data = tempdir();
        let bucket = data.path().join("pipeline-artifacts");
        if let Err(e) = std::fs::create_dir_all(bucket.join("releases")) {
            panic!("{e}");
        }
        let write = |name: &str, body: &[u8]| {
            if let Err(e) = std::fs::write(bucket.join(name), body) {
                panic!("{e}");
            }
        };
        write(
            "releases/source.tgz",
            &release_source_with(&hook.url, extra(&cluster)),
        );
        write("kubeconfig", read(&cluster.kubeconfig).as_bytes());
        let gcs = crate::util::gcs::Gcs::start(data.path());
        CloudDeploy {
            gcs,
            cluster,
            hook,
            kubeconfig_url: "gs://pipeline-artifacts/kubeconfig".into(),
            _data: data,
        }
    }

    /// One action, with the environment Cloud Deploy gives a custom target's container.
    pub(crate) fn run(&self, request: &str, out: &str, extra: &[(&str, &str)]) -> Output {
        let mut env: Vec<(&str, String)> = vec![
            ("AVIARY_GCS_ENDPOINT", self.gcs.endpoint.clone()),
            ("CLOUD_DEPLOY_REQUEST_TYPE", request.into()),
            ("CLOUD_DEPLOY_PROJECT", "123456789".into()),
            ("CLOUD_DEPLOY_PROJECT_ID", "acme-shop".into()),
            ("CLOUD_DEPLOY_LOCATION", "europe-west1".into()),
            ("CLOUD_DEPLOY_DELIVERY_PIPELINE", "aviary-demo".into()),
            ("CLOUD_DEPLOY_RELEASE", "rel-1".into()),
            ("CLOUD_DEPLOY_TARGET", "prod".into()),
            ("CLOUD_DEPLOY_STORAGE_TYPE", "GCS".into()),
            (
                "CLOUD_DEPLOY_INPUT_GCS_PATH",
                "gs://pipeline-artifacts/releases/source.tgz".into(),
            ),
            (
                "CLOUD_DEPLOY_OUTPUT_GCS_PATH",
                format!("gs://pipeline-artifacts/{out}"),
            ),
            (
                "CLOUD_DEPLOY_customTarget_kubeconfig",
                self.kubeconfig_url.clone(),
            ),
            ("CLOUD_DEPLOY_customTarget_timeout", "2m".into()),
        ];
        for (k, v) in extra {
            env.push((k, v.to_string()));
        }
        aviary(&["cloud-deploy"], &env)
    }

    pub(crate) fn results(&self, out: &str) -> Value {
        let body = self
            .gcs
            .get("pipeline-artifacts", &format!("{out}/results.json"))
            .unwrap_or_else(|| panic!("no {out}/results.json was uploaded"));
        serde_json::from_slice(&body).unwrap_or_default()
    }

    /// `<out>/results.json` says FAILED, with `needle` in its failure message.
    pub(crate) fn assert_failed(&self, out: &str, needle: &str) {
        let r = self.results(out);
        assert_eq!(r["resultStatus"], "FAILED", "{r}");
        assert!(
            r["failureMessage"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{needle} not in {r}"
        );
    }

    pub(crate) fn render(&self, image: &str, out: &str) {
        let images = format!("podinfo={image}");
        let o = self.run(
            "RENDER",
            out,
            &[("CLOUD_DEPLOY_customTarget_images", images.as_str())],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let r = self.results(out);
        assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
        let manifest = format!("gs://pipeline-artifacts/{out}/manifest.yaml");
        assert_eq!(r["manifestFile"], manifest.as_str());
        assert!(r["metadata"]["custom-target-source"]
            .as_str()
            .is_some_and(|s| s.starts_with("aviary")));
        let text = String::from_utf8_lossy(
            &self
                .gcs
                .get("pipeline-artifacts", &format!("{out}/manifest.yaml"))
                .unwrap_or_default(),
        )
        .into_owned();
        assert!(text.contains(&format!("image: {image}")), "{text}");
        assert!(text.contains("kind: Canary"), "{text}");
    }

    pub(crate) fn deploy(&self, render: &str, out: &str, phase: Option<(&str, u32)>) -> Output {
        let manifest = format!("gs://pipeline-artifacts/{render}/manifest.yaml");
        let mut extra = vec![("CLOUD_DEPLOY_MANIFEST_GCS_PATH", manifest)];
        match phase {
            Some((id, pct)) => {
                extra.push(("CLOUD_DEPLOY_FEATURES", "CANARY".into()));
                extra.push(("CLOUD_DEPLOY_PHASE", id.into()));
                extra.push(("CLOUD_DEPLOY_PERCENTAGE_DEPLOY", pct.to_string()));
            }
            None => {
                extra.push(("CLOUD_DEPLOY_PHASE", "stable".into()));
                extra.push(("CLOUD_DEPLOY_PERCENTAGE_DEPLOY", "100".into()));
            }
        }
        extra.push(("CLOUD_DEPLOY_ROLLOUT", format!("rollout-{out}")));
        let refs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.run("DEPLOY", out, &refs)
    }
}

#[test]
fn cloud_deploy_renders_then_drives_the_canary_phase_by_phase() {
    let cd = CloudDeploy::start();
    let c = &cd.cluster;
    // First release: Cloud Deploy skips the canary phases; stable bootstraps the primary.
    cd.render("podinfo:1", "r1/render");
    let o = cd.deploy("r1/render", "r1/stable", None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("r1/stable");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert_eq!(r["metadata"]["aviary-verdict"], "bootstrapped");
    assert_eq!(
        crate::util::image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:1"
    );

    // Second release: canary-10 takes the canary to 10% and stops there.
    cd.render("podinfo:2", "r2/render");
    let o = cd.deploy("r2/render", "r2/canary-10", Some(("canary-10", 10)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("r2/canary-10");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert_eq!(r["metadata"]["aviary-verdict"], "advanced");
    assert_eq!(r["metadata"]["aviary-canary-weight"], "10");
    assert_eq!(c.route_weights().last(), Some(&10));
    assert!(r["artifactFiles"].as_array().is_some_and(|a| a
        .iter()
        .any(|f| f == "gs://pipeline-artifacts/r2/canary-10/aviary-report.json")));
    let report: Value = serde_json::from_slice(
        &cd.gcs
            .get("pipeline-artifacts", "r2/canary-10/aviary-report.json")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(report["verdict"], "advanced");
    assert_eq!(report["host"], "cloud-deploy");

    // stable promotes what canary-10 left at 10%.
    let o = cd.deploy("r2/render", "r2/stable", Some(("stable", 100)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("r2/stable");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert_eq!(r["metadata"]["aviary-verdict"], "promoted");
    assert_eq!(
        crate::util::image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
    assert_eq!(c.route_weights().last(), Some(&0));

    // Third release fails its analysis at 10%: FAILED, with the reason, traffic on the primary.
    cd.render("podinfo:3", "r3/render");
    cd.hook.set(500);
    let o = cd.deploy("r3/render", "r3/canary-10", Some(("canary-10", 10)));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = cd.results("r3/canary-10");
    assert_eq!(r["resultStatus"], "FAILED", "{r}");
    let message = r["failureMessage"].as_str().unwrap_or("");
    assert!(
        message.contains("rolled back") && message.contains("acceptance"),
        "{r}"
    );
    assert_eq!(r["metadata"]["aviary-failed-metrics"], "acceptance");
    assert_eq!(c.route_weights().last(), Some(&0));
    assert_eq!(
        crate::util::image(&c.get("apps/v1", "deployments", "podinfo-primary")),
        "podinfo:2"
    );
}

#[test]
fn cloud_deploy_answers_not_supported_and_failed_in_results_json() {
    let cd = CloudDeploy::start();
    let o = cd.run(
        "DEPLOY",
        "x/unsupported",
        &[("CLOUD_DEPLOY_FEATURES", "CANARY,SOMETHING_NEW")],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let r = cd.results("x/unsupported");
    assert_eq!(r["resultStatus"], "NOT_SUPPORTED", "{r}");
    assert!(r["failureMessage"]
        .as_str()
        .is_some_and(|m| m.contains("SOMETHING_NEW")));

    // A request that cannot be read says what is wrong, in results.json too.
    let o = cd.run(
        "DEPLOY",
        "x/percentage",
        &[("CLOUD_DEPLOY_PERCENTAGE_DEPLOY", "ten")],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("CLOUD_DEPLOY_PERCENTAGE_DEPLOY"),
        "{}",
        stderr(&o)
    );
    cd.assert_failed("x/percentage", "expected a percentage 0-100, got \"ten\"");
    let o = cd.run("SYNC", "x/kind", &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(cd.results("x/kind")["resultStatus"], "FAILED");

    // A render that cannot read its source still uploads FAILED before exiting non-zero.
    let o = cd.run(
        "RENDER",
        "x/render",
        &[(
            "CLOUD_DEPLOY_INPUT_GCS_PATH",
            "gs://pipeline-artifacts/releases/missing.tgz",
        )],
    );
    assert_ne!(code(&o), 0);
    cd.assert_failed("x/render", "missing.tgz");
}

/// The `version = "…"` of the `[package]` table.
fn toml_version(cargo_toml: &str) -> Option<String> {
    let package = cargo_toml.split("[package]").nth(1)?;
    let line = package
        .lines()
        .find(|l| l.trim_start().starts_with("version"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// action.yml declares what the binary reads, and the Dockerfile builds what action.yml runs.
#[test]
fn action_yml_and_dockerfile_agree_with_the_binary() {
    let action = read(&root().join("action.yml"));
    let dockerfile = read(&root().join("Dockerfile"));
    assert!(action.contains("using: docker"), "{action}");
    // A prebuilt image pinned by digest (no image build in every workflow run), the same
    // reference as the Tekton Task's default, and a post step the image provides.
    let pinned = |text: &str| -> Vec<String> {
        text.split("ghcr.io/aviary-dev/aviary:")
            .skip(1)
            .filter_map(|rest| {
                let reference = rest.split_whitespace().next()?;
                let (version, digest) = reference.split_once("@sha256:")?;
                let hex = digest.len() == 64
                    && digest
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
                (hex && !version.contains('<')).then(|| format!("{version}@{digest}"))
            })
            .collect()
    };
    assert!(
        action.contains("\n  image: docker://ghcr.io/aviary-dev/aviary:"),
        "{action}"
    );
    let task_text = read(&root().join("tekton/task/aviary/0.1/aviary.yaml"));
    let (in_action, in_task) = (pinned(&action), pinned(&task_text));
    assert_eq!(in_action.len(), 1, "{action}");
    assert_eq!(in_action, in_task, "action.yml and the Task run one image");
    let version = format!(
        "{}@",
        toml_version(&read(&root().join("Cargo.toml"))).unwrap_or_default()
    );
    assert!(
        in_action[0].starts_with(&version),
        "{in_action:?} is not {version}"
    );
    assert!(action.contains("\n  post-entrypoint: /usr/local/bin/aviary-post\n"));
    assert!(action.contains("\n  post-if: always()\n"));
    let rootfs = read(&root().join("scripts/rootfs"));
    assert!(
        rootfs.contains("aviary-post"),
        "the image links aviary-post"
    );
    for input in aviary_hosts::INPUTS {
        assert!(
            action.contains(&format!("\n  {input}:\n")),
            "action.yml does not declare the input {input}"
        );
    }
    for output in [
        "verdict",
        "weight",
        "failed-checks",
        "failed-metrics",
        "report",
        "exit-code",
        "message",
    ] {
        assert!(
            action.contains(&format!("\n  {output}:\n")),
            "action.yml does not declare the output {output}"
        );
    }
    assert!(action.contains("- step"), "action.yml runs `aviary step`");
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/aviary\"]"),
        "{dockerfile}"
    );
    // GitHub runs container actions as root and ignores WORKDIR: no USER in the final image.
    let final_stage = dockerfile.rsplit("FROM ").next().unwrap_or("");
    assert!(!final_stage.contains("\nUSER "), "{final_stage}");
    // The Tekton Task reads the same inputs, as PARAM_*.
    let task = read(&root().join("tekton/task/aviary/0.1/aviary.yaml"));
    for input in aviary_hosts::INPUTS.iter().filter(|i| {
        !matches!(
            **i,
            "github-token" | "environment" | "environment-url" | "prometheus-token"
        )
    }) {
        let var = format!("PARAM_{}", input.replace('-', "_").to_uppercase());
        assert!(task.contains(&var), "the Tekton Task does not pass {var}");
    }
    for result in aviary_hosts::tekton::RESULTS {
        let var = format!("RESULT_{}_PATH", result.replace('-', "_").to_uppercase());
        assert!(task.contains(&var), "the Tekton Task does not pass {var}");
    }
}

/// The release workflow's own pinning command, run on copies of action.yml and the Task, pins
/// both to the digest it is given (a reference format it does not match would leave one behind).
#[test]
fn the_release_workflow_pins_one_digest_in_action_yml_and_the_task() {
    let workflow = read(&root().join(".github/workflows/release.yml"));
    let pin = workflow
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sed -E -i "))
        .unwrap_or_else(|| panic!("no sed -E -i line in the release workflow"));
    let dir = tempdir();
    let task = "tekton/task/aviary/0.1/aviary.yaml";
    for f in ["action.yml", task] {
        let to = dir.path().join(f);
        if let Some(parent) = to.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::copy(root().join(f), &to) {
            panic!("{f}: {e}");
        }
    }
    let digest = format!("sha256:{}", "5e".repeat(32));
    let status = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("files=\"action.yml {task}\"\n{pin}"),
        ])
        .current_dir(dir.path())
        .env("IMAGE", "ghcr.io/aviary-dev/aviary")
        .env("VERSION", "9.8.7")
        .env("DIGEST", &digest)
        .status();
    assert!(status.map(|s| s.success()).unwrap_or(false));
    let want = format!("ghcr.io/aviary-dev/aviary:9.8.7@{digest}");
    let action = read(&dir.path().join("action.yml"));
    assert!(
        action.contains(&format!("\n  image: docker://{want}\n")),
        "{action}"
    );
    let task_text = read(&dir.path().join(task));
    assert!(
        task_text.contains(&format!("default: {want}\n")),
        "{task_text}"
    );
    assert!(!action.contains("@sha256:0000") && !task_text.contains("@sha256:0000"));
}

/// A `verdict-policy` input the step does not know: exit 2 before anything runs, the error
/// naming the input and the two policies, as an error annotation and in the outputs.
#[test]
fn github_refuses_an_unknown_verdict_policy_input_naming_it_and_the_choices() {
    let tmp = tempdir();
    let dir = tmp.path();
    let env = github_env(
        dir,
        &[
            ("command", "rollout".into()),
            (
                "canary-file",
                "examples/gatewayapi/overlays/prod/canary.yaml".into(),
            ),
            ("verdict-policy", "most-of-them".into()),
        ],
    );
    // The `report` input (this directory's aviary-report.json) holds even though another
    // input cannot be read.
    let out = aviary(&["step"], &as_refs(&env));
    assert_eq!(code(&out), 2, "{}\n{}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("verdict-policy")
            && all.contains("most-of-them")
            && all.contains("all-or-nothing")
            && all.contains("independent"),
        "{all}"
    );
    assert!(stdout(&out).contains("::error"), "{}", stdout(&out));
    let o = outputs(&read(&dir.join("output")));
    assert_eq!(o.get("exit-code").map(String::as_str), Some("2"), "{o:?}");
    let report: Value =
        serde_json::from_str(&read(&dir.join("aviary-report.json"))).unwrap_or_default();
    assert_eq!(report["exit_code"], 2, "{report}");
}
