//! What a command is asked to do, as typed values.
//!
//! Command-line flags and pipeline inputs (GitHub `with:`, Tekton params, Cloud Deploy
//! `customTarget/*` parameters) are read once, at the edge, into these requests; everything below
//! the edge takes a request and never sees a flag or an input name again. A value that cannot be
//! read is refused where it was given, naming it the way the user wrote it ([`Origin`]): a
//! GitHub step with `timeout: 30 minutes` hears about ``input `timeout` ``, not about a
//! `--timeout` flag it never typed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::spec::duration::parse_go_duration;
use crate::spec::Provider;

/// Where the values of a request were given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Command-line flags: `--timeout`.
    Flag,
    /// A pipeline step's inputs: ``input `timeout` ``.
    Input,
    /// A Cloud Deploy deploy parameter: `customTarget/timeout`.
    DeployParameter,
}

impl Origin {
    /// How the user spelled the setting `key` (given in its flag spelling, `request-timeout`).
    pub fn name(self, key: &str) -> String {
        match self {
            Origin::Flag => format!("--{key}"),
            Origin::Input => format!("input `{key}`"),
            Origin::DeployParameter => format!("customTarget/{}", camel(key)),
        }
    }

    /// "for example …" for `key` set to `value`, in the user's spelling.
    pub fn example(self, key: &str, value: &str) -> String {
        match self {
            Origin::Flag => format!("for example --{key} {value}"),
            Origin::Input => format!("for example `{key}: {value}`"),
            Origin::DeployParameter => {
                format!("for example `customTarget/{}: {value}`", camel(key))
            }
        }
    }
}

/// `request-timeout` → `requestTimeout` (Cloud Deploy's parameter spelling).
pub fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in key.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A setting whose value cannot be used: which one (as the user spelled it), why, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct BadValue {
    pub setting: String,
    pub message: String,
    pub help: String,
}

/// Reads the Go duration `value` of the setting `key`; `example` is a good value for the help.
pub fn duration(
    origin: Origin,
    key: &str,
    value: &str,
    example: &str,
) -> Result<Duration, BadValue> {
    parse_go_duration(value.trim()).map_err(|e| BadValue {
        setting: origin.name(key),
        message: e.to_string(),
        help: origin.example(key, example),
    })
}

/// Reads the provider `value` of the setting `key` (`provider`): assumed for a Canary that sets
/// no `spec.provider`, as Flagger's `-mesh-provider` flag.
pub fn provider(origin: Origin, key: &str, value: &str) -> Result<Provider, BadValue> {
    Ok(match value.trim() {
        "kubernetes" => Provider::Kubernetes,
        "kubernetes:replicas" => Provider::KubernetesReplicas,
        "istio" => Provider::Istio,
        "gloo" => Provider::Gloo,
        "nginx" => Provider::Nginx,
        "gatewayapi" | "gatewayapi:v1" | "gatewayapi:v1beta1" => Provider::GatewayApi,
        // Routed with the Gateway API HTTPRoute each implements, as in a Canary's spec.provider.
        "linkerd" => Provider::Linkerd,
        "kuma" => Provider::Kuma,
        "contour" => Provider::Contour,
        "traefik" => Provider::Traefik,
        other => {
            return Err(match crate::spec::decode::unrouted(other) {
                Some(instead) => BadValue {
                    setting: origin.name(key),
                    message: format!("aviary does not route provider {other} (Flagger does)"),
                    help: instead,
                },
                None => BadValue {
                    setting: origin.name(key),
                    message: format!("unknown provider {other:?}"),
                    help: "use one of kubernetes, istio, gloo, nginx, gatewayapi, linkerd, kuma, contour, traefik".into(),
                },
            })
        }
    })
}

/// Where manifests come from: a Skaffold project, its profile and the images built for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSource {
    /// The Skaffold config; the project root is its directory.
    pub skaffold_file: PathBuf,
    /// The profile to apply instead of the target's (it must exist).
    pub profile: Option<String>,
    /// Built images as `name=ref`; they win over `build_artifacts`.
    pub images: Vec<String>,
    /// A `skaffold build --file-output` file.
    pub build_artifacts: Option<PathBuf>,
}

