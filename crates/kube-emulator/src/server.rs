//! The HTTP front end: routing, discovery, watches, fault injection and the request log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::resources::Rt;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, Event, FieldValidation, State, Sub, WriteCtx};
use crate::tables::{self, TableOpts};
use crate::{FaultKind, RequestRecord};

/// State shared by the server, the controllers and the [`crate::Emulator`] handle.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Carries the latest resourceVersion; watches wait on it.
    pub notify: tokio::sync::watch::Sender<u64>,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub server_address: Mutex<String>,
    /// Requests being answered now (watches only while they start): the controllers give
    /// way to them (see `controllers::run`).
    pub answering: AtomicUsize,
}

/// Counts a request in [`Shared::answering`] while it lives.
struct Answering<'a>(&'a AtomicUsize);

impl<'a> Answering<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Answering(count)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes watches after a write.
    pub(crate) fn notify(&self, rv: u64) {
        self.notify.send_replace(rv);
    }
}

const MAX_BODY: usize = 64 * 1024 * 1024;
const JSON: &str = "application/json";

pub(crate) fn json_response(code: u16, v: &Value) -> Response {
    let mut resp = Response::new(Body::from(v.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

fn result_response(r: ApiResult<(u16, Value)>) -> Response {
    match r {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

/// The handler of every request.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    let received = Instant::now();
    let _answering = Answering::start(&shared.answering);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let (content_type, accept, user_agent) = {
        let headers = req.headers();
        let header_str = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        (
            header_str(header::CONTENT_TYPE),
            header_str(header::ACCEPT).unwrap_or_default(),
            header_str(header::USER_AGENT).unwrap_or_default(),
        )
    };
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let resp = error_response(&ApiError::bad_request(format!(
                "unable to read the request body: {e}"
            )));
            log(
                &shared,
                received,
                &method,
                &path,
                &query,
                &content_type,
                &Bytes::new(),
                resp.status().as_u16(),
                false,
            );
            return resp;
        }
    };

    let fault = pick_fault(&shared, &method, &path);
    if let Some(kind) = fault.clone() {
        match kind {
            FaultKind::Status(code) => {
                let resp = error_response(&fault_error(code, &path));
                log(
                    &shared,
                    received,
                    &method,
                    &path,
                    &query,
                    &content_type,
                    &bytes,
                    code,
                    true,
                );
                return resp;
            }
            FaultKind::Latency(d) => {
                let mut shutdown = shared.shutdown.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
            FaultKind::Timeout => {
                // Logged when it starts: the client usually gives up first.
                log(
                    &shared,
                    received,
                    &method,
                    &path,
                    &query,
                    &content_type,
                    &bytes,
                    504,
                    true,
                );
                let mut shutdown = shared.shutdown.subscribe();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
                return error_response(&ApiError::timeout());
            }
            FaultKind::AnswerLost => {}
        }
    }

    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let req = Req {
        method: &method,
        path: &path,
        params: &params,
        content_type: content_type.as_deref().unwrap_or_default(),
        accept: &accept,
        body: &bytes,
        ctx: Req::new_ctx(&params, &user_agent),
    };
    let mut resp = route(&shared, &req);
    add_warnings(&mut resp, &req.ctx);
    if fault == Some(FaultKind::AnswerLost) {
        resp = error_response(&ApiError::timeout());
    }
    log(
        &shared,
        received,
        &method,
        &path,
        &query,
        &content_type,
        &bytes,
        resp.status().as_u16(),
        fault.is_some(),
    );
    resp
}

#[allow(clippy::too_many_arguments)]
fn log(
    shared: &Shared,
    received: Instant,
    method: &str,
    path: &str,
    query: &str,
    ct: &Option<String>,
    body: &Bytes,
    status: u16,
    injected: bool,
) {
    let body = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
        )
    };
    shared.lock().log_request(RequestRecord {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        content_type: ct.clone(),
        status,
        body,
        injected_fault: injected,
        received,
        took: received.elapsed(),
    });
}

fn pick_fault(shared: &Shared, method: &str, path: &str) -> Option<FaultKind> {
    let mut st = shared.lock();
    for f in st.faults.iter_mut() {
        let method_ok = f
            .fault
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_ok = f.regex.as_ref().is_some_and(|r| r.is_match(path));
        if method_ok && path_ok {
            let roll = f.rng.next_f64();
            if roll < f.fault.probability {
                return Some(f.fault.kind.clone());
            }
        }
    }
    None
}

fn fault_error(code: u16, path: &str) -> ApiError {
    match code {
        500 => ApiError::internal("injected fault"),
        503 => ApiError::service_unavailable(),
        429 => ApiError::too_many_requests(),
        504 => ApiError::timeout(),
        409 => {
            // Name the object when the path addresses one.
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let (group, rest) = match segs.as_slice() {
                ["api", _v, rest @ ..] => ("", rest),
                ["apis", g, _v, rest @ ..] => (*g, rest),
                _ => ("", &[][..]),
            };
            let (plural, name) = match rest {
                ["namespaces", _ns, plural, name, ..] => (*plural, *name),
                [plural, name, ..] => (*plural, *name),
                _ => ("", ""),
            };
            ApiError::stale(plural, group, name)
        }
        other => {
            let reason = match other {
                400 => "BadRequest",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "NotFound",
                410 => "Expired",
                422 => "Invalid",
                _ => "InternalError",
            };
            ApiError::new(other, reason, format!("injected fault with status {other}"))
        }
    }
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    params: &'a HashMap<String, String>,
    content_type: &'a str,
    accept: &'a str,
    body: &'a [u8],
    /// The write's manager and options, with the warnings it collects.
    ctx: WriteCtx,
}

impl Req<'_> {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.param(k), Some("true" | "1" | "True"))
    }

    fn ctx(&self) -> &WriteCtx {
        &self.ctx
    }

    fn new_ctx(params: &HashMap<String, String>, user_agent: &str) -> WriteCtx {
        let param = |k: &str| params.get(k).map(String::as_str);
        let validation = match param("fieldValidation") {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        };
        let manager = match param("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) => m.to_string(),
            None => {
                let ua = user_agent.split('/').next().unwrap_or_default();
                if ua.is_empty() {
                    "unknown".to_string()
                } else {
                    ua.to_string()
                }
            }
        };
        WriteCtx {
            manager,
            dry_run: param("dryRun") == Some("All"),
            validation: Some(validation),
            warnings: Default::default(),
        }
    }

    fn body_json(&self) -> ApiResult<Value> {
        serde_json::from_slice(self.body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })
    }

    /// Whether the client asked for `PartialObjectMetadata` (kube's metadata-only calls).
    fn metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }

    /// Whether the client asked for `meta.k8s.io` Tables (kubectl's human output).
    fn table(&self) -> ApiResult<Option<TableOpts>> {
        tables::requested(self.accept, self.param("includeObject"))
    }

    fn aggregated(&self) -> bool {
        self.accept.contains("as=APIGroupDiscoveryList")
    }
}

