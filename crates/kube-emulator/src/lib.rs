//! An in-process Kubernetes API server emulator for tests.
//!
//! [`Emulator`] serves the Kubernetes REST API over plain HTTP on `127.0.0.1` so that an
//! unmodified client (kube-rs, kubectl, client-go) can talk to it through a kubeconfig from
//! [`Emulator::kubeconfig_yaml`]. It covers what a progressive-delivery tool needs:
//!
//! * discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`, and the
//!   aggregated discovery documents when asked for them),
//! * GET, LIST (label and field selectors, `limit`/`continue`), CREATE, UPDATE, DELETE,
//!   DELETE collection, the `/status` subresource, `dryRun=All`,
//! * PATCH: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch for
//!   the built-in types (415 for custom resources, as the real server answers), and
//!   server-side apply,
//! * WATCH as a chunked stream of JSON lines, with bookmarks, `sendInitialEvents`, selector
//!   transitions (an object leaving a selector is DELETED for that watch) and `410 Gone`
//!   when the requested resourceVersion is older than the kept event history,
//! * bookkeeping: one global resourceVersion, uid, creationTimestamp, generation,
//!   `metadata.managedFields`, finalizers (deletion waits for them), garbage collection of
//!   dependents through `ownerReferences`, defaulting and validation of the types below,
//! * simulated controllers: Deployments become available after a delay (or never, on
//!   request, ending in `ProgressDeadlineExceeded`), HTTPRoutes get `Accepted` and
//!   `ResolvedRefs` parent statuses; they work on what was written since they last found
//!   nothing to do, and the deployment controller (ReplicaSets and Pods) gives way for up to
//!   50 ms to requests being answered, as a real API server's controllers, in processes of
//!   their own, do not hold its requests up,
//! * a request log with each request's arrival and the time its answer took ([`RequestRecord`]),
//! * `apiextensions.k8s.io/v1` CustomResourceDefinitions: the custom types (built-in list and
//!   [`Config::extra_resources`]) are served as established CRDs, and creating or deleting a
//!   CRD starts or stops serving its type,
//! * what `kubectl get` needs: discovery (legacy and aggregated) lists `shortNames`,
//!   `categories` and `singularName` as the real server does (the real CRDs' names for the
//!   default custom types, a created CRD's own), and GET, LIST and WATCH answer
//!   `meta.k8s.io` `Table`s (v1, or v1beta1) when the `Accept` header asks for them, with
//!   `includeObject`, the real printer columns and cells of the built-in types (Pods' READY,
//!   STATUS, RESTARTS, ...; ages as `3m2s`), and for custom resources the served version's
//!   `additionalPrinterColumns` (a JSONPath subset: `.a.b`, `[0]`, `[*]`, `[?(@.type=="Ready")]`);
//!   a watch's first event carries the column definitions,
//! * fault injection (error status, latency, hanging requests; a request
//!   held by [`FaultKind::Timeout`] is logged with status 504 when it starts),
//! * the OpenAPI documents: `/openapi/v3` (the index, each group-version's
//!   `serverRelativeURL` with a `hash`), `/openapi/v3/api/v1` and
//!   `/openapi/v3/apis/{group}/{version}` (schemas with `x-kubernetes-group-version-kind`,
//!   descriptions, strategic-merge keys; each path's operations with their parameters,
//!   `fieldValidation` among them), and `/openapi/v2` in JSON only (406 for a protobuf-only
//!   `Accept`, as kubectl sends, which sends client-go to its fallback). Built-in kinds'
//!   schemas are `k8s-openapi`'s, built once per process; a custom type's is its CRD's
//!   `openAPIV3Schema` (see the crate's README for the sources and their versions). This is
//!   what `kubectl apply` (client-side and server-side) and `kubectl explain` need,
//! * `fieldValidation=Strict|Warn|Ignore` on POST, PUT and PATCH (default `Warn`): unknown
//!   fields are dropped, with a `Warning: 299 - "unknown field \"spec.foo\""` header each, or
//!   a 400 (`... cannot be handled as a Deployment: strict decoding error: unknown field
//!   "spec.foo"`); a server-side apply configuration of a built-in kind with an unknown field
//!   is a 400 whatever the directive (`.spec.foo: field not declared in schema`); another
//!   directive is a 422 on the request's options (`CreateOptions.meta.k8s.io "" is invalid`),
//! * custom resources whose CRD has a structural schema are pruned on every write (the root's
//!   `metadata` kept; `x-kubernetes-preserve-unknown-fields`, `additionalProperties` and
//!   `x-kubernetes-embedded-resource` honoured) and their values checked (type, `enum`,
//!   `required`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`,
//!   `minItems`/`maxItems`): a 422 `Invalid` whose causes name the field
//!   (`spec.rules[0].backendRefs[0].weight: Invalid value: ...`). The built-in custom types
//!   carry their real schemas (Gateway API from the `gateway-api` crate, Flagger's CRD,
//!   Istio's `VirtualService` and `DestinationRule` rebuilt from Istio 1.29.2's CRD models,
//!   Gloo's `RouteTable`, `VirtualService` and `Upstream` from Gloo's generated CRDs).
//!
//! Server-side apply without `fieldManager` is a 422 (`PatchOptions.meta.k8s.io "" is
//! invalid`), as the real server answers. Strategic merge patch follows the real patch
//! strategies (e.g. `volumeMounts` merge by `mountPath`, `metadata.finalizers` as a set).
//!
//! Errors are always `metav1.Status` objects with the real server's reasons and wording.
//!
//! # Server-side apply
//!
//! Field ownership is tracked per manager as a set of leaf field paths, rendered as
//! `fieldsV1` in `metadata.managedFields` (operation `Apply` or `Update`, `subresource:
//! status` for status writes). The simplifications, compared with the real structured-merge
//! implementation:
//!
//! * Leaves are scalars, empty maps and atomic lists. Lists are atomic except the
//!   strategic-merge keyed lists of the built-in types (containers, initContainers,
//!   ephemeralContainers, volumes, imagePullSecrets and env by `name`, volumeMounts by
//!   `mountPath`, container ports by `containerPort`, Service ports by `port`, conditions
//!   by `type`, ...), whose elements are owned one by one (`k:{"name":"app"}` with `.`).
//!   Multi-field keys (`containerPort`+`protocol`) use their first field only. Custom
//!   resources have no schema here, so all their lists are atomic.
//! * Applying from manager M: a field another manager owns (whether it wrote it with Apply
//!   or with an Update) with a different value than M sends is a conflict (409, reason
//!   `Conflict`, causes of type `FieldManagerConflict`), unless `force=true`, which moves
//!   ownership to M. Fields M applied before and no longer sends are removed unless another
//!   manager owns them too; maps left empty by that are pruned.
//! * Non-apply writes (POST, PUT, PATCH) record an `Update` entry for the manager
//!   (`fieldManager`, else the User-Agent's product, else `unknown`) that takes the fields
//!   whose value it changed; fields it removed are dropped from every manager.
//! * Only `metadata.labels`, `annotations`, `finalizers` and `ownerReferences` of the
//!   metadata are owned. A write that changes nothing is not stored (no new
//!   resourceVersion, no watch event), also for apply.
//!
//! # Other deliberate simplifications
//!
//! * The emulator's own writes (its controllers, [`Emulator::insert`] and the other methods)
//!   of built-in kinds are not checked against the schemas; custom resources are pruned and
//!   validated for every writer. Unknown fields in an apply configuration are named by index
//!   (`.spec.containers[0].foo`), where the real server names a keyed list's element by its
//!   key. CEL rules (`x-kubernetes-validations`), `format` and schema defaults are not
//!   applied.
//! * All versions of a resource (`gateway.networking.k8s.io` v1 and v1beta1, Istio v1 and
//!   v1beta1) share one storage and are "converted" by rewriting `apiVersion`.
//! * PUT without `metadata.resourceVersion` is an unconditional update for the built-in
//!   types; custom resources require it (422), as the real server does.
//! * Deleting a namespace deletes its objects at once (no `Terminating` phase).
//! * Core `v1` Events and `events.k8s.io/v1` Events are stored separately (the real server
//!   converts between the two views of one store).
//! * The deployment controller switches a rollout over at once: when it reports the
//!   Deployment's status it also makes the current ReplicaSet (`<name>-<pod-template-hash>`)
//!   own all the Pods (`Running` and ready, or crash-looping in `CrashLoopBackOff` for a
//!   never-ready Deployment) and scales older ReplicaSets to zero. There are no surge or
//!   partially available states, and no Events.

