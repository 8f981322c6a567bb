//! The typed model of a Canary and a MetricTemplate, after decoding and defaulting.
//!
//! Field names follow Flagger's `flagger.app/v1beta1` API. Where Flagger applies a default at use time
//! (`GetAnalysisInterval`, `GetAnalysisThreshold`, ...), the decoder applies it once, here, so that the
//! engine and every later seam read a value and never re-derive a default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which API group/version a document was written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiVersion {
    /// `flagger.app/v1beta1`: parsed and interpreted exactly as Flagger does.
    FlaggerV1beta1,
    /// `aviary.dev/v1alpha1`: a strict superset of the Flagger API with aviary's additions.
    AviaryV1alpha1,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::FlaggerV1beta1 => "flagger.app/v1beta1",
            ApiVersion::AviaryV1alpha1 => "aviary.dev/v1alpha1",
        }
    }
}

/// Where a document came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: String,
    /// 1-based line of the document's first key.
    pub line: usize,
}

/// A reference to another object (`targetRef`, `ingressRef`, `templateRef`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScalerReplicas {
    pub min_replicas: Option<i32>,
    pub max_replicas: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AutoscalerRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub primary_scaler_queries: BTreeMap<String, String>,
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// A Kubernetes `IntOrString` (service `targetPort`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// A Gateway API `ParentReference` (`service.gatewayRefs[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GatewayRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i64>,
}

/// An Istio-style string match (`exact`, `prefix`, `suffix` or `regex`; exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

/// One Istio `HTTPMatchRequest` (used by `service.match` and, for A/B testing, `analysis.match`).
/// The fields aviary routes on are typed; the rest are kept as JSON for the routers that support them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub query_params: BTreeMap<String, StringMatch>,
    pub without_headers: BTreeMap<String, StringMatch>,
    pub ignore_uri_case: bool,
    pub port: Option<i64>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpRetry {
    pub attempts: Option<i64>,
    pub per_try_timeout: Option<String>,
    pub retry_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HttpRewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    /// Gateway API's path rewrite type (`ReplaceFullPath` or `ReplacePrefixMatch`), as Flagger's
    /// gatewayapi router reads it.
    pub r#type: Option<String>,
}

/// `service.mirror[]`: an extra backend that Flagger's gatewayapi router mirrors requests to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MirrorBackend {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i64>,
}

/// `service.unmanagedMetadata`: label and annotation keys Flagger leaves alone on the Services
/// it manages (others may set them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnmanagedMetadata {
    pub labels: Vec<String>,
    pub annotations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomMetadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// `spec.service`. Flagger's CRD does not require it (a knative Canary has none): when it is
/// absent, `port` is 0 and [`Service::declared`] is false; every router aviary drives needs it,
/// which a rollout checks first ([`crate::spec::check_runnable`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    /// Apex service name; defaults to `targetRef.name`.
    pub name: String,
    /// 0 when `spec.service` is absent.
    pub port: u16,
    /// Defaults to `http`.
    pub port_name: String,
    /// Defaults to `port`.
    pub target_port: Option<IntOrString>,
    pub app_protocol: Option<String>,
    pub port_discovery: bool,
    pub timeout: Option<String>,
    pub gateways: Vec<String>,
    pub gateway_refs: Vec<GatewayRef>,
    pub hosts: Vec<String>,
    pub delegation: bool,
    /// Istio DestinationRule traffic policy, kept as JSON.
    pub traffic_policy: Option<serde_json::Value>,
    pub r#match: Vec<HttpMatch>,
    pub rewrite: Option<HttpRewrite>,
    pub retries: Option<HttpRetry>,
    pub headers: Option<Headers>,
    /// Istio CORS policy, kept as JSON.
    pub cors_policy: Option<serde_json::Value>,
    pub mesh_name: Option<String>,
    pub backends: Vec<String>,
    pub apex: Option<CustomMetadata>,
    pub primary: Option<CustomMetadata>,
    pub canary: Option<CustomMetadata>,
    /// Gateway API's backend request timeout (Flagger's gatewayapi router).
    pub backend_timeout: Option<String>,
    /// Headless primary and canary Services (Flagger's Service reconciler).
    pub headless: bool,
    /// The Services' `trafficDistribution` (`PreferClose`, `PreferSameZone`, `PreferSameNode`).
    pub traffic_distribution: Option<String>,
    pub mirror: Vec<MirrorBackend>,
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
    /// `aviary.dev/v1alpha1` only: host names that always reach the canary (`<svc>-canary`),
    /// whatever the split of the main hosts: a preview `HTTPRoute` (gatewayapi and the providers
    /// routed by it, on the Gateways of `gatewayRefs`), `VirtualService` (istio) or `Ingress`
    /// (nginx), named `<svc>-preview` (`<ingress>-preview` for nginx).
    pub preview_hosts: Vec<String>,
}