impl Default for RenderSource {
    fn default() -> Self {
        RenderSource {
            skaffold_file: PathBuf::from("skaffold.yaml"),
            profile: None,
            images: Vec::new(),
            build_artifacts: None,
        }
    }
}

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Kubeconfig file (default: `$KUBECONFIG`, `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// One API request's limit before it is tried again.
    pub request_timeout: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            kubeconfig: None,
            context: None,
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// The Prometheus of the built-in metrics (and of templates without an address), with its
/// credentials. `Debug` never shows a credential.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Prometheus {
    pub url: Option<String>,
    pub token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "<set>");
        f.debug_struct("Prometheus")
            .field("url", &self.url.as_deref().map(crate::urls::redact))
            .field("token", &set(&self.token))
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .finish()
    }
}

impl Prometheus {
    /// The credentials, for a host to mask before anything is printed.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        [&self.token, &self.password]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
    }
}

/// A target rendered elsewhere (Cloud Deploy's render action left it in its manifest).
#[derive(Debug, Clone, PartialEq)]
pub struct Prerendered {
    /// How messages name it (the manifest's URL).
    pub label: String,
    pub target: String,
    pub objects: Vec<Value>,
    pub canary_docs: Vec<Value>,
}

/// Where the Canary of a rollout comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CanarySource {
    /// A file with the Canary (and its MetricTemplates); nothing is applied but the canary's.
    File(PathBuf),
    /// A target of the Skaffold project: rendered, applied, then rolled out.
    Target(String),
    /// A target already rendered: applied, then rolled out.
    Rendered(Prerendered),
}

/// `rollout`: a canary release until it is promoted or rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub canary: CanarySource,
    /// Used with [`CanarySource::Target`].
    pub source: RenderSource,
    /// The Canary to use when there is more than one.
    pub name: Option<String>,
    /// For a Canary (and rendered objects) that name none.
    pub namespace: Option<String>,
    /// Assumed when the Canary sets no `spec.provider` (Flagger's `-mesh-provider`).
    pub provider: Provider,
    pub cluster: Cluster,
    /// Give up after this long, returning traffic to the primary.
    pub timeout: Option<Duration>,
    pub prometheus: Prometheus,
    /// Also write the JSON report here.
    pub report: Option<PathBuf>,
    /// How the verdicts combine when the target renders several Canaries.
    pub policy: VerdictPolicy,
}

/// How the verdicts of a release's canaries (every Canary a target renders) combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerdictPolicy {
    /// A release is one change: no canary is promoted until every changed one passed its
    /// analysis; when one fails, the others roll back.
    #[default]
    AllOrNothing,
    /// Each canary's verdict stands on its own; the release's is the worst of them.
    Independent,
}

impl VerdictPolicy {
    pub const ALL: [VerdictPolicy; 2] = [VerdictPolicy::AllOrNothing, VerdictPolicy::Independent];

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictPolicy::AllOrNothing => "all-or-nothing",
            VerdictPolicy::Independent => "independent",
        }
    }

    /// The policy a flag or input names, or what to write instead.
    pub fn parse(origin: Origin, setting: &str, value: &str) -> Result<VerdictPolicy, BadValue> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(VerdictPolicy::default());
        }
        VerdictPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == value)
            .ok_or_else(|| BadValue {
                setting: origin.name(setting),
                message: format!("unknown verdict policy {value:?}"),
                help: "use all-or-nothing (the default) or independent".into(),
            })
    }
}

impl std::fmt::Display for VerdictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `deploy`: a target rendered, applied and waited for, with no canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub target: String,
    pub source: RenderSource,
    pub namespace: Option<String>,
    pub cluster: Cluster,
    /// How long workloads may take to roll out.
    pub timeout: Duration,
    /// Delete what an earlier deploy of the target applied that is no longer rendered.
    pub prune: bool,
    pub report: Option<PathBuf>,
}

/// `render`: a target's manifests, written to a directory (or `-`, standard output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Render {
    pub target: String,
    pub source: RenderSource,
    pub output: PathBuf,
}

/// A Canary read from a file, for the commands that need no cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryFile {
    pub file: PathBuf,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// Assumed when the Canary sets no `spec.provider`.
    pub provider: Provider,
}

/// `simulate`: the engine on a simulated clock against a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulate {
    pub canary: CanaryFile,
    pub metrics: PathBuf,
    /// Stop without a verdict after this many ticks (default: the schedule's length plus 250).
    pub max_ticks: Option<usize>,
    pub report: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_is_named_the_way_the_user_gave_it() {
        let flag = duration(Origin::Flag, "timeout", "30 minutes", "30m").unwrap_err();
        assert_eq!(flag.setting, "--timeout");
        assert_eq!(flag.help, "for example --timeout 30m");
        let input = duration(Origin::Input, "timeout", "30 minutes", "30m").unwrap_err();
        assert!(
            input.to_string().starts_with("input `timeout`: "),
            "{input}"
        );
        assert_eq!(input.help, "for example `timeout: 30m`");
        let param = duration(Origin::DeployParameter, "request-timeout", "x", "15s").unwrap_err();
        assert_eq!(param.setting, "customTarget/requestTimeout");
        assert_eq!(
            duration(Origin::Input, "timeout", " 90s ", "30m").ok(),
            Some(Duration::from_secs(90))
        );
        // A provider Flagger knows: said so, with what to use instead.
        let bad = provider(Origin::Input, "provider", "appmesh").unwrap_err();
        assert_eq!(
            bad.to_string(),
            "input `provider`: aviary does not route provider appmesh (Flagger does)"
        );
        assert!(
            bad.help.starts_with("use provider gatewayapi:v1"),
            "{}",
            bad.help
        );
        let bad = provider(Origin::Flag, "provider", "istioo").unwrap_err();
        assert_eq!(bad.to_string(), "--provider: unknown provider \"istioo\"");
        for (name, routed) in [
            ("linkerd", Provider::Linkerd),
            ("kuma", Provider::Kuma),
            ("contour", Provider::Contour),
            (" traefik ", Provider::Traefik),
        ] {
            assert_eq!(
                provider(Origin::Flag, "provider", name).ok(),
                Some(routed),
                "{name}"
            );
        }
        assert_eq!(
            provider(Origin::Flag, "provider", "gatewayapi:v1beta1").ok(),
            Some(Provider::GatewayApi)
        );
    }

    #[test]
    fn prometheus_credentials_never_reach_debug_output() {
        let p = Prometheus {
            url: Some("https://user:hunter2@prom.example/api".into()),
            token: Some("s3cr3t-token".into()),
            username: Some("bob".into()),
            password: Some("pa55word".into()),
        };
        let shown = format!("{p:?}");
        for secret in ["hunter2", "s3cr3t-token", "pa55word", "bob"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(
            p.secrets().collect::<Vec<_>>(),
            ["s3cr3t-token", "pa55word"]
        );
    }
}
