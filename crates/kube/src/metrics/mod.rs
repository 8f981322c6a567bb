//! Metric analysis: Flagger's built-in checks and MetricTemplates, queried through a
//! [`MetricsProvider`].
//!
//! - [`builtin_query`]: the PromQL of `request-success-rate` / `request-duration` per provider;
//! - [`render_template`]: a MetricTemplate's (or a deprecated inline `query`'s) placeholders;
//! - [`MetricsProvider`] (`provider.rs`): what a metrics backend answers (one number per query,
//!   whether it is online, and the series the statistical judge needs), and [`new_provider`],
//!   the one constructor, which dispatches on a MetricTemplate's `spec.provider.type`;
//! - [`PrometheusClient`] (`prometheus.rs`): the `prometheus` provider: instant and range
//!   queries, retries, auth;
//! - [`Evaluator`]: answers the engine's metric requests for one Canary; every query it makes,
//!   the judge's included, goes through a provider made by [`new_provider`].
//!
//! **Adding a provider** (Flagger also has CloudWatch, Graphite, InfluxDB, ...): one new file
//! here with a type implementing [`MetricsProvider`], made from a [`ProviderSpec`] (the
//! template's provider, its Secret's data, the metric's interval); an HTTP API goes through
//! `api::Api` (timeout per attempt, body cap, retries honouring `Retry-After`, credentials in
//! sensitive headers); and one arm in [`new_provider`] plus its name in [`SUPPORTED_TYPES`]. A
//! provider that cannot give series keeps the default [`MetricsProvider::query_range`], and the
//! judge then says so.
//!
//! Where a query goes: a built-in check or an inline `query` goes to the Canary's `metricsServer`,
//! else to the runner's default address; a MetricTemplate goes to its `provider.address`, else to
//! that same address. The runner's default credentials are only ever sent to the runner's default
//! address, never to an address a spec chose; a template's `secretRef` credentials only to that
//! template's address. Built-in checks, inline queries and the judge always use the `prometheus`
//! provider (`metricsServer` is a Prometheus); a template may name any type in
//! [`SUPPORTED_TYPES`]: `prometheus`, `datadog`, `newrelic`, `influxdb`, `dynatrace`,
//! `stackdriver`, `graphite`, `cloudwatch`, `keptn`, `externalmetrics`, `splunk`: every type
//! of Flagger's CRD. A template of another type without
//! an address goes to that provider's documented address (Datadog's `https://api.datadoghq.com`).

mod api;
mod builtin;
mod cloudwatch;
mod datadog;
mod dynatrace;
mod externalmetrics;
mod graphite;
mod influxdb;
mod judge;
mod keptn;
mod newrelic;
mod prometheus;
mod provider;
#[cfg(test)]
mod servers;
mod splunk;
mod stackdriver;
mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use builtin::builtin_query;
pub use prometheus::{Auth, PrometheusClient};
pub use provider::{new_provider, MetricsProvider, ProviderSpec, RangeSeries, SUPPORTED_TYPES};
pub use template::render_template;

use aviary_core::engine::MetricOutcome;
use aviary_core::spec::{
    Canary, MetricProvider, MetricSource, MetricTemplate, ObjectRef, Provider,
};

/// Per-attempt timeout of a query (Flagger's Prometheus client uses 5 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra attempts after a connection error, a timeout, a 5xx or a 429.
pub const DEFAULT_RETRIES: u32 = 2;

/// What a query template can refer to (Flagger's `MetricTemplateModel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricContext {
    /// The Canary's name (`{{ name }}`).
    pub name: String,
    /// The Canary's namespace (`{{ namespace }}`).
    pub namespace: String,
    /// `targetRef.name` (`{{ target }}`).
    pub target: String,
    /// The apex Service: `service.name`, else `targetRef.name` (`{{ service }}`).
    pub service: String,
    /// `ingressRef.name`, else `targetRef.name` (`{{ ingress }}`).
    pub ingress: String,
    /// `routeRef.name`, else `targetRef.name` (`{{ route }}`, as in current Flagger).
    pub route: String,
    /// The provider that picks the built-in queries.
    pub provider: Provider,
}