/// A write's `fieldValidation` other than `Ignore`, `Warn` or `Strict` is refused (422 on the
/// request's options, as the real server validates them).
fn field_validation_error(req: &Req) -> Option<ApiError> {
    let options = match req.method {
        "POST" => "CreateOptions",
        "PUT" => "UpdateOptions",
        "PATCH" => "PatchOptions",
        _ => return None,
    };
    let v = req.param("fieldValidation")?;
    if matches!(v, "" | "Ignore" | "Warn" | "Strict") {
        return None;
    }
    Some(ApiError::invalid(
        options,
        "meta.k8s.io",
        "",
        vec![crate::errors::Cause::unsupported(
            "fieldValidation",
            &json!(v),
            &["", "Ignore", "Strict", "Warn"],
        )],
    ))
}

/// One `Warning: 299 - "..."` header per warning the write collected.
fn add_warnings(resp: &mut Response, ctx: &WriteCtx) {
    for w in ctx.warnings.borrow().iter() {
        let text = format!("299 - {}", Value::String(w.clone()));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

fn route(shared: &Arc<Shared>, req: &Req) -> Response {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let is_get = req.method == "GET";
    match segs.as_slice() {
        ["openapi", ..] if is_get => crate::openapi::serve(shared, &segs[1..], req.accept),
        ["version"] if is_get => json_response(200, &version_info()),
        ["healthz" | "livez" | "readyz"] if is_get => {
            let mut resp = Response::new(Body::from("ok"));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
        ["api"] if is_get => {
            if req.aggregated() {
                return aggregated_response(&shared.lock(), true);
            }
            let addr = shared
                .server_address
                .lock()
                .map(|a| a.clone())
                .unwrap_or_default();
            json_response(
                200,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
                }),
            )
        }
        ["apis"] if is_get => {
            let st = shared.lock();
            if req.aggregated() {
                return aggregated_response(&st, false);
            }
            json_response(200, &st.registry.api_group_list())
        }
        ["apis", group] if is_get => match shared.lock().registry.api_group(group) {
            Some(g) => json_response(200, &g),
            None => error_response(&ApiError::no_route()),
        },
        ["api", "v1"] if is_get => {
            json_response(200, &shared.lock().registry.resource_list("", "v1"))
        }
        ["apis", group, version] if is_get => {
            let st = shared.lock();
            if st.registry.has_group_version(group, version) {
                json_response(200, &st.registry.resource_list(group, version))
            } else {
                error_response(&ApiError::no_route())
            }
        }
        ["apis", "external.metrics.k8s.io", "v1beta1", "namespaces", ns, metric] if is_get => {
            external_metrics(shared, req, ns, metric)
        }
        ["api", "v1", rest @ ..] if !rest.is_empty() => resource(shared, req, "", "v1", rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            resource(shared, req, group, version, rest)
        }
        ["version" | "api" | "apis" | "healthz" | "livez" | "readyz", ..] => {
            if segs.len() <= 3 {
                error_response(&ApiError::method_not_allowed())
            } else {
                error_response(&ApiError::no_route())
            }
        }
        _ => error_response(&ApiError::no_route()),
    }
}

/// An external metrics adapter behind the aggregation layer (KEDA's, prometheus-adapter's):
/// the `ExternalMetricValueList` of `metric` in `ns`, its items' `metricLabels` matched by the
/// request's `labelSelector`.
fn external_metrics(shared: &Arc<Shared>, req: &Req, ns: &str, metric: &str) -> Response {
    let selector = match crate::selectors::LabelSelector::parse(
        req.param("labelSelector").unwrap_or_default(),
    ) {
        Ok(s) => s,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "unable to parse labelSelector: {e}"
            )))
        }
    };
    let items: Vec<Value> = shared
        .lock()
        .external_metrics
        .get(&(ns.to_string(), metric.to_string()))
        .map(|values| {
            values
                .iter()
                .filter(|v| selector.matches(v.get("metricLabels")))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    json_response(
        200,
        &json!({
            "kind": "ExternalMetricValueList",
            "apiVersion": "external.metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items,
        }),
    )
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn aggregated_response(st: &State, core: bool) -> Response {
    let groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        st.registry.groups()
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let list = st.registry.resource_list(g, v);
                    let all = list["resources"].as_array().cloned().unwrap_or_default();
                    let resources: Vec<Value> = all
                        .iter()
                        .filter(|r| r["name"].as_str().is_some_and(|n| !n.contains('/')))
                        .map(|r| {
                            let name = r["name"].as_str().unwrap_or_default();
                            let kind = r["kind"].clone();
                            let gvk = json!({"group": g, "version": v, "kind": kind});
                            let has_status = all.iter().any(|s| s["name"] == json!(format!("{name}/status")));
                            let mut d = json!({
                                "resource": name,
                                "responseKind": gvk,
                                "scope": if r["namespaced"] == json!(true) { "Namespaced" } else { "Cluster" },
                                "singularResource": r["singularName"],
                                "verbs": r["verbs"],
                            });
                            for key in ["shortNames", "categories"] {
                                if let Some(v) = r.get(key) {
                                    d[key] = v.clone();
                                }
                            }
                            if has_status {
                                d["subresources"] = json!([{"subresource": "status", "responseKind": gvk, "verbs": ["get", "patch", "update"]}]);
                            }
                            d
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": vs});
            if !g.is_empty() {
                item["metadata"]["name"] = json!(g);
            }
            item
        })
        .collect();
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    let mut resp = json_response(200, &body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    resp
}

fn resource(
    shared: &Arc<Shared>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Response {
    if let Some(e) = field_validation_error(req) {
        return error_response(&e);
    }
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => (
            Some(*ns),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] if tail.len() <= 2 => {
            (None, *plural, tail.first().copied(), tail.get(1).copied())
        }
        _ => return error_response(&ApiError::no_route()),
    };
    let Some(rt) = shared.lock().registry.lookup(group, version, plural) else {
        return error_response(&ApiError::no_route());
    };
    if ns.is_some() && !rt.t.namespaced {
        return error_response(&ApiError::no_route());
    }
    let sub = match sub {
        None => Sub::Main,
        Some("status") if rt.t.status_subresource => Sub::Status,
        Some(_) => return error_response(&ApiError::no_route()),
    };
    match name {
        None => collection(shared, req, &rt, ns),
        Some(name) => {
            if rt.t.namespaced && ns.is_none() {
                return error_response(&ApiError::no_route());
            }
            let ns_key = ns.unwrap_or_default();
            let r = match req.method {
                "GET" => {
                    let table = match req.table() {
                        Ok(t) => t,
                        Err(e) => return error_response(&e),
                    };
                    // Copied and rendered once the store's lock is let go.
                    let found = shared.lock().get_shared(&rt, ns_key, name);
                    let found =
                        found.ok_or_else(|| ApiError::not_found(rt.plural(), rt.group(), name));
                    if let Some(opts) = table {
                        return table_result(
                            found.map(|o| (200, object_table(&rt, &o, &opts, true))),
                            &opts,
                        );
                    }
                    found.map(|o| (200, present(&rt, &o, req.metadata_only())))
                }
                // The body is decoded before the store's lock is taken.
                "PUT" => req.body_json().and_then(|body| {
                    write(shared, |st| {
                        st.update(&rt, ns, name, body, req.ctx(), sub)
                            .map(|o| (200, o))
                    })
                    .map(|(code, o)| (code, o.render(&rt)))
                }),
                "PATCH" => write(shared, |st| {
                    let created_before = st.get(&rt, ns_key, name).is_some();
                    let o = st.patch(
                        &rt,
                        ns,
                        name,
                        req.content_type,
                        req.body,
                        req.ctx(),
                        sub,
                        req.flag("force"),
                        req.param("fieldManager").is_some_and(|m| !m.is_empty()),
                    )?;
                    Ok((if created_before { 200 } else { 201 }, o))
                })
                .map(|(code, o)| (code, o.render(&rt))),
                "DELETE" if sub == Sub::Main => write(shared, |st| {
                    let opts = delete_opts(req)?;
                    st.delete(&rt, ns_key, name, &opts, req.ctx())
                        .map(|o| (200, o))
                })
                .map(|(code, o)| (code, o.render(&rt))),
                _ => Err(ApiError::method_not_allowed()),
            };
            result_response(r)
        }
    }
}

/// Runs a write under the lock and wakes watches.
fn write<T>(
    shared: &Shared,
    f: impl FnOnce(&mut State) -> ApiResult<(u16, T)>,
) -> ApiResult<(u16, T)> {
    let (r, rv) = {
        let mut st = shared.lock();
        let r = f(&mut st);
        (r, st.rv)
    };
    shared.notify(rv);
    r
}

fn delete_opts(req: &Req) -> ApiResult<DeleteOpts> {
    let mut opts = DeleteOpts {
        propagation: req.param("propagationPolicy").map(String::from),
        ..Default::default()
    };
    if !req.body.is_empty() {
        let body = req.body_json()?;
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(p.to_string());
        }
        if let Some(p) = body.get("orphanDependents").and_then(Value::as_bool) {
            if p {
                opts.propagation = Some("Orphan".into());
            }
        }
        opts.precondition_uid = body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
        opts.precondition_rv = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        if body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"))
        {
            return Err(ApiError::bad_request("dryRun in the body is not supported by this emulator; use the dryRun query parameter"));
        }
    }
    if let Some(p) = &opts.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    Ok(opts)
}

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn parse(req: &Req, rt: &Rt) -> ApiResult<Self> {
        let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(
            req.param("fieldSelector").unwrap_or_default(),
            rt.group(),
            rt.plural(),
            rt.builtin,
        )
        .map_err(ApiError::bad_request)?;
        Ok(Selectors { labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(obj.pointer("/metadata/labels")))
            && (self.fields.is_empty() || self.fields.matches(obj))
    }
}

fn collection(shared: &Arc<Shared>, req: &Req, rt: &Arc<Rt>, ns: Option<&str>) -> Response {
    match req.method {
        "GET" => {
            let sel = match Selectors::parse(req, rt) {
                Ok(s) => s,
                Err(e) => return error_response(&e),
            };
            let table = match req.table() {
                Ok(t) => t,
                Err(e) => return error_response(&e),
            };
            if req.flag("watch") {
                return watch(shared, req, rt, ns, sel, table);
            }
            match table {
                Some(opts) => table_result(list(shared, req, rt, ns, &sel, Some(&opts)), &opts),
                None => result_response(list(shared, req, rt, ns, &sel, None)),
            }
        }
        "POST" => {
            if rt.t.namespaced && ns.is_none() {
                return error_response(&ApiError::method_not_allowed());
            }
            result_response(req.body_json().and_then(|body| {
                write(shared, |st| {
                    st.create(rt, ns, body, req.ctx()).map(|o| (201, o))
                })
                .map(|(code, o)| (code, o.render(rt)))
            }))
        }
        "DELETE" => {
            let sel = match Selectors::parse(req, rt) {
                Ok(s) => s,
                Err(e) => return error_response(&e),
            };
            result_response(write(shared, |st| {
                let opts = delete_opts(req)?;
                let targets: Vec<(String, String)> = st
                    .list(&rt.storage_key(), ns)
                    .into_iter()
                    .filter(|o| sel.matches(o))
                    .map(|o| {
                        let m = |k: &str| {
                            o.pointer(k)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string()
                        };
                        (m("/metadata/namespace"), m("/metadata/name"))
                    })
                    .collect();
                let mut items = Vec::new();
                for (ons, oname) in targets {
                    items.push(st.delete(rt, &ons, &oname, &opts, req.ctx())?.render(rt));
                }
                let list_rv = st.rv.to_string();
                Ok((200, list_json(rt, items, &list_rv, None, None, false)))
            }))
        }
        _ => error_response(&ApiError::method_not_allowed()),
    }
}

fn list_json(
    rt: &Rt,
    items: Vec<Value>,
    rv: &str,
    cont: Option<String>,
    remaining: Option<usize>,
    meta_only: bool,
) -> Value {
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        metadata["remainingItemCount"] = json!(r);
    }
    json!({
        "kind": if meta_only { "PartialObjectMetadataList".to_string() } else { format!("{}List", rt.kind()) },
        "apiVersion": if meta_only { "meta.k8s.io/v1".to_string() } else { rt.t.api_version() },
        "metadata": metadata,
        "items": items,
    })
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn list(
    shared: &Shared,
    req: &Req,
    rt: &Rt,
    ns: Option<&str>,
    sel: &Selectors,
    table: Option<&TableOpts>,
) -> ApiResult<(u16, Value)> {
    let st = shared.lock();
    let mut items: Vec<(String, &Value)> = st
        .list(&rt.storage_key(), ns)
        .into_iter()
        .filter(|o| sel.matches(o))
        .map(|o| {
            let key = format!(
                "{}\u{1}{}",
                o.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            (key, o)
        })
        .collect();
    if let Some(token) = req.param("continue").filter(|t| !t.is_empty()) {
        let after = unhex(token).ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        })?;
        items.retain(|(k, _)| *k > after);
    }
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (cont, remaining) = match limit {
        Some(l) if items.len() > l => {
            let remaining = items.len() - l;
            items.truncate(l);
            (items.last().map(|(k, _)| hex(k)), Some(remaining))
        }
        _ => (None, None),
    };
    if let Some(opts) = table {
        let objects: Vec<&Value> = items.iter().map(|(_, o)| *o).collect();
        let meta = tables::list_metadata(&st.rv.to_string(), cont.as_deref(), remaining);
        return Ok((200, tables::table(rt, &objects, meta, opts, true)));
    }
    let values = items
        .into_iter()
        .map(|(_, o)| present(rt, o, req.metadata_only()))
        .collect();
    Ok((
        200,
        list_json(
            rt,
            values,
            &st.rv.to_string(),
            cont,
            remaining,
            req.metadata_only(),
        ),
    ))
}

fn event_line(etype: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": etype, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(rt: &Rt, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": rt.kind(), "apiVersion": rt.t.api_version(), "metadata": metadata}),
    )
}