mod admission;
mod controllers;
mod errors;
mod events;
mod kinds;
mod managed;
mod openapi;
mod patch;
mod resources;
mod schema;
mod selectors;
mod server;
mod store;
mod tables;
mod util;
mod workload;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub use controllers::GATEWAY_CONTROLLER_NAME;
pub use resources::ResourceType;

use resources::Registry;
use server::Shared;
use store::{State, Sub, WriteCtx};

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long after a Deployment's creation or spec change the deployment controller
    /// reports the rollout done.
    pub deployment_ready_delay: Duration,
    /// Custom resource types served besides the built-in ones.
    pub extra_resources: Vec<ResourceType>,
    /// Namespaces created at start.
    pub namespaces: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            deployment_ready_delay: Duration::from_millis(200),
            extra_resources: Vec::new(),
            namespaces: vec!["default".to_string()],
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// URL path without the query.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// The response status (200 for a watch that started).
    pub status: u16,
    /// The request body: parsed JSON, or the text as a JSON string when it is not JSON.
    pub body: Option<Value>,
    /// Whether a [`Fault`] decided the answer (or delayed it).
    pub injected_fault: bool,
    /// When the request came in.
    pub received: std::time::Instant,
    /// How long it took to answer (the body read, the store's lock, the answer built).
    pub took: std::time::Duration,
}

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this status code and a matching `Status` body (500 InternalError,
    /// 503 ServiceUnavailable, 429 TooManyRequests with `Retry-After: 1`, 409 Conflict
    /// with the optimistic-lock wording, 504 Timeout; other codes get a generic body).
    Status(u16),
    /// Delay the request, then serve it normally.
    Latency(Duration),
    /// Hold the request for 60 s (or until the client gives up), then answer 504.
    Timeout,
    /// Serve the request (a write is stored), then answer 504 Timeout instead of the result,
    /// as an API server does when the answer of a committed write cannot be returned in time:
    /// the client cannot tell whether its write happened.
    AnswerLost,
}