impl MetricContext {
    /// Flagger's `toMetricModel`.
    pub fn from_canary(c: &Canary, provider: &Provider) -> Self {
        let target = c.target_ref.name.clone();
        let or_target = |r: &Option<ObjectRef>| {
            r.as_ref()
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| target.clone())
        };
        let service = if c.service.name.is_empty() {
            target.clone()
        } else {
            c.service.name.clone()
        };
        MetricContext {
            name: c.name.clone(),
            namespace: c.namespace.clone(),
            target: target.clone(),
            service,
            ingress: or_target(&c.ingress_ref),
            route: or_target(&c.route_ref),
            provider: provider.clone(),
        }
    }
}

/// Why a metric has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricError {
    /// The query ran and found nothing usable (no series, NaN, ±Inf): a failed check.
    NoValues(String),
    /// The query could not be made or answered.
    Failed(String),
}

impl MetricError {
    pub fn message(&self) -> &str {
        match self {
            MetricError::NoValues(m) | MetricError::Failed(m) => m,
        }
    }

    fn context(self, prefix: &str) -> Self {
        match self {
            MetricError::NoValues(m) => MetricError::NoValues(format!("{prefix}: {m}")),
            MetricError::Failed(m) => MetricError::Failed(format!("{prefix}: {m}")),
        }
    }
}

impl std::fmt::Display for MetricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MetricError {}

impl From<MetricError> for MetricOutcome {
    fn from(e: MetricError) -> Self {
        match e {
            MetricError::NoValues(m) => MetricOutcome::NoValues(m),
            MetricError::Failed(m) => MetricOutcome::Error(m),
        }
    }
}

/// Answers metric requests for one Canary.
pub struct Evaluator {
    canary: Canary,
    ctx: MetricContext,
    templates: Vec<MetricTemplate>,
    client: Option<kube::Client>,
    default_address: Option<String>,
    default_auth: Auth,
    timeout: Duration,
    retries: u32,
    /// The provider for built-in checks, inline queries and the judge, made on first use.
    builtin: std::sync::OnceLock<Result<Arc<dyn MetricsProvider>, MetricError>>,
    /// The run's HTTP clients (shared by every canary of a release).
    http: crate::http::Clients,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("canary", &self.canary.qualified_name())
            .field("provider", &self.ctx.provider)
            .field("templates", &self.templates.len())
            .field("cluster", &self.client.is_some())
            .field("default_auth", &self.default_auth)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Evaluator {
    /// `templates`: MetricTemplates known locally (from the spec file or the rendered target);
    /// `client`: a kube client for the templates and `secretRef`s not known locally (`None`:
    /// none are looked up); `default_address`: the Prometheus for built-in checks and inline
    /// queries when the Canary has no `metricsServer`, and for templates without an address;
    /// `default_auth`: credentials for `default_address` only.
    pub fn new(
        canary: &Canary,
        provider: &Provider,
        templates: Vec<MetricTemplate>,
        client: Option<kube::Client>,
        default_address: Option<String>,
        default_auth: Auth,
    ) -> Self {
        Evaluator {
            canary: canary.clone(),
            ctx: MetricContext::from_canary(canary, provider),
            templates,
            client,
            default_address: default_address
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty()),
            default_auth,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            builtin: std::sync::OnceLock::new(),
            http: crate::http::Clients::default(),
        }
    }

    /// Sends through the run's shared `clients` (by default the evaluator has its own).
    pub fn with_clients(mut self, clients: crate::http::Clients) -> Self {
        self.http = clients;
        self
    }

    /// Overrides the per-attempt timeout and the number of retries (default 5 s and 2).
    pub fn with_timeout(mut self, timeout: Duration, retries: u32) -> Self {
        self.timeout = timeout;
        self.retries = retries;
        self.builtin = std::sync::OnceLock::new();
        self
    }

    pub fn context(&self) -> &MetricContext {
        &self.ctx
    }

    /// Uses `provider` for built-in checks, inline queries and the judge (tests of the seam).
    #[cfg(test)]
    fn with_builtin_provider(mut self, provider: Arc<dyn MetricsProvider>) -> Self {
        self.builtin = std::sync::OnceLock::from(Ok(provider));
        self
    }

    /// Queries the Canary's metric `metric_name` and returns the engine's answer. Never panics.
    /// The judge, asked this way, reads the latest window as if the analysis had begun before it.
    pub async fn evaluate(&self, metric_name: &str) -> MetricOutcome {
        self.evaluate_at(metric_name, None).await
    }

