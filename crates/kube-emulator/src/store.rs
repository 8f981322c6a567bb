//! The object store and the API semantics of each verb.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::errors::{qualified, ApiError, ApiResult, Cause};
use crate::kinds;
use crate::managed::{self, Entry, Schema, Scope};
use crate::patch::strategic_merge;
use crate::resources::{Registry, Rt};
use crate::util::{now_rfc3339, Rng};
use crate::{Fault, RequestRecord};

/// Storage key of a resource: (group, plural), shared by all its versions.
pub(crate) type StorageKey = (String, String);

/// One change, kept for watches.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: StorageKey,
    pub namespace: String,
    pub etype: &'static str,
    /// Shared with the store and the history (the same version).
    pub object: Arc<Value>,
    /// The object before a modification (for selector transitions), shared with the history.
    pub prev: Option<Arc<Value>>,
}

/// What a write answers: the object as stored (shared with the store) or as built (a dry run,
/// a write that changed nothing), rendered for the request's type by [`Written::render`] once
/// the store's lock is let go.
#[derive(Debug)]
pub(crate) enum Written {
    Stored(Arc<Value>),
    Built(Value),
}

/// The object as stored (without its type's `apiVersion` and `kind`).
impl std::ops::Deref for Written {
    type Target = Value;

    fn deref(&self) -> &Value {
        match self {
            Written::Stored(obj) => obj,
            Written::Built(obj) => obj,
        }
    }
}

impl Written {
    /// The object as the client sees it (its type's `apiVersion` and `kind`).
    pub(crate) fn render(self, rt: &Rt) -> Value {
        match self {
            Written::Stored(obj) => State::render(rt, &obj),
            Written::Built(obj) => State::rendered(rt, obj),
        }
    }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

impl Sub {
    fn name(self) -> Option<&'static str> {
        match self {
            Sub::Main => None,
            Sub::Status => Some("status"),
        }
    }
}

/// What a write does with fields its type's schema does not have (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a `Warning` header for each (the server's default).
    Warn,
    /// The write fails (400 `BadRequest`).
    Strict,
}

/// Who writes and how.
#[derive(Debug, Clone)]
pub(crate) struct WriteCtx {
    pub manager: String,
    pub dry_run: bool,
    /// `None` for the emulator's own writes (its controllers, [`crate::Emulator`]'s
    /// methods): built-in objects are not checked against their schema; custom resources
    /// are pruned and validated as for a client, silently.
    pub validation: Option<FieldValidation>,
    /// Warnings for the answer's `Warning` headers.
    pub warnings: std::cell::RefCell<Vec<String>>,
}

impl WriteCtx {
    pub(crate) fn new(manager: &str) -> Self {
        WriteCtx {
            manager: manager.to_string(),
            dry_run: false,
            validation: None,
            warnings: Default::default(),
        }
    }
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

pub(crate) struct FaultState {
    pub fault: Fault,
    pub regex: Option<regex::Regex>,
    pub rng: Rng,
}

pub(crate) struct State {
    pub registry: Registry,
    /// Each version is stored once and shared by the store, the history and the events.
    objects: HashMap<StorageKey, BTreeMap<(String, String), Arc<Value>>>,
    pub rv: u64,
    pub events: VecDeque<Event>,
    pub history_limit: usize,
    /// Events at or below this resourceVersion may have been dropped.
    pub compacted_rv: u64,
    history: HashMap<(String, String, String, String), Vec<Arc<Value>>>,
    pub requests: Vec<RequestRecord>,
    pub faults: Vec<FaultState>,
    pub never_ready: HashSet<(String, String)>,
    pub ready_delay: Duration,
    /// When each Deployment's generation last changed (for the deployment controller).
    pub deploy_changed: HashMap<(String, String), (i64, Instant)>,
    /// Deployments the deployment controller has to look at: written, or a ReplicaSet or Pod
    /// of their namespace written, since it last found nothing to do for them.
    pub deploy_dirty: BTreeSet<(String, String)>,
    /// HTTPRoutes written since the route controller last found their status up to date.
    pub route_dirty: BTreeSet<(String, String)>,
    /// CustomResourceDefinitions written since the CRD controller last found them established.
    pub crd_dirty: BTreeSet<String>,
    pub rng: Rng,
    next_ip: u32,
    /// The values an external metrics adapter serves (`external.metrics.k8s.io/v1beta1`), by
    /// namespace and metric name: `ExternalMetricValue` items.
    pub external_metrics: BTreeMap<(String, String), Vec<Value>>,
}

const MAX_REQUESTS: usize = 100_000;

/// The objects of one type in namespace `ns`: keys sort by namespace first, so they are one
/// range of the type's map.
/// One stored object of a type's map: its (namespace, name) and its current version.
type Stored<'a> = (&'a (String, String), &'a Arc<Value>);

fn in_namespace(
    objs: &BTreeMap<(String, String), Arc<Value>>,
    ns: String,
) -> impl Iterator<Item = Stored<'_>> {
    objs.range((ns.clone(), String::new())..)
        .take_while(move |((ons, _), _)| *ons == ns)
}

/// Whether `obj`'s `metadata.ownerReferences` name the owner `uid`.
fn owned_by_uid(obj: &Value, uid: &str) -> bool {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(key)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let m = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the body of the request must be a JSON object"))?;
    let entry = m.entry("metadata").or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// Whether two maps have the same entries among those `kept`, each pair judged by `same`
/// (compared in place: these run on every write).
fn same_entries(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    kept: impl Fn(&str, &Value) -> bool,
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let count = |m: &Map<String, Value>| m.iter().filter(|(k, v)| kept(k, v)).count();
    count(a) == count(b)
        && a.iter()
            .filter(|(k, v)| kept(k, v))
            .all(|(k, v)| b.get(k).is_some_and(|bv| same(k, v, bv)))
}

/// Whether two objects have the same fields other than `skip`.
fn same_without(a: &Value, b: &Value, skip: &[&str]) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => same_entries(a, b, |k, _| !skip.contains(&k), |_, x, y| x == y),
        _ => a == b,
    }
}