/// A fault injected into matching requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// HTTP method to match (case-insensitive); `None` matches any.
    pub method: Option<String>,
    /// Regular expression matched against the URL path (not the query). An invalid
    /// expression matches nothing.
    pub path_regex: String,
    /// Chance in [0, 1] that a matching request gets the fault.
    pub probability: f64,
    /// What happens.
    pub kind: FaultKind,
    /// Seed of this fault's random sequence (the same seed gives the same decisions).
    pub seed: u64,
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish()
    }
}

fn build_shared(config: &Config) -> std::io::Result<Arc<Shared>> {
    let mut state = State::new(
        Registry::new(&config.extra_resources),
        config.deployment_ready_delay,
    );
    let ns_rt = state
        .registry
        .lookup("", "v1", "namespaces")
        .ok_or_else(|| std::io::Error::other("namespaces are not registered"))?;
    for ns in &config.namespaces {
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        state
            .create(&ns_rt, None, body, &WriteCtx::new("kube-apiserver"))
            .map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.message.clone())
            })?;
    }
    let crd_rt = state
        .registry
        .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| std::io::Error::other("customresourcedefinitions are not registered"))?;
    for crd in state.registry.crd_objects() {
        state
            .create(&crd_rt, None, crd, &WriteCtx::new("kube-apiserver"))
            .map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.message.clone())
            })?;
    }
    controllers::reconcile_crds(&mut state);
    let rv = state.rv;
    Ok(Arc::new(Shared {
        state: Mutex::new(state),
        notify: tokio::sync::watch::channel(rv).0,
        shutdown: tokio::sync::watch::channel(false).0,
        server_address: Mutex::new(String::new()),
        answering: std::sync::atomic::AtomicUsize::new(0),
    }))
}