    /// [`evaluate`](Self::evaluate) for a request that says when the analysis of this revision
    /// began (`since`, Unix milliseconds): the judge reads the history from then on. Never
    /// panics.
    pub async fn evaluate_at(&self, metric_name: &str, since: Option<u64>) -> MetricOutcome {
        match self.value_at(metric_name, since).await {
            Ok(v) => MetricOutcome::Value(v),
            Err(e) => e.into(),
        }
    }

    /// The value of the Canary's metric `metric_name`.
    pub async fn value(&self, metric_name: &str) -> Result<f64, MetricError> {
        self.value_at(metric_name, None).await
    }

    /// The value of the Canary's metric `metric_name`, the analysis having begun at `since`
    /// (Unix milliseconds) if known.
    pub async fn value_at(
        &self,
        metric_name: &str,
        since: Option<u64>,
    ) -> Result<f64, MetricError> {
        if metric_name == aviary_core::engine::config::JUDGE_CHECK {
            if let Some(spec) = self.canary.analysis.as_ref().and_then(|a| a.judge.as_ref()) {
                return self.judge_score(spec, since).await;
            }
        }
        let metric = self
            .canary
            .analysis
            .as_ref()
            .and_then(|a| a.metrics.iter().find(|m| m.name == metric_name))
            .ok_or_else(|| {
                MetricError::Failed(format!(
                    "the Canary {} has no metric named {metric_name}",
                    self.canary.qualified_name()
                ))
            })?;
        let interval = if metric.interval_text.trim().is_empty() {
            "1m"
        } else {
            metric.interval_text.trim()
        };
        match &metric.source {
            MetricSource::Builtin(builtin) => {
                let query = builtin_query(*builtin, &self.ctx, interval)?;
                self.run(self.builtin_provider()?, metric_name, &query)
                    .await
            }
            MetricSource::Query(query) => {
                let query = render_template(query, &self.ctx, interval, &BTreeMap::new())
                    .map_err(|e| e.context(&format!("metric {metric_name}: query")))?;
                self.run(self.builtin_provider()?, metric_name, &query)
                    .await
            }
            MetricSource::Template {
                template,
                variables,
            } => {
                let namespace = template
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| self.canary.namespace.clone());
                let what = format!("MetricTemplate {}.{namespace}", template.name);
                let found = self.template(&template.name, &namespace).await?;
                let query = render_template(&found.query, &self.ctx, interval, variables)
                    .map_err(|e| e.context(&what))?;
                let provider = self
                    .template_provider(&found, &what, metric.interval)
                    .await?;
                self.run(provider.as_ref(), metric_name, &query).await
            }
        }
    }

    async fn run(
        &self,
        provider: &dyn MetricsProvider,
        metric: &str,
        query: &str,
    ) -> Result<f64, MetricError> {
        tracing::debug!(
            canary = %self.canary.qualified_name(),
            metric,
            provider = provider.kind(),
            endpoint = %provider.endpoint(),
            query = %template::collapse_whitespace(query),
            "querying the metrics provider"
        );
        let result = provider.query(query).await;
        match &result {
            Ok(value) => tracing::debug!(metric, value, "metric value"),
            Err(e) => tracing::debug!(metric, "metric query: {e}"),
        }
        result
    }

    /// The provider for built-in checks, inline queries and the judge: the Prometheus at
    /// `metricsServer`, else at the default address.
    fn builtin_provider(&self) -> Result<&dyn MetricsProvider, MetricError> {
        self.builtin
            .get_or_init(|| self.make_builtin_provider())
            .as_ref()
            .map(|p| p.as_ref())
            .map_err(Clone::clone)
    }

    fn make_builtin_provider(&self) -> Result<Arc<dyn MetricsProvider>, MetricError> {
        let address = match (&self.canary.metrics_server, &self.default_address) {
            (Some(server), _) if !server.trim().is_empty() => server.trim().to_string(),
            (_, Some(default)) => default.clone(),
            _ => {
                return Err(MetricError::Failed(format!(
                    "no Prometheus address for the Canary {}: set spec.metricsServer or give aviary a default Prometheus address",
                    self.canary.qualified_name()
                )))
            }
        };
        let auth = self.auth_for(&address);
        let spec = ProviderSpec::prometheus(&address, auth, self.timeout, self.retries);
        new_provider(&self.http, &spec)
    }

    /// The default credentials, if `address` is the default address.
    fn auth_for(&self, address: &str) -> Auth {
        let same =
            |a: &str, b: &str| a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/');
        match &self.default_address {
            Some(default) if same(default, address) => self.default_auth.clone(),
            _ => Auth::None,
        }
    }

    /// The MetricTemplate `name` in `namespace`: a local one with that name and namespace, else
    /// the only local one with that name (a template in a file often has no namespace), else the
    /// cluster's.
    async fn template(&self, name: &str, namespace: &str) -> Result<MetricTemplate, MetricError> {
        if let Some(t) = self
            .templates
            .iter()
            .find(|t| t.name == name && t.namespace == namespace)
        {
            return Ok(t.clone());
        }
        let mut by_name = self.templates.iter().filter(|t| t.name == name);
        if let (Some(t), None) = (by_name.next(), by_name.next()) {
            return Ok(t.clone());
        }
        let Some(client) = &self.client else {
            return Err(MetricError::Failed(format!(
                "MetricTemplate {name}.{namespace} not found: it is not in the spec files and no cluster is available"
            )));
        };
        fetch_template(client, name, namespace).await
    }

    /// The provider a MetricTemplate names, made by [`new_provider`], for a metric of this
    /// `interval`.
    async fn template_provider(
        &self,
        template: &MetricTemplate,
        what: &str,
        interval: Duration,
    ) -> Result<Arc<dyn MetricsProvider>, MetricError> {
        let provider = &template.provider;
        // Before the Secret is read: an unsupported type is the error to report.
        let kind = provider::check_type(&provider.provider_type).map_err(|e| e.context(what))?;
        let address = provider
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string);
        // A Prometheus template without an address queries the run's Prometheus; the other
        // providers have a documented address of their own.
        let address = match (kind, address) {
            ("prometheus", None) => match &self.default_address {
                Some(default) => Some(default.clone()),
                None => {
                    return Err(MetricError::Failed(format!(
                    "{what} has no provider.address and aviary has no default Prometheus address"
                )))
                }
            },
            (_, address) => address,
        };
        let secret = match &provider.secret_ref {
            Some(secret) => Some(self.secret_data(template, &secret.name, what).await?),
            None => None,
        };
        let auth = match (kind, &secret, &address) {
            ("prometheus", Some(data), _) => {
                Auth::from_secret_data(kind, data).map_err(|e| e.context(what))?
            }
            ("prometheus", None, Some(address)) => self.auth_for(address),
            _ => Auth::None,
        };
        let spec = ProviderSpec {
            kind: kind.to_string(),
            address,
            auth,
            secret: secret.unwrap_or_default(),
            headers: provider.headers.clone(),
            region: provider.region.clone(),
            interval,
            insecure_skip_verify: provider.insecure_skip_verify,
            cluster: self.client.clone(),
            timeout: self.timeout,
            retries: self.retries,
        };
        new_provider(&self.http, &spec).map_err(|e| e.context(what))
    }

    /// The judge's own provider (`analysis.judge.provider`): made as a template's, its Secret
    /// in the Canary's namespace.
    pub(crate) async fn judge_provider(
        &self,
        provider: &MetricProvider,
        step: Duration,
    ) -> Result<Arc<dyn MetricsProvider>, MetricError> {
        let template = MetricTemplate {
            api_version: self.canary.api_version,
            name: format!("{}-judge", self.canary.name),
            namespace: self.canary.namespace.clone(),
            origin: self.canary.origin.clone(),
            provider: provider.clone(),
            query: String::new(),
        };
        let what = format!("the judge's provider ({})", provider.provider_type);
        self.template_provider(&template, &what, step).await
    }

    /// The data of the template's Secret (in the template's namespace, as Flagger reads it).
    async fn secret_data(
        &self,
        template: &MetricTemplate,
        secret: &str,
        what: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, MetricError> {
        let namespace = &template.namespace;
        let Some(client) = &self.client else {
            return Err(MetricError::Failed(format!(
                "{what}: its credentials are in the Secret {secret}.{namespace}, and no cluster is available to read it"
            )));
        };
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client.clone(), namespace);
        let lookup = format!("read Secret {secret}.{namespace}");
        let found = crate::cluster::retry(&lookup, || api.get_opt(secret))
            .await
            .map_err(|e| MetricError::Failed(format!("{what}: {e}")))?;
        let Some(found) = found else {
            return Err(MetricError::Failed(format!(
                "{what}: Secret {secret}.{namespace} not found"
            )));
        };
        Ok(found
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }
}