/// Whether the spec parts (everything but `metadata`, `status`, `apiVersion` and `kind`) of two
/// objects are equal: a change moves the generation.
fn same_spec(a: &Value, b: &Value) -> bool {
    same_without(a, b, &["metadata", "status", "apiVersion", "kind"])
}

/// Whether a write of `new` over `old` changes nothing (it is then not stored): the same
/// object but for `apiVersion` and `kind` (the version it is read at), the resourceVersion,
/// the times of managedFields, and an empty managedFields list in `new` (none).
fn same_object(new: &Value, old: &Value) -> bool {
    if !same_without(new, old, &["metadata", "apiVersion", "kind"]) {
        return false;
    }
    let (Some(n), Some(o)) = (meta(new), meta(old)) else {
        return new.get("metadata") == old.get("metadata");
    };
    same_entries(
        n,
        o,
        |k, v| {
            k != "resourceVersion"
                && !(k == "managedFields" && v.as_array().is_some_and(Vec::is_empty))
        },
        |k, x, y| match k {
            "managedFields" => same_managed_fields(x, y),
            _ => x == y,
        },
    )
}

/// managedFields entries equal but for their `time`.
fn same_managed_fields(a: &Value, b: &Value) -> bool {
    match (a.as_array(), b.as_array()) {
        (Some(a), Some(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_without(x, y, &["time"]))
        }
        _ => a == b,
    }
}

pub(crate) fn schema(rt: &Rt) -> Schema<'_> {
    Schema {
        builtin: rt.builtin,
        kind: rt.kind(),
    }
}

fn scope(rt: &Rt, sub: Sub) -> Scope {
    match sub {
        Sub::Main => Scope::Main {
            skip_status: rt.t.status_subresource,
        },
        Sub::Status => Scope::Status,
    }
}

impl State {
    pub(crate) fn new(registry: Registry, ready_delay: Duration) -> Self {
        State {
            registry,
            objects: HashMap::new(),
            rv: 1,
            events: VecDeque::new(),
            history_limit: 10_000,
            compacted_rv: 0,
            history: HashMap::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            never_ready: HashSet::new(),
            ready_delay,
            deploy_changed: HashMap::new(),
            deploy_dirty: BTreeSet::new(),
            route_dirty: BTreeSet::new(),
            crd_dirty: BTreeSet::new(),
            rng: Rng::from_entropy(),
            next_ip: 10,
            external_metrics: BTreeMap::new(),
        }
    }

    pub(crate) fn log_request(&mut self, r: RequestRecord) {
        if self.requests.len() >= MAX_REQUESTS {
            self.requests.drain(..MAX_REQUESTS / 10);
        }
        self.requests.push(r);
    }

    /// Renders a stored object for a type version (apiVersion and kind set).
    pub(crate) fn render(rt: &Rt, obj: &Value) -> Value {
        State::rendered(rt, obj.clone())
    }

