//! Flagger conformance of the spec reader (issue 15, part A): every spec Flagger accepts is
//! accepted and understood, each through the binary. The whole corpus
//! (`../shared/conformance/flagger/check.sh`) runs in `.ci/run`; these are its ten rejections
//! and the fields it found unread, one test each, asserting what aviary makes of them.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::*;

fn run(args: &[&str]) -> Output {
    let bin = aviary_bin();
    let out = Command::new(&bin)
        .args(args)
        .env_remove("AVIARY_LOG")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run {}: {e}", bin.display()),
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// `validate` must exit 0; returns its stderr (the warnings).
fn valid(file: &Path) -> String {
    let out = run(&["validate", "-f", p(file)]);
    assert_eq!(
        code(&out),
        0,
        "validate {}: {}",
        file.display(),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(!err.contains("unknown field"), "{err}");
    err
}

/// `plan --json` must exit 0; returns the plan.
fn plan(file: &Path) -> Value {
    let out = run(&["plan", "-f", p(file), "--json"]);
    assert_eq!(code(&out), 0, "plan {}: {}", file.display(), stderr(&out));
    match serde_json::from_str(&stdout(&out)) {
        Ok(v) => v,
        Err(e) => panic!("plan --json printed no JSON ({e}): {}", stdout(&out)),
    }
}

/// `validate --json`'s report of the file's first Canary or template.
fn decoded(file: &Path) -> Value {
    let out = run(&["validate", "-f", p(file), "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    match serde_json::from_str::<Value>(&stdout(&out)) {
        Ok(v) => v[0].clone(),
        Err(e) => panic!("no JSON ({e}): {}", stdout(&out)),
    }
}

/// A Flagger Canary (istio unless `provider` says otherwise) with `service` and `analysis` lines.
fn canary(provider: &str, service: &str, analysis: &str) -> String {
    format!(
        "apiVersion: flagger.app/v1beta1
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
{service}  analysis:
    interval: 1m
    threshold: 2
{analysis}"
    )
}

const SERVICE: &str = "  service:\n    port: 9898\n";

const TEMPLATE: &str = "apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: errors
  namespace: test
spec:
  provider:
    type: prometheus
    address: http://prometheus.test:9090
  query: sum(rate(http_requests_total{namespace=\"{{ namespace }}\", code=~\"{{ variables.code }}\"}[{{ interval }}]))
";

#[test]
fn r01_a_canary_without_service_is_valid_and_its_rollout_says_what_is_missing() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        canary("istio", "", "    stepWeight: 50\n"),
    );
    valid(&f);
    assert_eq!(plan(&f)["weights"], serde_json::json!([50, 100]));
    // The router needs it: the rollout stops before it changes anything, naming the field.
    let out = run(&["rollout", "-f", p(&f)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("spec.service: the Canary podinfo.test has no spec.service, which the istio router needs"),
        "{err}"
    );
    assert!(err.contains("help: add `service: {port: 9898}`"), "{err}");
}

#[test]
fn r02_an_externalmetrics_template_is_valid() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "t.yaml",
        TEMPLATE.replace("type: prometheus", "type: externalmetrics"),
    );
    valid(&f);
    assert_eq!(
        decoded(&f)["templates"][0]["provider"]["provider_type"],
        "externalmetrics"
    );
    // A type outside Flagger's list is still refused.
    let bad = write(
        dir.path(),
        "bad.yaml",
        TEMPLATE.replace("type: prometheus", "type: externalmetric"),
    );
    let out = run(&["validate", "-f", p(&bad)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did you mean \"externalmetrics\"?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn r03_template_headers_take_flaggers_lists_and_plain_strings() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "t.yaml",
        TEMPLATE.replace(
            "    address:",
            "    headers:\n      X-Scope-OrgID: [tenant-a, tenant-b]\n      X-One: [\"1\"]\n      X-Plain: plain\n    address:",
        ),
    );
    valid(&f);
    let headers = &decoded(&f)["templates"][0]["provider"]["headers"];
    assert_eq!(headers["X-Scope-OrgID"], "tenant-a, tenant-b");
    assert_eq!(headers["X-One"], "1");
    assert_eq!(headers["X-Plain"], "plain");
    let bad = write(
        dir.path(),
        "bad.yaml",
        TEMPLATE.replace(
            "    address:",
            "    headers:\n      X-Empty: []\n    address:",
        ),
    );
    let out = run(&["validate", "-f", p(&bad)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.provider.headers.X-Empty: expected at least one value"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn r04_a_metric_with_templateref_and_query_runs_both_as_flagger_does() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        format!(
            "{}---\n{TEMPLATE}",
            canary(
                "istio",
                SERVICE,
                "    stepWeight: 50\n    metrics:\n    - name: errors\n      templateRef: {name: errors}\n      templateVariables: {code: \"5..\"}\n      query: sum(up)\n      thresholdRange: {max: 1}\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n",
            )
        ),
    );
    let err = valid(&f);
    assert!(
        err.contains(
            "metric \"errors\" has both templateRef and query: as Flagger does, aviary runs both"
        ),
        "{err}"
    );
    // Flagger's order: built-ins and inline queries (in spec order), then templates; the plan
    // lists each check as "NAME <= MAX".
    let checks: Vec<String> = plan(&f)["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        checks,
        vec![
            "errors (query) <= 1",
            "request-success-rate >= 99",
            "errors <= 1"
        ]
    );
}

#[test]
fn r05_step_weights_above_100_are_capped() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        canary("istio", SERVICE, "    stepWeights: [1, 2, 10, 200]\n"),
    );
    let err = valid(&f);
    assert!(
        err.contains(
            "stepWeights[3]: stepWeights entry 3 (200) is above 100: Flagger caps it at 100"
        ),
        "{err}"
    );
    assert_eq!(plan(&f)["weights"], serde_json::json!([1, 2, 10, 100]));
}

#[test]
fn r06_r07_zero_max_weight_and_step_weight_promotion_mean_unset() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        canary(
            "istio",
            SERVICE,
            "    stepWeight: 50\n    maxWeight: 0\n    stepWeightPromotion: 0\n",
        ),
    );
    valid(&f);
    // maxWeight unset: up to 100, as Flagger goes.
    assert_eq!(plan(&f)["weights"], serde_json::json!([50, 100]));
}