/// The lines a stored event turns into for one watch (selector transitions included).
fn watch_lines(
    ev: &Event,
    rt: &Rt,
    ns: Option<&str>,
    sel: &Selectors,
    view: &mut WatchView,
) -> Option<Bytes> {
    if ev.key != rt.storage_key() || ns.is_some_and(|n| n != ev.namespace) {
        return None;
    }
    let now = sel.matches(&ev.object);
    let etype = match (ev.etype, ev.prev.as_ref().map(|p| sel.matches(p))) {
        ("MODIFIED", Some(true)) if !now => "DELETED",
        ("MODIFIED", Some(false)) if now => "ADDED",
        ("MODIFIED", Some(false)) => return None,
        (t, _) if now => t,
        _ => return None,
    };
    Some(event_line(etype, &view.object(rt, &ev.object)))
}

/// How a watch shows its objects: whole, as `PartialObjectMetadata`, or as one-row Tables
/// (the first one with the column definitions).
struct WatchView {
    meta_only: bool,
    table: Option<TableOpts>,
    headers_sent: bool,
}

impl WatchView {
    fn object(&mut self, rt: &Rt, obj: &Value) -> Value {
        match &self.table {
            Some(opts) => {
                let t = object_table(rt, obj, opts, !self.headers_sent);
                self.headers_sent = true;
                t
            }
            None => present(rt, obj, self.meta_only),
        }
    }
}