/// Reads `flagger.app/v1beta1` MetricTemplate `name` from the cluster.
async fn fetch_template(
    client: &kube::Client,
    name: &str,
    namespace: &str,
) -> Result<MetricTemplate, MetricError> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("flagger.app", "v1beta1", "MetricTemplate");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "metrictemplates");
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), namespace, &resource);
    let what = format!("read MetricTemplate {name}.{namespace}");
    let found = crate::cluster::retry(&what, || api.get_opt(name))
        .await
        .map_err(|e| MetricError::Failed(e.to_string()))?;
    let Some(object) = found else {
        return Err(MetricError::Failed(format!(
            "MetricTemplate {name}.{namespace} not found"
        )));
    };
    template_from_json(name, namespace, &object.data)
}

/// A MetricTemplate from its JSON (`spec.provider` and `spec.query`).
fn template_from_json(
    name: &str,
    namespace: &str,
    data: &serde_json::Value,
) -> Result<MetricTemplate, MetricError> {
    use serde_json::Value;
    let spec = data.get("spec").unwrap_or(&Value::Null);
    let provider = spec.get("provider").unwrap_or(&Value::Null);
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    };
    let Some(query) = text(spec, "query") else {
        return Err(MetricError::Failed(format!(
            "MetricTemplate {name}.{namespace} has no spec.query"
        )));
    };
    let headers = provider
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| header_value(v).map(|v| (k.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    let secret_ref = provider
        .get("secretRef")
        .and_then(|s| text(s, "name"))
        .map(|name| ObjectRef {
            name,
            ..ObjectRef::default()
        });
    Ok(MetricTemplate {
        api_version: aviary_core::spec::ApiVersion::FlaggerV1beta1,
        name: name.to_string(),
        namespace: namespace.to_string(),
        origin: aviary_core::spec::Origin {
            file: format!("cluster:metrictemplates/{namespace}/{name}"),
            line: 0,
        },
        provider: MetricProvider {
            provider_type: text(provider, "type").unwrap_or_else(|| "prometheus".to_string()),
            address: text(provider, "address"),
            secret_ref,
            insecure_skip_verify: provider
                .get("insecureSkipVerify")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            region: text(provider, "region"),
            headers,
        },
        query,
    })
}

/// A `spec.provider.headers` value: Flagger's list of values (`map[string][]string`), sent as one
/// header whose values are joined with `", "` (the same header for HTTP, RFC 9110 section 5.3),
/// as the file reader holds it; or aviary's plain string. `None` for no value at all.
fn header_value(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(values) => {
            let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            (!values.is_empty()).then(|| values.join(", "))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_core::spec::decode::decode_documents;

    const CANARY: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: nginx
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo-deploy
  ingressRef:
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    name: podinfo-ing
  service:
    name: podinfo-svc
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
    - name: error-rate
      templateRef:
        name: error-rate
      templateVariables:
        code: "5.*"
      thresholdRange:
        max: 1
    - name: missing
      templateRef:
        name: nowhere
      thresholdRange:
        max: 1
"#;

    fn canary(text: &str) -> Canary {
        match decode_documents("canary.yaml", text) {
            Ok(mut d) if !d.canaries.is_empty() => d.canaries.remove(0),
            Ok(_) => panic!("no canary"),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn the_context_is_flaggers_metric_model() {
        let c = canary(CANARY);
        let ctx = MetricContext::from_canary(&c, &Provider::Nginx);
        assert_eq!(ctx.name, "podinfo");
        assert_eq!(ctx.namespace, "test");
        assert_eq!(ctx.target, "podinfo-deploy");
        assert_eq!(ctx.service, "podinfo-svc");
        assert_eq!(ctx.ingress, "podinfo-ing");
        assert_eq!(ctx.route, "podinfo-deploy");
        let plain = canary(&CANARY.replace(
            "  ingressRef:\n    apiVersion: networking.k8s.io/v1\n    kind: Ingress\n    name: podinfo-ing\n",
            "",
        ));
        let ctx = MetricContext::from_canary(&plain, &Provider::Istio);
        assert_eq!(ctx.ingress, "podinfo-deploy");
        assert_eq!(ctx.provider, Provider::Istio);
    }

    #[tokio::test]
    async fn evaluation_errors_are_outcomes_not_panics() {
        let c = canary(CANARY);
        let e = Evaluator::new(&c, &Provider::Nginx, Vec::new(), None, None, Auth::None);
        match e.evaluate("nope").await {
            MetricOutcome::Error(m) => assert!(m.contains("no metric named nope"), "{m}"),
            other => panic!("{other:?}"),
        }
        match e.evaluate("request-success-rate").await {
            MetricOutcome::Error(m) => assert!(m.contains("no Prometheus address"), "{m}"),
            other => panic!("{other:?}"),
        }
        match e.evaluate("missing").await {
            MetricOutcome::Error(m) => {
                assert!(m.contains("MetricTemplate nowhere.test not found"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn templates_with_unsupported_providers_or_unread_secrets_are_errors() {
        let c = canary(CANARY);
        let mut t = MetricTemplate {
            api_version: aviary_core::spec::ApiVersion::FlaggerV1beta1,
            name: "error-rate".into(),
            namespace: "test".into(),
            origin: aviary_core::spec::Origin {
                file: "t.yaml".into(),
                line: 1,
            },
            provider: MetricProvider {
                provider_type: "sumologic".into(),
                address: Some("http://127.0.0.1:1".into()),
                ..MetricProvider::default()
            },
            query: "sum(x{code=~\"{{ variables.code }}\"})".into(),
        };
        let e = Evaluator::new(
            &c,
            &Provider::Nginx,
            vec![t.clone()],
            None,
            None,
            Auth::None,
        );
        match e.evaluate("error-rate").await {
            MetricOutcome::Error(m) => assert!(m.contains("sumologic is not supported"), "{m}"),
            other => panic!("{other:?}"),
        }
        // The type is checked before the credentials are looked for.
        let mut secret = t.clone();
        secret.provider.secret_ref = Some(ObjectRef {
            name: "dd-auth".into(),
            ..ObjectRef::default()
        });
        let e = Evaluator::new(&c, &Provider::Nginx, vec![secret], None, None, Auth::None);
        match e.evaluate("error-rate").await {
            MetricOutcome::Error(m) => assert!(
                m.starts_with(
                    "MetricTemplate error-rate.test: metric provider type sumologic is not supported"
                ) && m.ends_with(&format!("supported types: {}", SUPPORTED_TYPES.join(", "))),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        // A supported type without its credentials says which Secret key it needs.
        t.provider.provider_type = "datadog".into();
        let e = Evaluator::new(
            &c,
            &Provider::Nginx,
            vec![t.clone()],
            None,
            None,
            Auth::None,
        );
        match e.evaluate("error-rate").await {
            MetricOutcome::Error(m) => assert_eq!(
                m,
                "MetricTemplate error-rate.test: datadog needs a Datadog API key: set spec.provider.secretRef to a Secret with the key datadog_api_key"
            ),
            other => panic!("{other:?}"),
        }
        t.provider.provider_type = "prometheus".into();
        t.provider.secret_ref = Some(ObjectRef {
            name: "prom-auth".into(),
            ..ObjectRef::default()
        });
        let e = Evaluator::new(
            &c,
            &Provider::Nginx,
            vec![t.clone()],
            None,
            None,
            Auth::None,
        );
        match e.evaluate("error-rate").await {
            MetricOutcome::Error(m) => {
                assert!(
                    m.contains("Secret prom-auth.test") && m.contains("no cluster"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        t.query = "sum(x{code=~\"{{ variables.status }}\"})".into();
        t.provider.secret_ref = None;
        let e = Evaluator::new(&c, &Provider::Nginx, vec![t], None, None, Auth::None);
        match e.evaluate("error-rate").await {
            MetricOutcome::Error(m) => {
                assert!(m.starts_with("MetricTemplate error-rate.test: "), "{m}");
                assert!(m.contains("`status`"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The runner may spawn evaluations: the evaluator is shareable and its futures are `Send`.
    #[test]
    fn evaluations_can_be_spawned() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let c = canary(CANARY);
        let e = Evaluator::new(&c, &Provider::Nginx, Vec::new(), None, None, Auth::None);
        send_sync(&e);
        send(&e.evaluate("request-success-rate"));
    }

    #[test]
    fn default_credentials_go_only_to_the_default_address() {
        let c = canary(CANARY);
        let e = Evaluator::new(
            &c,
            &Provider::Nginx,
            Vec::new(),
            None,
            Some("https://prom.example/".into()),
            Auth::Bearer("t".into()),
        );
        assert_eq!(e.auth_for("https://prom.example"), Auth::Bearer("t".into()));
        assert_eq!(e.auth_for("https://elsewhere.example"), Auth::None);
    }

    /// A provider that is not Prometheus: answers every instant query with `value` and records
    /// the queries; keeps the default `query_range`.
    #[derive(Debug)]
    struct Fixed {
        value: f64,
        queries: std::sync::Mutex<Vec<String>>,
    }

    impl Fixed {
        fn new(value: f64) -> Arc<Self> {
            Arc::new(Fixed {
                value,
                queries: std::sync::Mutex::new(Vec::new()),
            })
        }

        fn queries(&self) -> Vec<String> {
            self.queries.lock().map(|q| q.clone()).unwrap_or_default()
        }
    }

    impl MetricsProvider for Fixed {
        fn kind(&self) -> &'static str {
            "fixed"
        }

        fn endpoint(&self) -> &str {
            "fixed://test"
        }

        fn query<'a>(
            &'a self,
            query: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<f64, MetricError>> {
            if let Ok(mut q) = self.queries.lock() {
                q.push(query.to_string());
            }
            Box::pin(futures::future::ready(Ok(self.value)))
        }

        fn is_online(&self) -> futures::future::BoxFuture<'_, Result<(), MetricError>> {
            Box::pin(futures::future::ready(Ok(())))
        }
    }

    #[tokio::test]
    async fn the_evaluator_answers_through_its_provider() {
        let c = canary(CANARY);
        let fixed = Fixed::new(99.5);
        let e = Evaluator::new(&c, &Provider::Nginx, Vec::new(), None, None, Auth::None)
            .with_builtin_provider(fixed.clone());
        assert_eq!(
            e.evaluate("request-success-rate").await,
            MetricOutcome::Value(99.5)
        );
        let expected = builtin_query(
            aviary_core::spec::BuiltinMetric::RequestSuccessRate,
            e.context(),
            "1m",
        );
        assert_eq!(fixed.queries(), vec![expected.unwrap_or_default()]);
    }

    const JUDGED: &str = r#"
apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
  analysis:
    interval: 1m
    stepWeight: 10
    judge:
      window: 10m
      step: 30s
      metrics:
        - name: errors
          kind: error-rate
          errorsQuery: 'sum(errors{pod=~"{{ workload }}-.*"})'
          totalQuery: 'sum(total{pod=~"{{ workload }}-.*"})'
        - name: p99-latency
          kind: latency
          query: 'latency{pod=~"{{ workload }}-.*"}'
"#;

    #[tokio::test]
    async fn the_judge_says_when_its_provider_cannot_give_series() {
        let c = canary(JUDGED);
        let fixed = Fixed::new(3.0);
        let e = Evaluator::new(
            &c,
            &Provider::GatewayApi,
            Vec::new(),
            None,
            None,
            Auth::None,
        )
        .with_builtin_provider(fixed.clone());
        match e.evaluate(aviary_core::engine::config::JUDGE_CHECK).await {
            MetricOutcome::Error(m) => {
                assert!(m.contains("judge needs series"), "{m}");
                assert!(m.contains("metric provider fixed"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // Every judged metric, error counts included, is read as series: no instant query ran.
        let queries = fixed.queries();
        assert!(queries.is_empty(), "{queries:?}");
    }

    /// A render API answering each target with a datapoint every 30 s over the last 10 minutes:
    /// the canary's errors with `canary_errors`, the primary's with 0, requests with 1000.
    struct Render {
        canary_errors: f64,
        now: u64,
    }

    impl wiremock::Respond for Render {
        fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
            let target = request
                .url
                .query_pairs()
                .find(|(k, _)| k == "target")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let value = match target.as_str() {
                "seriesByTag('name=errors','workload=podinfo')" => self.canary_errors,
                t if t.contains("name=errors") => 0.0,
                _ => 1000.0,
            };
            let points: Vec<serde_json::Value> = (0..20u64)
                .map(|k| serde_json::json!([value, self.now - 30 * k]))
                .collect();
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!([
                {"target": target, "tags": {"name": target}, "datapoints": points}
            ]))
        }
    }

    /// `analysis.judge.provider` sends the judge's range queries to that provider (here a
    /// Graphite render API), not to the Canary's Prometheus (this Canary has none).
    #[tokio::test]
    async fn the_judge_queries_its_own_provider() {
        let server = wiremock::MockServer::start().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let text = |address: &str| {
            format!(
                r#"
apiVersion: aviary.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  provider: gatewayapi
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 9898
  analysis:
    interval: 1m
    stepWeight: 10
    judge:
      method: fixed-window
      window: 10m
      step: 30s
      provider:
        type: graphite
        address: {address}
      metrics:
        - name: errors
          kind: error-rate
          errorsQuery: "target=seriesByTag('name=errors','workload={{{{ workload }}}}')"
          totalQuery: "target=seriesByTag('name=requests','workload={{{{ workload }}}}')"
"#
            )
        };
        let c = canary(&text(&server.uri()));
        for (canary_errors, passes) in [(0.0, true), (100.0, false)] {
            server.reset().await;
            wiremock::Mock::given(wiremock::matchers::path("/render"))
                .respond_with(Render { canary_errors, now })
                .mount(&server)
                .await;
            let e = Evaluator::new(
                &c,
                &Provider::GatewayApi,
                Vec::new(),
                None,
                None,
                Auth::None,
            )
            .with_timeout(Duration::from_secs(5), 0);
            match e.evaluate(aviary_core::engine::config::JUDGE_CHECK).await {
                MetricOutcome::Value(score) => {
                    assert_eq!(score >= 95.0, passes, "{canary_errors}: score {score}")
                }
                other => panic!("{canary_errors}: {other:?}"),
            }
            let asked = server.received_requests().await.unwrap_or_default();
            assert!(
                asked
                    .iter()
                    .all(|r| r.url.path() == "/render"
                        && r.url.query_pairs().any(|(k, _)| k == "until")),
                "{asked:?}"
            );
        }
    }

    /// Built-in checks and templates reach a real HTTP endpoint through the factory's provider.
    #[tokio::test]
    async fn the_factory_built_provider_queries_prometheus_over_http() {
        use wiremock::matchers::{method, path, query_param};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let answer = |v: &str| {
            ResponseTemplate::new(200).set_body_string(format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
            ))
        };
        Mock::given(method("GET"))
            .and(path("/prefix/api/v1/query"))
            .and(query_param("query", "sum(x{code=~\"5.*\"})"))
            .respond_with(answer("0.5"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/prefix/api/v1/query"))
            .respond_with(answer("99.9"))
            .mount(&server)
            .await;
        let c = canary(CANARY);
        let template = MetricTemplate {
            api_version: aviary_core::spec::ApiVersion::FlaggerV1beta1,
            name: "error-rate".into(),
            namespace: "test".into(),
            origin: aviary_core::spec::Origin {
                file: "t.yaml".into(),
                line: 1,
            },
            provider: MetricProvider::default(),
            query: "sum(x{code=~\"{{ variables.code }}\"})".into(),
        };
        let e = Evaluator::new(
            &c,
            &Provider::Nginx,
            vec![template],
            None,
            Some(format!("{}/prefix/", server.uri())),
            Auth::None,
        )
        .with_timeout(Duration::from_secs(2), 0);
        assert_eq!(
            e.evaluate("request-success-rate").await,
            MetricOutcome::Value(99.9)
        );
        assert_eq!(e.evaluate("error-rate").await, MetricOutcome::Value(0.5));
    }

    #[test]
    fn cluster_templates_are_read_from_json() {
        let data = serde_json::json!({
            "spec": {
                "provider": {
                    "type": "prometheus",
                    "address": "http://prom:9090",
                    "secretRef": {"name": "auth"},
                    "insecureSkipVerify": true,
                    "headers": {
                        "X-Scope-OrgID": "tenant",
                        "X-Flagger-Form": ["a", "b"],
                        "X-One": ["only"],
                        "X-None": []
                    }
                },
                "query": "vector(1)"
            }
        });
        match template_from_json("t", "ns", &data) {
            Ok(t) => {
                assert_eq!(t.query, "vector(1)");
                assert_eq!(t.provider.address.as_deref(), Some("http://prom:9090"));
                assert_eq!(
                    t.provider.secret_ref.map(|s| s.name).as_deref(),
                    Some("auth")
                );
                assert!(t.provider.insecure_skip_verify);
                assert_eq!(
                    t.provider.headers.get("X-Scope-OrgID").map(String::as_str),
                    Some("tenant")
                );
                // Flagger's form, a list of values per header: every value is sent.
                assert_eq!(
                    t.provider.headers.get("X-Flagger-Form").map(String::as_str),
                    Some("a, b")
                );
                assert_eq!(
                    t.provider.headers.get("X-One").map(String::as_str),
                    Some("only")
                );
                assert!(!t.provider.headers.contains_key("X-None"));
            }
            Err(e) => panic!("{e}"),
        }
        assert!(template_from_json("t", "ns", &serde_json::json!({"spec": {}})).is_err());
    }
}