#[test]
fn r08_an_empty_alert_severity_is_info() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        canary(
            "istio",
            SERVICE,
            "    stepWeight: 50\n    alerts:\n    - name: team\n      severity: \"\"\n      providerRef: {name: slack}\n",
        ),
    );
    valid(&f);
    assert_eq!(
        decoded(&f)["canaries"][0]["analysis"]["alerts"][0]["severity"],
        "info"
    );
}

#[test]
fn r09_an_empty_metric_name_is_accepted() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        format!(
            "{}---\n{TEMPLATE}",
            canary(
                "istio",
                SERVICE,
                "    stepWeight: 50\n    metrics:\n    - name: \"\"\n      templateRef: {name: errors}\n      templateVariables: {code: \"5..\"}\n      thresholdRange: {max: 1}\n",
            )
        ),
    );
    valid(&f);
    assert_eq!(plan(&f)["checks"][0], " <= 1");
    // Two metrics with the same (empty) name cannot be told apart: still refused.
    let twice = write(
        dir.path(),
        "twice.yaml",
        canary(
            "istio",
            SERVICE,
            "    stepWeight: 50\n    metrics:\n    - name: \"\"\n      templateRef: {name: errors}\n    - name: \"\"\n      templateRef: {name: errors}\n",
        ),
    );
    let out = run(&["validate", "-f", p(&twice)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("duplicate metric name \"\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn r10_kubernetes_with_match_drops_the_match_and_runs_blue_green() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "c.yaml",
        canary(
            "kubernetes",
            SERVICE,
            "    iterations: 5\n    match:\n    - headers:\n        x-canary: {exact: insider}\n",
        ),
    );
    let err = valid(&f);
    assert!(
        err.contains("spec.analysis.match: match is dropped: the kubernetes provider cannot route by request, so (as in Flagger) this canary runs blue/green"),
        "{err}"
    );
    assert_eq!(plan(&f)["strategy"], "blue-green");
}

#[test]
fn flaggers_fields_are_read_and_each_unapplied_one_named_once() {
    let dir = tempdir();
    let service = "  service:
    port: 9898
    backendTimeout: 30s
    headless: true
    trafficDistribution: PreferClose
    rewrite: {uri: /, type: ReplacePrefixMatch}
    mirror:
    - backendRef: {name: shadow, port: 80}
    unmanagedMetadata:
      labels: [team]
      annotations: [owner]
";
    let analysis = "    stepWeight: 50
    sessionAffinity: {cookieName: c, domain: example.com, secure: true, sameSite: Strict}
    webhooks:
    - name: smoke
      url: https://tester.test/
      disableTLS: true
";
    let f = write(
        dir.path(),
        "c.yaml",
        canary("gatewayapi:v1", service, analysis),
    );
    let err = valid(&f);
    // aviary applies every one of them as Flagger does: nothing is said about them.
    for field in [
        "backendTimeout",
        "rewrite.type",
        "mirror is",
        "sessionAffinity",
        "headless",
        "trafficDistribution",
        "unmanagedMetadata",
        "disableTLS",
    ] {
        assert!(!err.contains(field), "{field:?} in:\n{err}");
    }
    let c = &decoded(&f)["canaries"][0];
    assert_eq!(c["service"]["backend_timeout"], "30s");
    assert_eq!(c["service"]["headless"], true);
    assert_eq!(c["service"]["traffic_distribution"], "PreferClose");
    assert_eq!(c["service"]["rewrite"]["type"], "ReplacePrefixMatch");
    assert_eq!(c["service"]["mirror"][0]["name"], "shadow");
    assert_eq!(c["service"]["unmanaged_metadata"]["labels"][0], "team");
    assert_eq!(c["analysis"]["session_affinity"]["domain"], "example.com");
    assert_eq!(c["analysis"]["webhooks"][0]["disable_tls"], true);
    // With nginx, Flagger ignores the Gateway API fields too, and aviary applies the Service
    // ones: nothing is named.
    let f = write(dir.path(), "nginx.yaml", canary("nginx", service, analysis));
    let err = valid(&f);
    assert!(!err.contains("is not applied"), "{err}");
    // The CRD's schema: the enum, and a Service mirror needs a port.
    let bad = write(
        dir.path(),
        "bad.yaml",
        canary(
            "gatewayapi:v1",
            &service
                .replace("PreferClose", "Nearby")
                .replace("{name: shadow, port: 80}", "{name: shadow}"),
            analysis,
        ),
    );
    let out = run(&["validate", "-f", p(&bad)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("spec.service.trafficDistribution: unknown trafficDistribution \"Nearby\""),
        "{err}"
    );
    assert!(
        err.contains(
            "spec.service.mirror[0].backendRef: a mirror backend that is a Service needs a port"
        ),
        "{err}"
    );
}

#[test]
fn what_flaggers_crd_refuses_gets_a_warning_saying_so() {
    let dir = tempdir();
    let no_analysis = write(
        dir.path(),
        "none.yaml",
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: podinfo\nspec:\n  targetRef: {kind: Deployment, name: podinfo}\n  service: {port: 80}\n",
    );
    assert!(valid(&no_analysis).contains("no analysis: Flagger's CRD requires spec.analysis"));
    let gw = write(
        dir.path(),
        "gw.yaml",
        canary("gatewayapi", SERVICE, "    stepWeight: 50\n"),
    );
    let err = valid(&gw);
    assert!(
        err.contains("provider gatewayapi without a version: Flagger's CRD refuses it"),
        "{err}"
    );
    let both = write(
        dir.path(),
        "both.yaml",
        canary(
            "istio",
            SERVICE,
            "    stepWeight: 20\n    stepWeights: [10, 40]\n",
        ),
    );
    assert!(valid(&both)
        .contains("Flagger's CRD refuses this analysis: stepWeight and stepWeights together"));
    let over = write(
        dir.path(),
        "over.yaml",
        canary("istio", SERVICE, "    stepWeight: 20\n    maxWeight: 50\n"),
    );
    assert!(
        valid(&over).contains("Flagger goes past it (20, 40, 60), aviary stops at it (20, 40, 50)")
    );
    assert_eq!(plan(&over)["weights"], serde_json::json!([20, 40, 50]));
}

#[test]
fn a_printf_placeholder_is_read_and_its_mistakes_are_errors() {
    let dir = tempdir();
    let f = write(
        dir.path(),
        "t.yaml",
        TEMPLATE.replace(
            "{{ namespace }}",
            "{{ printf \"%s_%s\" namespace service }}",
        ),
    );
    let err = valid(&f);
    assert!(!err.contains("printf"), "{err}");
    for (action, says) in [
        ("{{ printf \"%s\" nosuch }}", "unknown argument nosuch"),
        (
            "{{ printf \"%d\" name }}",
            "the verb %d is not one aviary renders",
        ),
    ] {
        let bad = write(
            dir.path(),
            "bad.yaml",
            TEMPLATE.replace("{{ namespace }}", action),
        );
        let out = run(&["validate", "-f", p(&bad)]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}