/// A Table of one object (a GET, a watch event), with its resourceVersion.
fn object_table(rt: &Rt, obj: &Value, opts: &TableOpts, headers: bool) -> Value {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    tables::table(rt, &[obj], json!({"resourceVersion": rv}), opts, headers)
}

/// A Table answer, with the Table's content type.
fn table_result(r: ApiResult<(u16, Value)>, opts: &TableOpts) -> Response {
    let mut resp = result_response(r);
    if resp.status().is_success() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(opts.content_type()),
        );
    }
    resp
}

fn watch(
    shared: &Arc<Shared>,
    req: &Req,
    rt: &Arc<Rt>,
    ns: Option<&str>,
    sel: Selectors,
    table: Option<TableOpts>,
) -> Response {
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = req.flag("allowWatchBookmarks");
    let initial_events = req.flag("sendInitialEvents");
    let rv_param = req.param("resourceVersion").unwrap_or_default().to_string();
    let start_rv: Option<u64> = match rv_param.as_str() {
        "" | "0" => None,
        s => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error_response(&ApiError::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    vec![crate::errors::Cause::invalid(
                        "resourceVersion",
                        &json!(s),
                        "must be a number",
                    )],
                ))
            }
        },
    };
    let start_rv = if initial_events { None } else { start_rv };
    let mut view = WatchView {
        meta_only: req.metadata_only(),
        table,
        headers_sent: false,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let shared = shared.clone();
    let rt = rt.clone();
    let ns = ns.map(String::from);
    let mut notify_rx = shared.notify.subscribe();
    let mut shutdown_rx = shared.shutdown.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let ns = ns.as_deref();
        // Initial state.
        let (initial, mut last_rv, gone) = {
            notify_rx.borrow_and_update();
            let st = shared.lock();
            match start_rv {
                None => {
                    let mut lines: Vec<Bytes> = st
                        .list(&rt.storage_key(), ns)
                        .into_iter()
                        .filter(|o| sel.matches(o))
                        .map(|o| event_line("ADDED", &view.object(&rt, o)))
                        .collect();
                    if initial_events {
                        lines.push(bookmark(&rt, st.rv, true));
                    }
                    (lines, st.rv, None)
                }
                Some(n) if n < st.compacted_rv => {
                    let oldest = st.events.front().map(|e| e.rv).unwrap_or(st.rv);
                    let err = ApiError::gone(format!(
                        "too old resource version: {n} ({})",
                        oldest.saturating_sub(1)
                    ));
                    (Vec::new(), n, Some(err))
                }
                Some(n) => (Vec::new(), n, None),
            }
        };
        if let Some(err) = gone {
            let _ = tx.send(event_line("ERROR", &err.to_status())).await;
            return;
        }
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        ticker.tick().await;
        loop {
            let (lines, gone) = {
                let st = shared.lock();
                if last_rv < st.compacted_rv {
                    let err = ApiError::gone(format!(
                        "too old resource version: {last_rv} ({})",
                        st.compacted_rv
                    ));
                    (Vec::new(), Some(err))
                } else {
                    let lines: Vec<Bytes> = st
                        .events
                        .iter()
                        .filter(|e| e.rv > last_rv)
                        .filter_map(|e| watch_lines(e, &rt, ns, &sel, &mut view))
                        .collect();
                    last_rv = last_rv.max(st.rv);
                    (lines, None)
                }
            };
            if let Some(err) = gone {
                let _ = tx.send(event_line("ERROR", &err.to_status())).await;
                return;
            }
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let send_bookmark = tokio::select! {
                r = notify_rx.changed() => if r.is_err() { return } else { false },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shutdown_rx.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
                _ = ticker.tick() => bookmarks,
            };
            if send_bookmark && tx.send(bookmark(&rt, last_rv, false)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

/// An object as answered: full, or as `PartialObjectMetadata` for metadata-only requests.
fn present(rt: &Rt, obj: &Value, meta_only: bool) -> Value {
    if meta_only {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })
    } else {
        State::render(rt, obj)
    }
}