    /// [`State::render`] of an object of one's own.
    pub(crate) fn rendered(rt: &Rt, mut obj: Value) -> Value {
        if crate::events::is_events_view(rt) {
            obj = crate::events::to_view(obj);
        }
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(rt.t.api_version()));
            m.insert("kind".into(), json!(rt.kind()));
        }
        obj
    }

    fn stored(&self, rt: &Rt, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(&rt.storage_key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    pub(crate) fn get(&self, rt: &Rt, ns: &str, name: &str) -> Option<&Value> {
        self.stored(rt, ns, name).map(|v| &**v)
    }

    /// [`State::get`] as a share of the stored version, to be read after the lock is let go.
    pub(crate) fn get_shared(&self, rt: &Rt, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.stored(rt, ns, name).cloned()
    }

    /// Objects of a type, in a namespace or all, sorted by namespace and name.
    pub(crate) fn list(&self, key: &StorageKey, ns: Option<&str>) -> Vec<&Value> {
        match self.objects.get(key) {
            None => Vec::new(),
            Some(m) => match ns {
                None => m.values().map(|v| &**v).collect(),
                Some(n) => in_namespace(m, n.to_string()).map(|(_, v)| &**v).collect(),
            },
        }
    }

    /// The objects of a namespace whose `metadata.ownerReferences` name `uid`, as shares of
    /// their stored versions (no copies: a controller reads them and writes new ones).
    pub(crate) fn owned_by(&self, key: &StorageKey, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(key) else {
            return Vec::new();
        };
        in_namespace(m, ns.to_string())
            .map(|(_, v)| v)
            .filter(|o| owned_by_uid(o, uid))
            .cloned()
            .collect()
    }

    pub(crate) fn history(&self, rt: &Rt, ns: &str, name: &str) -> Vec<Value> {
        self.history
            .get(&(
                rt.group().to_string(),
                rt.plural().to_string(),
                ns.to_string(),
                name.to_string(),
            ))
            .map(|h| h.iter().map(|o| State::render(rt, o)).collect())
            .unwrap_or_default()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".to_string()))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    /// Stores (or removes, for DELETED) an object under a new resourceVersion and records the event.
    fn commit(
        &mut self,
        key: &StorageKey,
        ns: &str,
        name: &str,
        mut obj: Value,
        etype: &'static str,
        prev: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
            self.registry.sync_crd(&obj, etype == "DELETED");
            if etype == "DELETED" {
                self.delete_custom_objects(&obj);
                self.crd_dirty.remove(name);
            } else {
                self.crd_dirty.insert(name.to_string());
            }
        }
        if key.0 == "gateway.networking.k8s.io" && key.1 == "httproutes" {
            let id = (ns.to_string(), name.to_string());
            if etype == "DELETED" {
                self.route_dirty.remove(&id);
            } else {
                self.route_dirty.insert(id);
            }
        }
        let is_deployment = key.0 == "apps" && key.1 == "deployments";
        if (key.0 == "apps" && key.1 == "replicasets") || (key.0.is_empty() && key.1 == "pods") {
            // Every Deployment of the namespace may own it: each is looked at again.
            if let Some(deployments) = self
                .objects
                .get(&("apps".to_string(), "deployments".to_string()))
            {
                for (id, _) in in_namespace(deployments, ns.to_string()) {
                    self.deploy_dirty.insert(id.clone());
                }
            }
        }
        let store = self.objects.entry(key.clone()).or_default();
        let id = (ns.to_string(), name.to_string());
        if etype == "DELETED" {
            store.remove(&id);
            if is_deployment {
                self.deploy_changed.remove(&id);
                self.deploy_dirty.remove(&id);
            }
        }
        let obj = Arc::new(obj);
        if etype != "DELETED" {
            store.insert(id.clone(), obj.clone());
            if is_deployment {
                let generation = meta(&obj)
                    .and_then(|m| m.get("generation"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let changed = self
                    .deploy_changed
                    .get(&id)
                    .is_none_or(|(g, _)| *g != generation);
                if changed {
                    self.deploy_changed
                        .insert(id.clone(), (generation, Instant::now()));
                }
                self.deploy_dirty.insert(id);
            }
        }
        let hist_entry = if etype == "DELETED" {
            let mut gone = Value::clone(&obj);
            if let Some(m) = gone.get_mut("metadata").and_then(Value::as_object_mut) {
                m.entry("deletionTimestamp")
                    .or_insert_with(|| json!(now_rfc3339()));
            }
            Arc::new(gone)
        } else {
            obj.clone()
        };
        self.history
            .entry((
                key.0.clone(),
                key.1.clone(),
                ns.to_string(),
                name.to_string(),
            ))
            .or_default()
            .push(hist_entry);
        self.events.push_back(Event {
            rv,
            key: key.clone(),
            namespace: ns.to_string(),
            etype,
            object: obj.clone(),
            prev,
        });
        while self.events.len() > self.history_limit {
            if let Some(e) = self.events.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
        obj
    }

    /// The core group's Events, where `events.k8s.io` Events are stored.
    fn core_events(&self) -> ApiResult<Arc<Rt>> {
        self.registry
            .lookup("", "v1", "events")
            .ok_or_else(|| ApiError::not_found("events", "", ""))
    }

    fn check_type(&self, rt: &Rt, obj: &Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let expected = rt.t.api_version();
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
            if av != expected {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({expected})"
                )));
            }
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
            if kind != rt.kind() {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({kind}) does not match the expected kind ({})",
                    rt.kind()
                )));
            }
        }
        Ok(())
    }

    fn check_namespace(rt: &Rt, obj: &mut Value, ns: Option<&str>) -> ApiResult<String> {
        let m = meta_mut(obj)?;
        if rt.t.namespaced {
            let url_ns = ns.ok_or_else(ApiError::method_not_allowed)?;
            match m.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {}
            }
            m.insert("namespace".into(), json!(url_ns));
            Ok(url_ns.to_string())
        } else {
            m.remove("namespace");
            Ok(String::new())
        }
    }

    /// The stored CustomResourceDefinition of a custom type.
    fn crd_of(&self, rt: &Rt) -> Option<&Value> {
        if rt.builtin {
            return None;
        }
        self.objects
            .get(&(
                "apiextensions.k8s.io".to_string(),
                "customresourcedefinitions".to_string(),
            ))?
            .get(&(String::new(), format!("{}.{}", rt.plural(), rt.group())))
            .map(|c| c.as_ref())
    }

    /// Drops the fields the type's schema does not have (reported as `fieldValidation`
    /// says) and checks a custom resource's values against its CRD's schema.
    fn check_fields(&self, rt: &Rt, obj: &mut Value, ctx: &WriteCtx, name: &str) -> ApiResult<()> {
        crate::schema::check_object(rt, self.crd_of(rt), obj, ctx, name)
    }

    /// An apply configuration of a built-in kind with a field the kind's schema does not
    /// have is refused whatever `fieldValidation` says, as the real server's typed patch is.
    fn check_apply_fields(&self, rt: &Rt, cfg: &Value, ctx: &WriteCtx) -> ApiResult<()> {
        // A custom resource's apply configuration is pruned as any write of it is.
        if !rt.builtin {
            return Ok(());
        }
        let mut copy = cfg.clone();
        let unknown =
            crate::schema::unknown_fields(rt, self.crd_of(rt), &mut copy, ctx.validation.is_none());
        match unknown.first() {
            None => Ok(()),
            Some(field) => Err(ApiError::bad_request(format!(
                "failed to create typed patch object ({}/{}, Kind={}): .{field}: field not declared in schema",
                rt.group(),
                rt.t.version,
                rt.kind()
            ))),
        }
    }

    fn alloc_ip(&mut self) -> String {
        self.next_ip += 1;
        let n = self.next_ip;
        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }

    fn defaults(&mut self, rt: &Rt, obj: &mut Value, old: Option<&Value>) {
        let mut next_ip = || self.alloc_ip();
        kinds::apply_defaults(rt, obj, old, &mut next_ip);
    }

    /// POST.
    pub(crate) fn create(
        &mut self,
        rt: &Rt,
        ns: Option<&str>,
        body: Value,
        ctx: &WriteCtx,
    ) -> ApiResult<Written> {
        self.create_with(rt, ns, body, ctx, None)
    }

    fn create_with(
        &mut self,
        rt: &Rt,
        ns: Option<&str>,
        mut obj: Value,
        ctx: &WriteCtx,
        applied: Option<Vec<Entry>>,
    ) -> ApiResult<Written> {
        self.check_type(rt, &obj)?;
        // An `events.k8s.io` Event is checked as one and stored as a core Event.
        let core;
        let rt = if crate::events::is_events_view(rt) {
            let namespace = ns.unwrap_or_default().to_string();
            crate::events::validate_create(&obj, &namespace)?;
            obj = crate::events::to_core(obj);
            core = self.core_events()?;
            &*core
        } else {
            rt
        };
        let ns = State::check_namespace(rt, &mut obj, ns)?;
        let suffix = self.rng.suffix(5);
        let uid = self.rng.uuid();
        let now = now_rfc3339();
        let m = meta_mut(&mut obj)?;
        let name = match m
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(n) => n.to_string(),
            None => match m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(prefix) => {
                    let n = format!("{prefix}{suffix}");
                    m.insert("name".into(), json!(n));
                    n
                }
                None => {
                    return Err(ApiError::invalid(
                        rt.kind(),
                        rt.group(),
                        "",
                        vec![Cause::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ))
                }
            },
        };
        kinds::validate_name(rt, &name)?;
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now));
        m.insert("generation".into(), json!(1));
        if rt.t.namespaced && !self.namespace_exists(&ns) {
            return Err(ApiError::not_found("namespaces", "", &ns));
        }
        if self.get(rt, &ns, &name).is_some() {
            return Err(ApiError::already_exists(rt.plural(), rt.group(), &name));
        }
        if rt.t.status_subresource {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        self.defaults(rt, &mut obj, None);
        self.check_fields(rt, &mut obj, ctx, &name)?;
        kinds::validate(rt, &obj, None)?;
        crate::admission::admit(rt, &obj)?;
        let entries = match applied {
            Some(e) => e,
            None => {
                let mut entries = Vec::new();
                managed::record_update(
                    None,
                    &obj,
                    &mut entries,
                    &ctx.manager,
                    None,
                    &rt.t.api_version(),
                    &now,
                    schema(rt),
                    scope(rt, Sub::Main),
                );
                entries
            }
        };
        set_managed(&mut obj, entries);
        let obj = State::rendered(rt, obj);
        if ctx.dry_run {
            return Ok(Written::Built(obj));
        }
        Ok(Written::Stored(self.commit(
            &rt.storage_key(),
            &ns,
            &name,
            obj,
            "ADDED",
            None,
        )))
    }

    /// PUT (main resource or status).
    pub(crate) fn update(
        &mut self,
        rt: &Rt,
        ns: Option<&str>,
        name: &str,
        body: Value,
        ctx: &WriteCtx,
        sub: Sub,
    ) -> ApiResult<Written> {
        self.update_with(rt, ns, name, body, ctx, sub, None, rt.builtin)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_with(
        &mut self,
        rt: &Rt,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        ctx: &WriteCtx,
        sub: Sub,
        applied: Option<Vec<Entry>>,
        allow_unconditional: bool,
    ) -> ApiResult<Written> {
        self.check_type(rt, &body)?;
        // An `events.k8s.io` Event is stored as a core Event.
        let core;
        let rt = if crate::events::is_events_view(rt) {
            body = crate::events::to_core(body);
            core = self.core_events()?;
            &*core
        } else {
            rt
        };
        let ns = State::check_namespace(rt, &mut body, ns)?;
        let old = self
            .get_shared(rt, &ns, name)
            .ok_or_else(|| ApiError::not_found(rt.plural(), rt.group(), name))?;
        {
            let m = meta_mut(&mut body)?;
            match m.get("name").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                }
                _ => {
                    m.insert("name".into(), json!(name));
                }
            }
            let old_rv = meta_str(&old, "resourceVersion").unwrap_or_default();
            match m
                .get("resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(rv) if rv != old_rv => {
                    return Err(ApiError::stale(rt.plural(), rt.group(), name))
                }
                Some(_) => {}
                None if !allow_unconditional => {
                    return Err(ApiError::invalid(
                        rt.kind(),
                        rt.group(),
                        name,
                        vec![Cause::invalid(
                            "metadata.resourceVersion",
                            &json!("0x0"),
                            "must be specified for an update",
                        )],
                    ))
                }
                None => {}
            }
        }
        let mut new = match sub {
            Sub::Main => {
                let mut new = body;
                if rt.t.status_subresource {
                    if let Some(o) = new.as_object_mut() {
                        match old.get("status") {
                            Some(s) => o.insert("status".into(), s.clone()),
                            None => o.remove("status"),
                        };
                    }
                }
                new
            }
            Sub::Status => {
                let mut new = Value::clone(&old);
                if let Some(o) = new.as_object_mut() {
                    match body.get("status") {
                        Some(s) if !s.is_null() => o.insert("status".into(), s.clone()),
                        _ => o.remove("status"),
                    };
                }
                new
            }
        };
        // System metadata comes from the stored object.
        {
            let empty = Map::new();
            let old_meta = meta(&old).unwrap_or(&empty);
            let m = meta_mut(&mut new)?;
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.remove("selfLink");
            m.remove("resourceVersion");
            // Without managedFields in the body the stored ones are kept.
            if m.get("managedFields").is_none_or(Value::is_null) {
                if let Some(mf) = old_meta.get("managedFields") {
                    m.insert("managedFields".into(), mf.clone());
                }
            }
        }
        self.defaults(rt, &mut new, Some(&old));
        self.check_fields(rt, &mut new, ctx, name)?;
        kinds::validate(rt, &new, Some(&old))?;
        crate::admission::admit(rt, &new)?;
        if !same_spec(&new, &old) {
            let g = meta(&old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new)?.insert("generation".into(), json!(g + 1));
        }
        let now = now_rfc3339();
        let entries = match applied {
            Some(e) => e,
            None => {
                let mut entries = managed::take_entries(&mut new);
                managed::record_update(
                    Some(&old),
                    &new,
                    &mut entries,
                    &ctx.manager,
                    sub.name(),
                    &rt.t.api_version(),
                    &now,
                    schema(rt),
                    scope(rt, sub),
                );
                entries
            }
        };
        set_managed(&mut new, entries);
        let new = State::rendered(rt, new);
        // A write that changes nothing is not stored (no new resourceVersion, no event).
        if same_object(&new, &old) {
            return Ok(Written::Stored(old));
        }
        if ctx.dry_run {
            let mut out = new;
            if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
                if let Some(rv) = meta_str(&old, "resourceVersion") {
                    m.insert("resourceVersion".into(), json!(rv));
                }
            }
            return Ok(Written::Built(out));
        }
        let key = rt.storage_key();
        // The last finalizer removed from an object being deleted: it goes away.
        let finalizers_empty = meta(&new)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if meta_str(&new, "deletionTimestamp").is_some() && finalizers_empty {
            let stored = self.commit(&key, &ns, name, new, "DELETED", Some(old));
            self.cascade(&stored, None);
            return Ok(Written::Stored(stored));
        }
        Ok(Written::Stored(self.commit(
            &key,
            &ns,
            name,
            new,
            "MODIFIED",
            Some(old),
        )))
    }

    /// PATCH with any of the four patch types.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: &Rt,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        body: &[u8],
        ctx: &WriteCtx,
        sub: Sub,
        force: bool,
        field_manager_given: bool,
    ) -> ApiResult<Written> {
        let accepted: &[&str] = if rt.builtin {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]
        } else {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        };
        let ct = content_type.split(';').next().unwrap_or_default().trim();
        if !accepted.contains(&ct) {
            return Err(ApiError::unsupported_media_type(ct, accepted));
        }
        let ns_key = if rt.t.namespaced {
            ns.unwrap_or_default()
        } else {
            ""
        };
        if ct == "application/apply-patch+yaml" {
            if !field_manager_given {
                return Err(ApiError::invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    vec![Cause::required(
                        "fieldManager",
                        "is required for apply patch",
                    )],
                ));
            }
            let cfg = parse_apply_body(body)?;
            return self.apply(rt, ns, name, cfg, ctx, sub, force);
        }
        let old = self
            .get(rt, ns_key, name)
            .ok_or_else(|| ApiError::not_found(rt.plural(), rt.group(), name))?;
        let mut target = State::render(rt, old);
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        match ct {
            "application/json-patch+json" => {
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                json_patch::patch(&mut target, &ops).map_err(|e| {
                    let mut err = ApiError::new(
                        422,
                        "Invalid",
                        "the server rejected our request due to an error in our request",
                    );
                    err.causes.push(Cause {
                        reason: "UnexpectedServerResponse".into(),
                        message: e.to_string(),
                        field: String::new(),
                    });
                    err
                })?;
            }
            "application/merge-patch+json" => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding patch: a merge patch must be a JSON object",
                    ));
                }
                json_patch::merge(&mut target, &patch);
            }
            _ => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding patch: a strategic merge patch must be a JSON object",
                    ));
                }
                strategic_merge(&mut target, &patch, rt.kind()).map_err(ApiError::bad_request)?;
            }
        }
        // The patched object must still be of this type and name.
        if target.get("metadata").is_some_and(|m| !m.is_object()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        self.update_with(rt, ns, name, target, ctx, sub, None, true)
    }

    /// Server-side apply (creates the object if absent).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &Rt,
        ns: Option<&str>,
        name: &str,
        mut cfg: Value,
        ctx: &WriteCtx,
        sub: Sub,
        force: bool,
    ) -> ApiResult<Written> {
        if !cfg.is_object() {
            return Err(ApiError::bad_request(
                "the body of an apply patch must be an object",
            ));
        }
        let expected = rt.t.api_version();
        match cfg.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => return Err(ApiError::bad_request("apiVersion must be set")),
            Some(av) if av != expected => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({expected})"
                )))
            }
            _ => {}
        }
        match cfg.get("kind").and_then(Value::as_str) {
            None | Some("") => return Err(ApiError::bad_request("kind must be set")),
            Some(k) if k != rt.kind() => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind()
                )))
            }
            _ => {}
        }
        {
            let m = meta_mut(&mut cfg)?;
            match m.get("name").and_then(Value::as_str) {
                Some(n) if n != name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                }
                _ => {
                    m.insert("name".into(), json!(name));
                }
            }
        }
        let ns_key = if rt.t.namespaced {
            ns.unwrap_or_default().to_string()
        } else {
            String::new()
        };
        let live = self.get(rt, &ns_key, name).cloned();
        let sc = scope(rt, sub);
        // What the applier may set: for the main resource not `.status` of a type with a
        // status subresource; for /status only `.status`.
        if let Some(o) = cfg.as_object_mut() {
            match sc {
                Scope::Main { skip_status: true } => {
                    o.remove("status");
                }
                Scope::Status => o.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                }),
                _ => {}
            }
        }
        if sub == Sub::Status {
            if let Some(m) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
                m.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "resourceVersion"));
            }
        }
        let mut entries = live
            .as_ref()
            .map(managed::parse_entries)
            .unwrap_or_default();
        let base = match &live {
            Some(l) => State::render(rt, l),
            None => {
                if sub == Sub::Status {
                    return Err(ApiError::not_found(rt.plural(), rt.group(), name));
                }
                json!({"apiVersion": expected, "kind": rt.kind(), "metadata": {"name": name}})
            }
        };
        self.check_apply_fields(rt, &cfg, ctx)?;
        let now = now_rfc3339();
        let merged = managed::apply(
            &base,
            &cfg,
            &mut entries,
            &ctx.manager,
            sub.name(),
            &expected,
            &now,
            force,
            schema(rt),
            sc,
        )
        .map_err(|conflicts| conflict_error(rt, name, &conflicts))?;
        match live {
            None => self.create_with(rt, ns, merged, ctx, Some(entries)),
            Some(_) => self.update_with(rt, ns, name, merged, ctx, sub, Some(entries), true),
        }
    }

    /// DELETE of one object.
    pub(crate) fn delete(
        &mut self,
        rt: &Rt,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> ApiResult<Written> {
        let old = self
            .get_shared(rt, ns, name)
            .ok_or_else(|| ApiError::not_found(rt.plural(), rt.group(), name))?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = meta_str(&old, "uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::conflict(
                    rt.plural(),
                    rt.group(),
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            let actual = meta_str(&old, "resourceVersion").unwrap_or_default();
            if rv != actual {
                return Err(ApiError::conflict(
                    rt.plural(),
                    rt.group(),
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"),
                ));
            }
        }
        if ctx.dry_run {
            return Ok(Written::Stored(old));
        }
        let key = rt.storage_key();
        let has_finalizers = meta(&old)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta_str(&old, "deletionTimestamp").is_some() {
                return Ok(Written::Stored(old));
            }
            let mut new = Value::clone(&old);
            let m = meta_mut(&mut new)?;
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok(Written::Stored(self.commit(
                &key,
                ns,
                name,
                new,
                "MODIFIED",
                Some(old),
            )));
        }
        if key.0.is_empty() && key.1 == "namespaces" {
            self.delete_namespace_contents(name);
        }
        let stored = self.commit(&key, ns, name, Arc::unwrap_or_clone(old), "DELETED", None);
        self.cascade(&stored, opts.propagation.as_deref());
        Ok(Written::Stored(stored))
    }

    /// The objects of a deleted CustomResourceDefinition go with it.
    fn delete_custom_objects(&mut self, crd: &Value) {
        let text = |ptr: &str| {
            crd.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let key: StorageKey = (text("/spec/group"), text("/spec/names/plural"));
        let doomed: Vec<((String, String), Value)> = self
            .objects
            .get(&key)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::clone(v)))
                    .collect()
            })
            .unwrap_or_default();
        for ((ns, name), obj) in doomed {
            self.commit(&key, &ns, &name, obj, "DELETED", None);
        }
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        let mut doomed = Vec::new();
        for (key, objs) in &self.objects {
            for ((ons, oname), obj) in objs {
                if ons == ns && !ons.is_empty() {
                    doomed.push((key.clone(), oname.clone(), Value::clone(obj)));
                }
            }
        }
        for (key, name, obj) in doomed {
            self.commit(&key, ns, &name, obj, "DELETED", None);
        }
    }

    /// Garbage collection of dependents (ownerReferences) of a deleted object.
    fn cascade(&mut self, deleted: &Value, propagation: Option<&str>) {
        let Some(uid) = meta_str(deleted, "uid").map(String::from) else {
            return;
        };
        // A namespaced owner's dependents are in its namespace (an owner reference cannot
        // cross namespaces, and a cluster-scoped object cannot have a namespaced owner): one
        // range of each type's map, not every object of the store.
        let owner_ns = meta_str(deleted, "namespace")
            .unwrap_or_default()
            .to_string();
        let mut dependents = Vec::new();
        for (key, objs) in &self.objects {
            let candidates: Box<dyn Iterator<Item = Stored<'_>>> = if owner_ns.is_empty() {
                Box::new(objs.iter())
            } else {
                Box::new(in_namespace(objs, owner_ns.clone()))
            };
            for ((ons, oname), obj) in candidates {
                if owned_by_uid(obj, &uid) {
                    dependents.push((key.clone(), ons.clone(), oname.clone(), Arc::clone(obj)));
                }
            }
        }
        for (key, ns, name, obj) in dependents {
            if propagation == Some("Orphan") {
                let mut new = Value::clone(&obj);
                if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                self.commit(&key, &ns, &name, new, "MODIFIED", Some(obj));
            } else {
                let stored =
                    self.commit(&key, &ns, &name, Arc::unwrap_or_clone(obj), "DELETED", None);
                self.cascade(&stored, propagation);
            }
        }
    }

    /// Internal status write (the simulated controllers), through the same path as PUT /status.
    pub(crate) fn write_status(
        &mut self,
        key: &StorageKey,
        ns: &str,
        name: &str,
        status: Value,
        manager: &str,
    ) -> ApiResult<Written> {
        let rt = self
            .preferred_rt(key)
            .ok_or_else(|| ApiError::internal("no such resource type"))?;
        let ns_opt = rt.t.namespaced.then_some(ns);
        let current = self
            .get(&rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt.plural(), rt.group(), name))?;
        let mut body = State::rendered(&rt, current);
        body["status"] = status;
        self.update(
            &rt,
            ns_opt,
            name,
            body,
            &WriteCtx::new(manager),
            Sub::Status,
        )
    }

    /// The highest-priority version's type for a storage key.
    pub(crate) fn preferred_rt(&self, key: &StorageKey) -> Option<Arc<Rt>> {
        self.registry.preferred(&key.0, &key.1)
    }
}