impl Service {
    /// Whether the Canary has a `spec.service` (Flagger's CRD lets a Canary leave it out).
    pub fn declared(&self) -> bool {
        self.port != 0
    }
}

/// `analysis.metrics[].thresholdRange`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ThresholdRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The two metrics Flagger computes itself when a metric has neither `templateRef` nor `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinMetric {
    /// `request-success-rate`: percentage of non-5xx responses.
    RequestSuccessRate,
    /// `request-duration`: P99 latency in milliseconds.
    RequestDuration,
}

impl BuiltinMetric {
    pub const NAMES: [&'static str; 2] = ["request-success-rate", "request-duration"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "request-success-rate" => Some(BuiltinMetric::RequestSuccessRate),
            "request-duration" => Some(BuiltinMetric::RequestDuration),
            _ => None,
        }
    }
}

/// What a metric check queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricSource {
    Builtin(BuiltinMetric),
    /// Deprecated inline PromQL (`query`).
    Query(String),
    /// A `MetricTemplate` reference, with its `templateVariables`.
    Template {
        template: ObjectRef,
        variables: BTreeMap<String, String>,
    },
}

/// `analysis.metrics[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// Query window; defaults to 1m as in Flagger.
    pub interval: Duration,
    /// The original interval text (`1m`), as templates receive it in `{{ interval }}`.
    pub interval_text: String,
    /// The accepted range. The deprecated `threshold` is folded in here: a minimum for
    /// `request-success-rate`, a maximum for every other metric, exactly as Flagger reads it.
    pub threshold_range: ThresholdRange,
    pub source: MetricSource,
}

/// The eight webhook types, with Flagger's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HookType {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl HookType {
    pub const ALL: [HookType; 8] = [
        HookType::ConfirmRollout,
        HookType::PreRollout,
        HookType::Rollout,
        HookType::ConfirmTrafficIncrease,
        HookType::ConfirmPromotion,
        HookType::PostRollout,
        HookType::Rollback,
        HookType::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Rollback => "rollback",
            HookType::Event => "event",
        }
    }

    /// Parses Flagger's spelling; an empty type means `rollout`, as in Flagger.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return Some(HookType::Rollout);
        }
        HookType::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl std::fmt::Display for HookType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `analysis.webhooks[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub name: String,
    pub hook_type: HookType,
    pub url: String,
    /// Defaults to 10s, as in Flagger.
    pub timeout: Duration,
    pub retries: u32,
    pub mute_alert: bool,
    pub metadata: BTreeMap<String, String>,
    /// `disableTLS`: Flagger skips the verification of the webhook's TLS certificate.
    pub disable_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub name: String,
    /// `info` (default), `warn` or `error`.
    pub severity: String,
    pub provider_ref: ObjectRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAffinity {
    pub cookie_name: String,
    /// Seconds; defaults to 86400.
    pub max_age: u32,
    pub primary_cookie_name: Option<String>,
    /// The cookie's attributes, as Flagger's CRD has them.
    pub domain: Option<String>,
    pub http_only: bool,
    pub partitioned: bool,
    pub path: Option<String>,
    /// `Strict`, `Lax` or `None`.
    pub same_site: Option<String>,
    pub secure: bool,
}

/// `spec.analysis` (or the deprecated `spec.canaryAnalysis`), defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Defaults to 60s. Flagger raises anything below 10s to 10s; `aviary.dev/v1alpha1` allows down to 1s.
    pub interval: Duration,
    /// Failed checks that trigger a rollback; defaults to 1 (Flagger's `GetAnalysisThreshold`).
    pub threshold: u32,
    /// 0 means "not set" (Flagger's zero value); the engine uses `max_weight()`.
    pub max_weight: u32,
    pub step_weight: u32,
    pub step_weights: Vec<u32>,
    pub step_weight_promotion: u32,
    pub iterations: u32,
    pub mirror: bool,
    pub mirror_weight: Option<u32>,
    /// Percent of primary pods that must be available; defaults to 100.
    pub primary_ready_threshold: u32,
    /// Percent of canary pods that must be available; defaults to 100.
    pub canary_ready_threshold: u32,
    pub alerts: Vec<Alert>,
    pub metrics: Vec<Metric>,
    pub webhooks: Vec<Webhook>,
    pub r#match: Vec<HttpMatch>,
    pub session_affinity: Option<SessionAffinity>,
    /// `aviary.dev/v1alpha1` only: the statistical judge, checked after the other metrics.
    pub judge: Option<JudgeSpec>,
}

/// How a judged metric is compared (see `crate::analysis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JudgeKind {
    /// Latency, from a histogram (slow requests, judged like errors) or per-step values
    /// (Mann-Whitney U); higher is worse.
    Latency,
    /// Error and request counts per step; a higher error rate is worse (sequential rate test,
    /// or the exact conditional test over the window).
    ErrorRate,
    /// Per-step values where an increase is worse.
    Increase,
    /// Per-step values where a decrease is worse.
    Decrease,
}