impl Emulator {
    /// Starts the emulator on `127.0.0.1` (a free port) on the current tokio runtime.
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        let shared = build_shared(&config)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        if let Ok(mut a) = shared.server_address.lock() {
            *a = addr.to_string();
        }
        let app = {
            let shared = shared.clone();
            axum::Router::new().fallback(move |req: axum::extract::Request| {
                let shared = shared.clone();
                async move { server::handle(shared, req).await }
            })
        };
        let mut shutdown = shared.shutdown.subscribe();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("kube-emulator server stopped: {e}");
            }
        });
        let controllers = tokio::spawn(controllers::run(shared.clone()));
        Ok(Emulator {
            shared,
            addr,
            tasks: vec![server, controllers],
            runtime: None,
        })
    }

    /// Starts the emulator on a runtime of its own (for synchronous tests, e.g. ones that
    /// run a subprocess against it). The runtime stops when the emulator is dropped.
    ///
    /// Returns an error when called from inside a tokio runtime (use [`Emulator::start`]).
    pub fn start_blocking(config: Config) -> std::io::Result<Emulator> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(std::io::Error::other(
                "Emulator::start_blocking was called inside a tokio runtime; use Emulator::start",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("kube-emulator")
            .build()?;
        let mut emu = runtime.block_on(Emulator::start(config))?;
        emu.runtime = Some(runtime);
        Ok(emu)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this emulator: cluster, user (token `emulator-token`) and context
    /// all named `emulator`, with `namespace` as the context's namespace.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        let ns = serde_json::Value::String(namespace.to_string()).to_string();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\nusers:\n- name: emulator\n  user:\n    token: emulator-token\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: {ns}\ncurrent-context: emulator\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`Emulator::kubeconfig_yaml`] to a file.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(namespace))
    }

    /// The stored object, rendered for `api_version` (e.g. `apps/v1`, `v1`).
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let st = self.shared.lock();
        let rt = st.registry.by_api_version(api_version, plural)?;
        st.get(&rt, namespace.unwrap_or_default(), name)
            .map(|o| State::render(&rt, o))
    }

    /// Objects of a type in a namespace (or all namespaces with `None`), sorted by
    /// namespace and name.
    pub fn list(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let st = self.shared.lock();
        let Some(rt) = st.registry.by_api_version(api_version, plural) else {
            return Vec::new();
        };
        st.list(&rt.storage_key(), namespace)
            .into_iter()
            .map(|o| State::render(&rt, o))
            .collect()
    }

    /// Every stored version of an object, in order: creation, each change (spec, metadata
    /// or status) and, last, a deletion marker when it was deleted: the object as it was,
    /// with `metadata.deletionTimestamp` set and the resourceVersion of the deletion.
    pub fn history(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Vec<Value> {
        let st = self.shared.lock();
        let Some(rt) = st.registry.by_api_version(api_version, plural) else {
            return Vec::new();
        };
        st.history(&rt, namespace.unwrap_or_default(), name)
    }

    /// Creates an object through the same code path as a POST (defaults, validation, uid,
    /// resourceVersion, generation, managedFields with manager `kube-emulator`). The type
    /// comes from `apiVersion` and `kind`; a namespaced object without
    /// `metadata.namespace` goes to `default`.
    pub fn insert(&self, object: Value) -> Result<Value, String> {
        let (r, rv) = {
            let mut st = self.shared.lock();
            let rt = store::rt_for_object(&st.registry, &object)?;
            let ns = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            let ns = rt.t.namespaced.then_some(ns.as_str());
            let r = st
                .create(&rt, ns, object, &WriteCtx::new("kube-emulator"))
                .map(|o| o.render(&rt));
            (r, st.rv)
        };
        self.shared.notify(rv);
        r.map_err(|e| e.message.clone())
    }

    /// Deletes an object through the same code path as a DELETE (manager `kube-emulator`),
    /// as another client (a person with kubectl) would.
    pub fn delete(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), String> {
        let (r, rv) = {
            let mut st = self.shared.lock();
            let rt = st
                .registry
                .by_api_version(api_version, plural)
                .ok_or_else(|| format!("no resource {plural} in {api_version}"))?;
            let r = st.delete(
                &rt,
                namespace.unwrap_or_default(),
                name,
                &store::DeleteOpts::default(),
                &WriteCtx::new("kube-emulator"),
            );
            (r, st.rv)
        };
        self.shared.notify(rv);
        r.map(drop).map_err(|e| e.message.clone())
    }

    /// Sets the value of the external metric `metric` in `namespace` for the series with these
    /// `labels` (replacing that series' value), as an external metrics adapter would serve it at
    /// `/apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC`. `value` is a quantity
    /// (`"42"`, `"500m"`).
    pub fn set_external_metric(
        &self,
        namespace: &str,
        metric: &str,
        labels: &[(&str, &str)],
        value: &str,
    ) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let item = serde_json::json!({
            "metricName": metric,
            "metricLabels": labels,
            "timestamp": util::now_rfc3339(),
            "value": value,
        });
        let mut st = self.shared.lock();
        let series = st
            .external_metrics
            .entry((namespace.to_string(), metric.to_string()))
            .or_default();
        series.retain(|v| v.get("metricLabels") != item.get("metricLabels"));
        series.push(item);
    }

    /// Replaces an object's `.status` through the same code path as `PUT .../status`
    /// (manager `kube-emulator`).
    pub fn update_status(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, String> {
        let (r, rv) = {
            let mut st = self.shared.lock();
            let rt = st
                .registry
                .by_api_version(api_version, plural)
                .ok_or_else(|| format!("no resource type {api_version} {plural}"))?;
            let ns = namespace.unwrap_or_default();
            let current = st
                .get(&rt, ns, name)
                .cloned()
                .ok_or_else(|| format!("{plural} \"{name}\" not found"))?;
            let mut body = State::render(&rt, &current);
            body["status"] = status;
            let sub = if rt.t.status_subresource {
                Sub::Status
            } else {
                Sub::Main
            };
            let r = st
                .update(
                    &rt,
                    rt.t.namespaced.then_some(ns),
                    name,
                    body,
                    &WriteCtx::new("kube-emulator"),
                    sub,
                )
                .map(|o| o.render(&rt));
            (r, st.rv)
        };
        self.shared.notify(rv);
        r.map_err(|e| e.message.clone())
    }

    /// The request log, oldest first (the oldest entries are dropped past 100 000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Replaces the fault list (an empty list stops injecting faults). The first matching
    /// fault whose roll succeeds applies.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        let states = faults
            .into_iter()
            .map(|f| {
                let regex = match regex::Regex::new(&f.path_regex) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(
                            "fault path_regex {:?} is invalid and matches nothing: {e}",
                            f.path_regex
                        );
                        None
                    }
                };
                store::FaultState {
                    rng: util::Rng::new(f.seed),
                    regex,
                    fault: f,
                }
            })
            .collect();
        self.shared.lock().faults = states;
    }

    /// Marks a Deployment so that the deployment controller never makes it available (it
    /// ends with `Progressing=False`, reason `ProgressDeadlineExceeded`, once
    /// `spec.progressDeadlineSeconds` have passed since its last spec change).
    pub fn set_never_ready(&self, namespace: &str, deployment: &str, never: bool) {
        let mut st = self.shared.lock();
        let id = (namespace.to_string(), deployment.to_string());
        if never {
            st.never_ready.insert(id);
        } else {
            st.never_ready.remove(&id);
            st.deploy_dirty.insert(id);
        }
    }

    /// Whether a request is being answered now (a watch only while it starts).
    pub fn answering(&self) -> bool {
        self.shared
            .answering
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    /// Changes the deployment controller's delay.
    pub fn set_ready_delay(&self, delay: Duration) {
        self.shared.lock().ready_delay = delay;
    }

    /// How many watch events are kept (default 10 000); a watch from an older
    /// resourceVersion gets `410 Gone` (reason `Expired`).
    pub fn set_watch_history_limit(&self, limit: usize) {
        let mut st = self.shared.lock();
        st.history_limit = limit.max(1);
        while st.events.len() > st.history_limit {
            if let Some(e) = st.events.pop_front() {
                st.compacted_rv = e.rv;
            }
        }
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking is not allowed inside another runtime.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}