fn set_managed(obj: &mut Value, entries: Vec<Entry>) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let rendered = managed::render_entries(entries);
        if rendered.as_array().is_some_and(Vec::is_empty) {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), rendered);
        }
    }
}

fn conflict_error(rt: &Rt, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
    let n = conflicts.len();
    let mut by_manager: Vec<(String, String, Vec<String>)> = Vec::new();
    for c in conflicts {
        let p = managed::display_path(&c.path);
        match by_manager.iter_mut().find(|(m, _, _)| *m == c.manager) {
            Some((_, _, paths)) => paths.push(p),
            None => by_manager.push((c.manager.clone(), c.api_version.clone(), vec![p])),
        }
    }
    let parts: Vec<String> = by_manager
        .iter()
        .map(|(m, av, paths)| {
            if paths.len() == 1 {
                format!("conflict with \"{m}\" using {av}: {}", paths[0])
            } else {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with \"{m}\" using {av}:\n{}", list.join("\n"))
            }
        })
        .collect();
    let plural_s = if n == 1 { "conflict" } else { "conflicts" };
    let mut err = ApiError::new(
        409,
        "Conflict",
        format!("Apply failed with {n} {plural_s}: {}", parts.join("\n")),
    );
    err.name = name.to_string();
    err.group = rt.group().to_string();
    err.kind = rt.plural().to_string();
    err.causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            field: managed::display_path(&c.path),
        })
        .collect();
    let _ = qualified;
    err
}