impl JudgeKind {
    pub const NAMES: [&'static str; 4] = ["latency", "error-rate", "increase", "decrease"];

    /// The name as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeKind::Latency => "latency",
            JudgeKind::ErrorRate => "error-rate",
            JudgeKind::Increase => "increase",
            JudgeKind::Decrease => "decrease",
        }
    }
}

impl JudgeMetric {
    /// How the judge classifies this metric (the pure analysis' configuration).
    pub fn config(&self) -> crate::analysis::MetricConfig {
        use crate::analysis::{Direction, Measure};
        let kind = match self.kind {
            JudgeKind::Latency => Measure::Latency,
            JudgeKind::ErrorRate => Measure::ErrorRate,
            JudgeKind::Increase => Measure::Generic {
                direction: Direction::Increase,
            },
            JudgeKind::Decrease => Measure::Generic {
                direction: Direction::Decrease,
            },
        };
        let mut config = crate::analysis::MetricConfig::new(self.name.clone(), kind);
        config.critical = self.critical;
        config.weight = self.weight;
        config.alpha = self.alpha;
        config.effect_floor = self.effect_floor;
        config.min_samples = usize::try_from(self.min_samples).unwrap_or(usize::MAX);
        config.min_requests = self.min_requests;
        config.quantile = self.quantile;
        config
    }
}

/// One metric of the statistical judge. Queries may use `{{ workload }}`, which is the canary's
/// Deployment for the canary sample and `<target>-primary` for the baseline, besides the usual
/// template variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeMetric {
    pub name: String,
    pub kind: JudgeKind,
    /// Range query for value kinds.
    pub query: Option<String>,
    /// For `latency`: bucket counts per `le` over `{{ interval }}` (e.g.
    /// `sum(increase(..._bucket{...}[{{ interval }}])) by (le)`), judged as the share of
    /// requests slower than the pooled `quantile`'s bucket.
    pub histogram_query: Option<String>,
    /// The quantile of `histogram_query` (default 0.9).
    pub quantile: f64,
    /// For `error-rate`: errors and requests over `{{ interval }}` (the step), as range queries.
    pub errors_query: Option<String>,
    pub total_query: Option<String>,
    pub critical: bool,
    pub weight: f64,
    pub alpha: f64,
    pub effect_floor: f64,
    pub min_samples: u32,
    pub min_requests: u64,
}

/// `analysis.judge` (aviary.dev/v1alpha1): compare canary against primary, Kayenta-style,
/// sequentially over the release or over a fixed window (`crate::analysis::history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeSpec {
    /// Sequential (default) or fixed-window.
    pub method: crate::analysis::Method,
    /// How far back the samples reach; defaults to 5m.
    pub window: Duration,
    pub window_text: String,
    /// Resolution of range queries; defaults to 30s.
    pub step: Duration,
    /// How much of the primary's history before the analysis the sequential tests add to the
    /// primary's side (while its rate during the release stays that of its history); defaults
    /// to 1h, `0s` for none.
    pub baseline: Duration,
    /// The metrics provider the judge's queries go to (`provider`, a MetricTemplate's
    /// `spec.provider` block, its `secretRef` in the Canary's namespace); `None`: the Canary's
    /// Prometheus (`metricsServer`, else the run's).
    pub provider: Option<MetricProvider>,
    /// Score at or above which the judge passes; defaults to 95.
    pub pass_score: f64,
    /// Score at or above which the result is marginal (still a failed check); defaults to 75.
    pub marginal_score: f64,
    pub metrics: Vec<JudgeMetric>,
}

impl JudgeSpec {
    /// Whole steps of the primary's history before the analysis that the judge reads: those in
    /// `baseline` for the sequential method, none for the fixed window.
    pub fn baseline_steps(&self) -> usize {
        if self.method != crate::analysis::Method::Sequential {
            return 0;
        }
        let step = self.step.as_millis().max(1);
        usize::try_from(self.baseline.as_millis() / step).unwrap_or(usize::MAX)
    }

    /// The scores the judgement is read against.
    pub fn config(&self) -> crate::analysis::JudgeConfig {
        crate::analysis::JudgeConfig {
            pass_score: self.pass_score,
            marginal_score: self.marginal_score,
        }
    }
}

impl Analysis {
    /// The highest canary weight, as Flagger computes it: the last `stepWeights` entry when there are
    /// step weights (capped at 100), else `maxWeight`, else 100.
    pub fn max_weight(&self) -> u32 {
        match self.step_weights.last() {
            Some(last) => (*last).min(100),
            None if self.max_weight > 0 => self.max_weight,
            None => 100,
        }
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            interval: Duration::from_secs(60),
            threshold: 1,
            max_weight: 0,
            step_weight: 0,
            step_weights: Vec::new(),
            step_weight_promotion: 0,
            iterations: 0,
            mirror: false,
            mirror_weight: None,
            primary_ready_threshold: 100,
            canary_ready_threshold: 100,
            alerts: Vec::new(),
            metrics: Vec::new(),
            webhooks: Vec::new(),
            r#match: Vec::new(),
            session_affinity: None,
            judge: None,
        }
    }
}

/// The traffic provider (`spec.provider`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    /// `kubernetes`: no traffic shifting; Flagger runs blue/green (and so does aviary).
    Kubernetes,
    /// `kubernetes:replicas` (aviary.dev/v1alpha1 only): no mesh; one Service selects both
    /// workloads and the canary weight becomes a split of the replicas.
    KubernetesReplicas,
    Istio,
    Gloo,
    Nginx,
    /// `gatewayapi` or `gatewayapi:v1` / `gatewayapi:v1beta1`.
    GatewayApi,
    /// `linkerd` (2.12+): Flagger writes an SMI TrafficSplit; aviary writes the Gateway API
    /// HTTPRoute Linkerd implements, attached to the apex Service (GAMMA) unless
    /// `service.gatewayRefs` names its parents.
    Linkerd,
    /// `kuma`: Flagger writes a Kuma TrafficRoute; aviary writes an HTTPRoute, attached to the
    /// apex Service (mesh traffic, GAMMA) or to the Kuma Gateways of `service.gatewayRefs`.
    Kuma,
    /// `contour`: Flagger writes a Contour HTTPProxy; aviary writes an HTTPRoute attached to the
    /// Gateways of `service.gatewayRefs` (Contour's Gateway API support).
    Contour,
    /// `traefik`: Flagger writes a weighted TraefikService; aviary writes an HTTPRoute attached to
    /// the Gateways of `service.gatewayRefs` (Traefik's Kubernetes Gateway provider).
    Traefik,
    /// Any other provider Flagger knows (appmesh, knative, apisix, skipper, osm, smi:*): parsed
    /// and kept, but aviary has no router for it: `rollout` refuses it.
    Other(String),
}

impl Provider {
    /// Whether aviary routes this provider with a Gateway API `HTTPRoute`.
    pub fn http_route(&self) -> bool {
        matches!(
            self,
            Provider::GatewayApi
                | Provider::Linkerd
                | Provider::Kuma
                | Provider::Contour
                | Provider::Traefik
        )
    }

    /// Whether the provider is a service mesh whose HTTPRoute may attach to the apex Service
    /// (GAMMA) instead of a Gateway.
    pub fn mesh(&self) -> bool {
        matches!(self, Provider::Linkerd | Provider::Kuma)
    }