/// An apply body: JSON, or YAML (converted to JSON).
fn parse_apply_body(body: &[u8]) -> ApiResult<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let doc = docs
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::bad_request("error decoding YAML: empty document"))?;
    yaml_to_json(&doc)
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> ApiResult<Value> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| json!(s)),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect::<ApiResult<Vec<_>>>()?),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported YAML map key {other:?}"
                        )))
                    }
                };
                m.insert(key, yaml_to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(ApiError::bad_request("unsupported YAML value"))
        }
    })
}

/// Looks up a type by `apiVersion` and kind (for [`crate::Emulator::insert`]).
pub(crate) fn rt_for_object(registry: &Registry, obj: &Value) -> Result<Arc<Rt>, String> {
    let av = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("apiVersion is required")?;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("kind is required")?;
    let (g, v) = crate::resources::split_api_version(av);
    registry
        .by_kind(g, v, kind)
        .ok_or_else(|| format!("no resource type for {av} {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let mut s = State::new(Registry::new(&[]), Duration::from_millis(10));
        let ns = s.registry.lookup("", "v1", "namespaces");
        if let Some(ns) = ns {
            let r = s.create(
                &ns,
                None,
                json!({"metadata": {"name": "default"}}),
                &WriteCtx::new("test"),
            );
            assert!(r.is_ok(), "{r:?}");
        }
        s
    }

    fn cm_rt(s: &State) -> Arc<Rt> {
        match s.registry.lookup("", "v1", "configmaps") {
            Some(rt) => rt,
            None => panic!("configmaps not registered"),
        }
    }

    /// The `fieldsV1` of `manager`'s entry, as stored.
    fn fields_of(obj: &Value, manager: &str) -> Option<Value> {
        obj.pointer("/metadata/managedFields")?
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
            .map(|e| e["fieldsV1"].clone())
    }

    #[test]
    fn an_update_changes_the_entries_whose_fields_it_takes_and_keeps_the_others_as_they_were() {
        let mut s = state();
        let rt = cm_rt(&s);
        let write = |s: &mut State, manager: &str, data: Value| {
            let current = s
                .get(&rt, "default", "a")
                .map(|o| State::render(&rt, o))
                .unwrap_or_else(|| json!({"metadata": {"name": "a"}}));
            let mut body = current;
            for (k, v) in data.as_object().into_iter().flatten() {
                body["data"][k] = v.clone();
            }
            let ctx = WriteCtx::new(manager);
            let r = if s.get(&rt, "default", "a").is_some() {
                s.update(&rt, Some("default"), "a", body, &ctx, Sub::Main)
            } else {
                s.create(&rt, Some("default"), body, &ctx)
            };
            r.map(|o| o.render(&rt)).unwrap_or_default()
        };
        write(&mut s, "a", json!({"k": "1", "j": "1"}));
        // A client's own spelling of an entry it does not change is kept as it is.
        let mut spelled = s
            .get(&rt, "default", "a")
            .map(|o| State::render(&rt, o))
            .unwrap_or_default();
        let mut extra = spelled["metadata"]["managedFields"][0].clone();
        extra["manager"] = json!("c");
        extra["fieldsV1"] = json!({"f:metadata": {"f:labels": {"v:x": {}}}});
        if let Some(a) = spelled["metadata"]["managedFields"].as_array_mut() {
            a.push(extra);
        }
        spelled["data"]["j"] = json!("2");
        let r = s.update(
            &rt,
            Some("default"),
            "a",
            spelled,
            &WriteCtx::new("a"),
            Sub::Main,
        );
        assert!(r.is_ok(), "{r:?}");
        let before = write(&mut s, "b", json!({"l": "1"}));
        assert_eq!(
            fields_of(&before, "a"),
            Some(json!({"f:data": {"f:j": {}, "f:k": {}}}))
        );
        assert_eq!(
            fields_of(&before, "c"),
            Some(json!({"f:metadata": {"f:labels": {"v:x": {}}}}))
        );
        // b takes data.k from a: a's entry loses it, c's stays as it was spelled.
        let after = write(&mut s, "b", json!({"k": "2"}));
        assert_eq!(fields_of(&after, "a"), Some(json!({"f:data": {"f:j": {}}})));
        assert_eq!(
            fields_of(&after, "b"),
            Some(json!({"f:data": {"f:k": {}, "f:l": {}}}))
        );
        assert_eq!(fields_of(&after, "c"), fields_of(&before, "c"));
    }

    #[test]
    fn create_update_conflict_and_noop() {
        let mut s = state();
        let rt = cm_rt(&s);
        let ctx = WriteCtx::new("test");
        let created = s
            .create(
                &rt,
                Some("default"),
                json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
                &ctx,
            )
            .map(|o| o.render(&rt))
            .unwrap_or_default();
        let rv = created["metadata"]["resourceVersion"].clone();
        assert_eq!(created["metadata"]["generation"], 1);
        let mut stale = created.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let err = s
            .update(&rt, Some("default"), "a", stale, &ctx, Sub::Main)
            .err();
        assert_eq!(err.map(|e| e.reason.clone()), Some("Conflict".to_string()));
        // No-op update keeps the resourceVersion.
        let same = s
            .update(&rt, Some("default"), "a", created.clone(), &ctx, Sub::Main)
            .map(|o| o.render(&rt))
            .unwrap_or_default();
        assert_eq!(same["metadata"]["resourceVersion"], rv);
        let mut changed = created;
        changed["data"]["k"] = json!("w");
        let updated = s
            .update(&rt, Some("default"), "a", changed, &ctx, Sub::Main)
            .map(|o| o.render(&rt))
            .unwrap_or_default();
        assert_ne!(updated["metadata"]["resourceVersion"], rv);
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(s.history(&rt, "default", "a").len(), 2);
    }

    #[test]
    fn missing_namespace_and_bad_name() {
        let mut s = state();
        let rt = cm_rt(&s);
        let ctx = WriteCtx::new("test");
        let err = s
            .create(&rt, Some("nope"), json!({"metadata": {"name": "a"}}), &ctx)
            .err();
        assert_eq!(
            err.map(|e| e.message.clone()),
            Some("namespaces \"nope\" not found".to_string())
        );
        let err = s
            .create(
                &rt,
                Some("default"),
                json!({"metadata": {"name": "A_b"}}),
                &ctx,
            )
            .err();
        assert_eq!(err.map(|e| e.code), Some(422));
        let gen = s
            .create(
                &rt,
                Some("default"),
                json!({"metadata": {"generateName": "x-"}}),
                &ctx,
            )
            .map(|o| o.render(&rt))
            .unwrap_or_default();
        assert!(gen["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("x-") && n.len() == 7));
    }

    #[test]
    fn finalizers_delay_deletion() {
        let mut s = state();
        let rt = cm_rt(&s);
        let ctx = WriteCtx::new("test");
        let _ = s.create(
            &rt,
            Some("default"),
            json!({"metadata": {"name": "f", "finalizers": ["x/y"]}}),
            &ctx,
        );
        let d = s
            .delete(&rt, "default", "f", &DeleteOpts::default(), &ctx)
            .map(|o| o.render(&rt))
            .unwrap_or_default();
        assert!(d["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&rt, "default", "f").is_some());
        let r = s.patch(
            &rt,
            Some("default"),
            "f",
            "application/merge-patch+json",
            br#"{"metadata":{"finalizers":null}}"#,
            &ctx,
            Sub::Main,
            false,
            false,
        );
        assert!(r.is_ok(), "{r:?}");
        assert!(s.get(&rt, "default", "f").is_none());
    }

    #[test]
    fn owner_references_cascade() {
        let mut s = state();
        let rt = cm_rt(&s);
        let ctx = WriteCtx::new("test");
        let owner = s
            .create(
                &rt,
                Some("default"),
                json!({"metadata": {"name": "owner"}}),
                &ctx,
            )
            .map(|o| o.render(&rt))
            .unwrap_or_default();
        let uid = owner["metadata"]["uid"].clone();
        let _ = s.create(
            &rt,
            Some("default"),
            json!({"metadata": {"name": "dep", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}),
            &ctx,
        );
        assert!(s
            .delete(&rt, "default", "owner", &DeleteOpts::default(), &ctx)
            .is_ok());
        assert!(s.get(&rt, "default", "dep").is_none());
    }

    #[test]
    fn history_compaction() {
        let mut s = state();
        s.history_limit = 3;
        let rt = cm_rt(&s);
        let ctx = WriteCtx::new("test");
        for i in 0..5 {
            let _ = s.create(
                &rt,
                Some("default"),
                json!({"metadata": {"name": format!("c{i}")}}),
                &ctx,
            );
        }
        assert_eq!(s.events.len(), 3);
        assert!(s.compacted_rv > 0);
    }

    #[test]
    fn yaml_apply_body() {
        let v = parse_apply_body(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n",
        );
        assert_eq!(v.ok().map(|v| v["data"]["k"].clone()), Some(json!("v")));
    }
}