    pub fn name(&self) -> &str {
        match self {
            Provider::Kubernetes => "kubernetes",
            Provider::KubernetesReplicas => "kubernetes:replicas",
            Provider::Istio => "istio",
            Provider::Gloo => "gloo",
            Provider::Nginx => "nginx",
            Provider::GatewayApi => "gatewayapi",
            Provider::Linkerd => "linkerd",
            Provider::Kuma => "kuma",
            Provider::Contour => "contour",
            Provider::Traefik => "traefik",
            Provider::Other(s) => s,
        }
    }
}

/// Why `provider` leaves `service.previewHosts` of `service` unrouted, if it does: a host
/// name needs a router that routes hosts (gatewayapi and the providers routed by it, istio,
/// nginx) and, for an HTTPRoute, a Gateway to attach to. `None` for a provider aviary does not
/// route at all (its own refusal says so) and when there are no preview hosts.
pub fn preview_gap(service: &Service, provider: &Provider) -> Option<(String, String)> {
    if service.preview_hosts.is_empty() {
        return None;
    }
    let name = provider.name();
    match provider {
        Provider::Kubernetes | Provider::KubernetesReplicas => Some((
            format!("service.previewHosts has no effect with provider {name}, which routes no host names"),
            "use provider gatewayapi, istio or nginx to reach the canary at its own host".into(),
        )),
        Provider::Gloo => Some((
            "service.previewHosts has no effect with provider gloo: aviary's gloo router writes no preview route".into(),
            "use provider gatewayapi, istio or nginx to reach the canary at its own host".into(),
        )),
        p if p.http_route() && service.gateway_refs.is_empty() => Some((
            format!("service.previewHosts has no effect with provider {name} and no spec.service.gatewayRefs: the preview HTTPRoute needs a Gateway that serves its host names"),
            "add `gatewayRefs: [{name: GATEWAY, namespace: GATEWAY_NAMESPACE}]` under spec.service".into(),
        )),
        _ => None,
    }
}

/// A `Canary` (`flagger.app/v1beta1` or `aviary.dev/v1alpha1`), decoded, defaulted and validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub api_version: ApiVersion,
    pub name: String,
    /// `metadata.namespace`, or `default` when absent (the CLI's `-n` overrides an absent one).
    pub namespace: String,
    pub namespace_explicit: bool,
    pub origin: Origin,
    /// `None` when `spec.provider` is absent: the host's default applies (Flagger's `-mesh-provider`).
    pub provider: Option<Provider>,
    /// `spec.provider` as written when it says more than [`Provider::name`] (`gatewayapi:v1`):
    /// Flagger names the provider that way in its "no values found" events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_written: Option<String>,
    pub metrics_server: Option<String>,
    pub target_ref: ObjectRef,
    pub autoscaler_ref: Option<AutoscalerRef>,
    pub ingress_ref: Option<ObjectRef>,
    pub route_ref: Option<ObjectRef>,
    pub upstream_ref: Option<ObjectRef>,
    pub service: Service,
    /// `None` when neither `analysis` nor `canaryAnalysis` is present.
    pub analysis: Option<Analysis>,
    /// Defaults to 600.
    pub progress_deadline_seconds: u32,
    pub skip_analysis: bool,
    pub revert_on_deletion: bool,
    pub suspend: bool,
}

impl Canary {
    /// `name.namespace`, the way Flagger names a canary in its events.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// `MetricTemplate.spec.provider`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetricProvider {
    /// `prometheus`, `datadog`, `cloudwatch`, ... (Flagger's spelling).
    pub provider_type: String,
    pub address: Option<String>,
    pub secret_ref: Option<ObjectRef>,
    pub insecure_skip_verify: bool,
    /// Provider-specific `region` (CloudWatch) and the like.
    pub region: Option<String>,
    /// Extra request headers. Flagger writes each as a list of values (`map[string][]string`);
    /// a header with several values is held as one value, the list joined with `", "`, which
    /// HTTP defines as the same header (RFC 9110, section 5.3). aviary also accepts a plain string.
    pub headers: BTreeMap<String, String>,
}

/// A `MetricTemplate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricTemplate {
    pub api_version: ApiVersion,
    pub name: String,
    pub namespace: String,
    pub origin: Origin,
    pub provider: MetricProvider,
    pub query: String,
}
