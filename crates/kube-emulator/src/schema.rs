//! Object schemas: the built-in kinds' OpenAPI definitions (from `k8s-openapi`'s `schemars`
//! implementations), the schemas of the built-in custom types (Gateway API from the
//! `gateway-api` crate, Flagger from its CRD as vendored data), and the walks over a schema
//! that the API server does on a write: finding (and dropping) unknown fields, and checking a
//! custom resource's values against its structural schema.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::errors::{ApiError, ApiResult, Cause};
use crate::resources::Rt;
use crate::store::{FieldValidation, WriteCtx};

/// Where definitions are referenced from (`$ref`), as in an OpenAPI v3 document.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// The built-in kinds with the OpenAPI definitions they reach.
pub(crate) struct Builtin {
    /// Definition name → schema (OpenAPI v3 form: `$ref`s to [`REF_PREFIX`], a `$ref` with
    /// siblings wrapped in `allOf`).
    pub defs: Map<String, Value>,
    /// (group, version, kind) → definition name.
    pub kinds: Vec<(&'static str, &'static str, &'static str, String)>,
}

impl Builtin {
    pub(crate) fn def_name(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .iter()
            .find(|(g, v, k, _)| *g == group && *v == version && *k == kind)
            .map(|(_, _, _, n)| n.as_str())
    }
}

macro_rules! builtin_kinds {
    ($gen:ident, $kinds:ident; $( ($g:literal, $v:literal, $k:literal, $t:ty) ),* $(,)?) => {
        $(
            let schema = $gen.subschema_for::<$t>();
            let name = schema
                .as_value()
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
                .unwrap_or($k)
                .to_string();
            $kinds.push(($g, $v, $k, name));
        )*
    };
}

fn build_builtin() -> Builtin {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, events, networking, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    builtin_kinds!(gen, kinds;
        ("", "v1", "Namespace", core::v1::Namespace),
        ("", "v1", "Service", core::v1::Service),
        ("", "v1", "ConfigMap", core::v1::ConfigMap),
        ("", "v1", "Secret", core::v1::Secret),
        ("", "v1", "Pod", core::v1::Pod),
        ("", "v1", "Event", core::v1::Event),
        ("", "v1", "ServiceAccount", core::v1::ServiceAccount),
        ("apps", "v1", "Deployment", apps::v1::Deployment),
        ("apps", "v1", "DaemonSet", apps::v1::DaemonSet),
        ("apps", "v1", "StatefulSet", apps::v1::StatefulSet),
        ("apps", "v1", "ReplicaSet", apps::v1::ReplicaSet),
        ("autoscaling", "v2", "HorizontalPodAutoscaler", autoscaling::v2::HorizontalPodAutoscaler),
        ("coordination.k8s.io", "v1", "Lease", coordination::v1::Lease),
        ("networking.k8s.io", "v1", "Ingress", networking::v1::Ingress),
        ("events.k8s.io", "v1", "Event", events::v1::Event),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", apiext::CustomResourceDefinition),
        ("rbac.authorization.k8s.io", "v1", "Role", rbac::v1::Role),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", rbac::v1::RoleBinding),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole", rbac::v1::ClusterRole),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", rbac::v1::ClusterRoleBinding),
    );
    // What every group-version document refers to besides its kinds.
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::Status>();
    let mut defs = gen.take_definitions(true);
    add_patch_strategies(&mut defs);
    defs.insert(
        PATCH_DEF.to_string(),
        json!({
            "description": "The body of a PATCH: a JSON patch, a JSON merge patch, a strategic merge patch or an apply configuration, as the Content-Type says.",
            "type": "object",
        }),
    );
    Builtin { defs, kinds }
}

/// The strategic-merge keys of the built-in lists (the ones the emulator's strategic merge
/// patch and field ownership know, see `managed::merge_key`): (definition, property, key).
/// `k8s-openapi`'s schemas do not carry `x-kubernetes-patch-strategy`, and kubectl reads it
/// from the OpenAPI v3 document to compute a client-side apply patch.
const PATCH_KEYS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.Container", "env", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "mountPath"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.Container", "ports", "containerPort"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "port"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
    ),
];

fn add_patch_strategies(defs: &mut Map<String, Value>) {
    let with_conditions: Vec<String> = defs
        .iter()
        .filter(|(name, d)| {
            name.ends_with("Status") && d.pointer("/properties/conditions/items").is_some()
        })
        .map(|(name, _)| name.clone())
        .collect();
    let mut set = |def: &str, prop: &str, key: Option<&str>| {
        if let Some(p) = defs
            .get_mut(def)
            .and_then(|d| d.pointer_mut(&format!("/properties/{prop}")))
            .and_then(Value::as_object_mut)
        {
            p.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
            if let Some(k) = key {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(k));
            }
        }
    };
    for (def, prop, key) in PATCH_KEYS {
        set(def, prop, Some(key));
    }
    set(OBJECT_META_DEF, "finalizers", None);
    // Status conditions merge by `type`.
    for def in with_conditions {
        set(&def, "conditions", Some("type"));
    }
}

/// The name of the schema of a PATCH body.
pub(crate) const PATCH_DEF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
/// The name of `ObjectMeta`'s definition.
pub(crate) const OBJECT_META_DEF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// The built-in definitions, generated on first use and kept for the process.
pub(crate) fn builtin() -> &'static Builtin {
    static BUILTIN: OnceLock<Builtin> = OnceLock::new();
    BUILTIN.get_or_init(build_builtin)
}

/// The definitions `roots` reach through `$ref`s, `roots` included, sorted by name.
pub(crate) fn closure(defs: &Map<String, Value>, roots: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(def) = defs.get(&name) else { continue };
        collect_refs(def, &mut todo);
        out.insert(name, def.clone());
    }
    let mut sorted: Vec<(String, Value)> = out.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(name) = x.as_str().and_then(|r| r.strip_prefix(REF_PREFIX)) {
                        out.push(name.to_string());
                    }
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas of the built-in custom types.

/// The `openAPIV3Schema` of a built-in custom type's version, when the emulator has the real
/// one: Gateway API (HTTPRoute, Gateway, GatewayClass; the `gateway-api` crate's v1 types,
/// also used for v1beta1, whose schema is the same) and Flagger (Canary, MetricTemplate; the
/// CRD of Flagger v1.44.0) and Istio (VirtualService, DestinationRule; rebuilt from the
/// Istio 1.29.2 CRD's models, one schema for v1 and v1beta1, which Istio's CRD gives the same
/// schema) and Gloo (RouteTable, VirtualService, Upstream; the v1 schemas of Gloo's generated
/// CRDs).
pub(crate) fn known_crd_schema(group: &str, kind: &str) -> Option<Value> {
    // Kept as compact JSON text: a fraction of the memory of the parsed values, and parsed
    // in about a millisecond when an emulator starts.
    static SCHEMAS: OnceLock<Vec<(&'static str, &'static str, String)>> = OnceLock::new();
    let text = SCHEMAS
        .get_or_init(|| {
            build_crd_schemas()
                .into_iter()
                .filter_map(|(g, k, s)| Some((g, k, serde_json::to_string(&s).ok()?)))
                .collect()
        })
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, s)| s)?;
    serde_json::from_str(text).ok()
}

fn crd_schema_of<K: kube::CustomResourceExt>() -> Option<Value> {
    let crd = serde_json::to_value(K::crd()).ok()?;
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
}

/// Flagger's CRD schemas, as vendored in `data/` (see the crate's README).
const FLAGGER_SCHEMAS: &str = include_str!("../data/flagger-v1.44.0-crd-schemas.json");

/// Istio's CRD schemas, as vendored in `data/` (see the crate's README).
const ISTIO_SCHEMAS: &str = include_str!("../data/istio-1.29.2-crd-schemas.json");

/// Gloo's CRD schemas, as vendored in `data/` (see the crate's README).
const GLOO_SCHEMAS: &str = include_str!("../data/gloo-be7b6ae-crd-schemas.json");

/// The `schema` of each of `kinds` in a vendored file of the shape
/// `{"Kind": {"served": [...], "schema": {...}}}`.
fn vendored(
    out: &mut Vec<(&'static str, &'static str, Value)>,
    group: &'static str,
    kinds: &[&'static str],
    text: &str,
    project: &str,
) {
    match serde_json::from_str::<Value>(text) {
        Ok(all) => {
            for kind in kinds {
                match all.get(*kind).and_then(|k| k.get("schema")) {
                    Some(s) => out.push((group, *kind, s.clone())),
                    None => tracing::error!("the vendored {project} CRD schemas have no {kind}"),
                }
            }
        }
        Err(e) => tracing::error!("the vendored {project} CRD schemas do not parse: {e}"),
    }
}

fn build_crd_schemas() -> Vec<(&'static str, &'static str, Value)> {
    use gateway_api::apis::standard::{gatewayclasses, gateways, httproutes};
    let gw = "gateway.networking.k8s.io";
    let mut out = Vec::new();
    for (kind, schema) in [
        ("HTTPRoute", crd_schema_of::<httproutes::HttpRoute>()),
        ("Gateway", crd_schema_of::<gateways::Gateway>()),
        (
            "GatewayClass",
            crd_schema_of::<gatewayclasses::GatewayClass>(),
        ),
    ] {
        if let Some(s) = schema {
            out.push((gw, kind, s));
        }
    }
    vendored(
        &mut out,
        "flagger.app",
        &["Canary", "MetricTemplate"],
        FLAGGER_SCHEMAS,
        "Flagger",
    );
    vendored(
        &mut out,
        "networking.istio.io",
        &["VirtualService", "DestinationRule"],
        ISTIO_SCHEMAS,
        "Istio",
    );
    vendored(
        &mut out,
        "gateway.solo.io",
        &["RouteTable", "VirtualService"],
        GLOO_SCHEMAS,
        "Gloo",
    );
    vendored(
        &mut out,
        "gloo.solo.io",
        &["Upstream"],
        GLOO_SCHEMAS,
        "Gloo",
    );
    out
}

/// Whether a CRD version schema describes its objects (as opposed to keeping every field).
pub(crate) fn is_structural(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
        || schema.get("properties").is_some()
}

// ---------------------------------------------------------------------------------------------
// The checks of a write.

/// Drops the fields of `obj` that its type's schema does not have and names them. A built-in
/// object written by the emulator itself (`internal`) is not looked at; a custom resource
/// is looked at when its CRD's schema for the version describes its fields.
pub(crate) fn unknown_fields(
    rt: &Rt,
    crd: Option<&Value>,
    obj: &mut Value,
    internal: bool,
) -> Vec<String> {
    let mut unknown = Vec::new();
    if rt.builtin {
        if internal {
            return unknown;
        }
        let b = builtin();
        let Some(def) = b.def_name(&rt.t.group, &rt.t.version, &rt.t.kind) else {
            return unknown;
        };
        let root = json!({"$ref": format!("{REF_PREFIX}{def}")});
        let walk = Walk {
            defs: Some(&b.defs),
            structural: false,
        };
        walk.prune(obj, &root, &mut String::new(), &mut unknown, true);
    } else if let Some(schema) = custom_schema(rt, crd) {
        let walk = Walk {
            defs: None,
            structural: true,
        };
        walk.prune(obj, schema, &mut String::new(), &mut unknown, true);
    }
    unknown
}

/// The structural schema of a custom type's version, if its CRD has one.
fn custom_schema<'a>(rt: &Rt, crd: Option<&'a Value>) -> Option<&'a Value> {
    crd.and_then(|c| crate::openapi::crd_version_schema(c, &rt.t.version))
        .filter(|s| is_structural(s))
}

/// What the API server does with an object being written, after defaulting: unknown fields
/// are dropped (and reported as `ctx.validation` says: a `Warning` each, or a 400 for
/// `Strict`), then a custom resource's values are checked against its schema (422).
pub(crate) fn check_object(
    rt: &Rt,
    crd: Option<&Value>,
    obj: &mut Value,
    ctx: &WriteCtx,
    name: &str,
) -> ApiResult<()> {
    let unknown = unknown_fields(rt, crd, obj, ctx.validation.is_none());
    if !unknown.is_empty() {
        match ctx.validation {
            Some(FieldValidation::Strict) => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = rt.kind(),
                    version = rt.t.version,
                )));
            }
            Some(FieldValidation::Warn) => {
                let mut w = ctx.warnings.borrow_mut();
                w.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            }
            _ => {}
        }
    }
    if let Some(schema) = custom_schema(rt, crd) {
        let walk = Walk {
            defs: None,
            structural: true,
        };
        let mut causes = Vec::new();
        walk.validate(obj, schema, &mut String::new(), &mut causes);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt.kind(), rt.group(), name, causes));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Unknown fields.

/// How a schema is read.
#[derive(Clone, Copy)]
pub(crate) struct Walk<'a> {
    /// Definitions `$ref`s point to.
    pub defs: Option<&'a Map<String, Value>>,
    /// A structural schema of a custom resource: an object schema without properties keeps no
    /// field. For the built-in definitions such a schema is a free-form object (`FieldsV1`,
    /// `RawExtension`).
    pub structural: bool,
}

impl<'a> Walk<'a> {
    /// Follows a `$ref` (also one wrapped in a one-element `allOf`).
    fn resolve(&self, s: &'a Value) -> &'a Value {
        let mut s = s;
        for _ in 0..8 {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                match r
                    .strip_prefix(REF_PREFIX)
                    .and_then(|n| self.defs.and_then(|d| d.get(n)))
                {
                    Some(next) => s = next,
                    None => return s,
                }
            } else if s.get("properties").is_none() && s.get("type").is_none() {
                match s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                    Some([one]) => s = one,
                    _ => return s,
                }
            } else {
                return s;
            }
        }
        s
    }

    /// Removes the fields of `v` that `schema` does not describe, and names them (`spec.foo`,
    /// `spec.containers[0].bar`) in `unknown`. `root` keeps `apiVersion`, `kind` and
    /// `metadata` of the top level, as an embedded resource does.
    pub(crate) fn prune(
        &self,
        v: &mut Value,
        schema: &'a Value,
        path: &mut String,
        unknown: &mut Vec<String>,
        root: bool,
    ) {
        let s = self.resolve(schema);
        match v {
            Value::Object(m) => {
                let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
                let embedded = root || flag(s, "x-kubernetes-embedded-resource");
                let props = s.get("properties").and_then(Value::as_object);
                let additional = s.get("additionalProperties");
                if props.is_none() && additional.is_none() && (preserve || !self.structural) {
                    return;
                }
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    let sub = props.and_then(|p| p.get(&k)).or(match additional {
                        Some(a) if a.is_object() => Some(a),
                        _ => None,
                    });
                    let len = path.len();
                    let map_key = !props.is_some_and(|p| p.contains_key(&k)) && sub.is_some();
                    push_field(path, &k, !map_key);
                    match sub {
                        Some(sub) => {
                            // A custom resource's null where the schema is not nullable is
                            // dropped, as the API server prunes it before defaulting.
                            if self.structural
                                && m.get(&k).is_some_and(Value::is_null)
                                && !flag(self.resolve(sub), "nullable")
                            {
                                m.remove(&k);
                                path.truncate(len);
                                continue;
                            }
                            // A custom resource's metadata is the server's to check.
                            let skip = embedded && self.structural && k == "metadata";
                            if let Some(child) = m.get_mut(&k).filter(|_| !skip) {
                                self.prune(child, sub, path, unknown, false);
                            }
                        }
                        None => {
                            let kept = preserve
                                || additional == Some(&Value::Bool(true))
                                || (embedded
                                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
                            if !kept {
                                unknown.push(path.clone());
                                m.remove(&k);
                            }
                        }
                    }
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        self.prune(item, item_schema, path, unknown, false);
                        path.truncate(len);
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks the values of a custom resource against its structural schema (type, enum,
    /// required, minimum/maximum, minLength/maxLength, pattern, minItems/maxItems), the way
    /// the API server reports them.
    pub(crate) fn validate(
        &self,
        v: &Value,
        schema: &'a Value,
        path: &mut String,
        out: &mut Vec<Cause>,
    ) {
        let s = self.resolve(schema);
        if v.is_null() {
            if !flag(s, "nullable") && s.get("type").is_some() {
                out.push(type_cause(path, v, s));
            }
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string() || (flag(s, "x-kubernetes-int-or-string") && v.is_i64()),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                out.push(type_cause(path, v, s));
                return;
            }
        } else if flag(s, "x-kubernetes-int-or-string") && !(v.is_string() || v.is_i64()) {
            out.push(Cause {
                reason: "FieldValueTypeInvalid".into(),
                message: format!(
                    "Invalid value: \"{}\": {} in body must be of type integer,string: \"{}\"",
                    json_type(v),
                    body_path(path),
                    json_type(v)
                ),
                field: path.clone(),
            });
            return;
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            if !values.contains(v) {
                let supported: Vec<String> = values
                    .iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                let refs: Vec<&str> = supported.iter().map(String::as_str).collect();
                out.push(Cause::unsupported(path, v, &refs));
            }
        }
        match v {
            Value::Number(n) => self.check_number(n, s, path, out),
            Value::String(text) => self.check_string(text, v, s, path, out),
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                    if n > max {
                        out.push(Cause {
                            reason: "FieldValueTooMany".into(),
                            message: format!("Too many: {n}: must have at most {max} items"),
                            field: path.clone(),
                        });
                    }
                }
                if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                    if n < min {
                        out.push(Cause::invalid(
                            path,
                            &json!(n),
                            &format!(
                                "{} in body should have at least {min} items",
                                body_path(path)
                            ),
                        ));
                    }
                }
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        self.validate(item, item_schema, path, out);
                        path.truncate(len);
                    }
                }
            }
            Value::Object(m) => {
                for r in s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !m.contains_key(r) {
                        let len = path.len();
                        push_field(path, r, true);
                        out.push(Cause::required(path, ""));
                        path.truncate(len);
                    }
                }
                let props = s.get("properties").and_then(Value::as_object);
                let additional = s.get("additionalProperties").filter(|a| a.is_object());
                for (k, child) in m {
                    let known = props.and_then(|p| p.get(k));
                    let Some(sub) = known.or(additional) else {
                        continue;
                    };
                    if path.is_empty() && k == "metadata" {
                        continue;
                    }
                    let len = path.len();
                    push_field(path, k, known.is_some());
                    self.validate(child, sub, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn check_number(&self, n: &serde_json::Number, s: &Value, path: &str, out: &mut Vec<Cause>) {
        let Some(x) = n.as_f64() else { return };
        let value = Value::Number(n.clone());
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let exclusive = flag(s, "exclusiveMaximum");
            if x > max || (exclusive && x >= max) {
                let rel = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.push(Cause::invalid(
                    path,
                    &value,
                    &format!(
                        "{} in body should be {rel} {}",
                        body_path(path),
                        number_text(max)
                    ),
                ));
            }
        }
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let exclusive = flag(s, "exclusiveMinimum");
            if x < min || (exclusive && x <= min) {
                let rel = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.push(Cause::invalid(
                    path,
                    &value,
                    &format!(
                        "{} in body should be {rel} {}",
                        body_path(path),
                        number_text(min)
                    ),
                ));
            }
        }
    }

    fn check_string(&self, text: &str, v: &Value, s: &Value, path: &str, out: &mut Vec<Cause>) {
        let chars = text.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if chars > max {
                out.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    message: format!("Too long: may not be more than {max} bytes"),
                    field: path.to_string(),
                });
            }
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if chars < min {
                out.push(Cause::invalid(
                    path,
                    v,
                    &format!(
                        "{} in body should be at least {min} chars long",
                        body_path(path)
                    ),
                ));
            }
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            if matches_pattern(p, text) == Some(false) {
                out.push(Cause::invalid(
                    path,
                    v,
                    &format!("{} in body should match '{p}'", body_path(path)),
                ));
            }
        }
    }
}

fn flag(s: &Value, key: &str) -> bool {
    s.get(key) == Some(&Value::Bool(true))
}

/// `spec` + `foo` → `spec.foo`; a map key (not a declared property) → `spec.selector[key]`.
fn push_field(path: &mut String, key: &str, property: bool) {
    if property || path.is_empty() {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(key);
        path.push(']');
    }
}

fn body_path(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_cause(path: &str, v: &Value, s: &Value) -> Cause {
    let want = s.get("type").and_then(Value::as_str).unwrap_or("object");
    let got = json_type(v);
    Cause {
        reason: "FieldValueTypeInvalid".into(),
        message: format!(
            "Invalid value: \"{got}\": {} in body must be of type {want}: \"{got}\"",
            body_path(path)
        ),
        field: path.to_string(),
    }
}

fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Whether `text` matches the ECMA-262 `pattern` of a schema; `None` when the pattern does
/// not compile here (then it is not checked). Compiled patterns are kept for the process.
fn matches_pattern(pattern: &str, text: &str) -> Option<bool> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    let re = map
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok());
    re.as_ref().map(|r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_have_definitions_with_descriptions() {
        let b = builtin();
        let name = b.def_name("apps", "v1", "Deployment").unwrap_or_default();
        assert_eq!(name, "io.k8s.api.apps.v1.Deployment");
        let strategy = &b.defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert!(strategy["description"].as_str().is_some(), "{strategy}");
        assert!(
            strategy["allOf"][0]["$ref"].as_str().is_some(),
            "{strategy}"
        );
    }

    #[test]
    fn unknown_fields_of_a_deployment_are_named_and_dropped() {
        let b = builtin();
        let walk = Walk {
            defs: Some(&b.defs),
            structural: false,
        };
        let root = json!({"$ref": format!("{REF_PREFIX}io.k8s.api.apps.v1.Deployment")});
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "managedFields": [{"fieldsV1": {"f:spec": {}}}]},
            "spec": {"foo": 1, "template": {"spec": {"containers": [{"name": "c", "bar": true}]}}},
        });
        let mut unknown = Vec::new();
        walk.prune(&mut obj, &root, &mut String::new(), &mut unknown, true);
        assert_eq!(
            unknown,
            vec!["spec.foo", "spec.template.spec.containers[0].bar"]
        );
        assert!(obj["spec"].get("foo").is_none());
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {}})
        );
    }

    #[test]
    fn custom_resources_are_pruned_and_validated() {
        let Some(schema) = known_crd_schema("gateway.networking.k8s.io", "HTTPRoute") else {
            panic!("no HTTPRoute schema");
        };
        let walk = Walk {
            defs: None,
            structural: true,
        };
        let mut obj = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "labels": {"a": "b"}},
            "spec": {"foo": 1, "rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": "heavy"}]}]},
        });
        let mut unknown = Vec::new();
        walk.prune(&mut obj, &schema, &mut String::new(), &mut unknown, true);
        assert_eq!(unknown, vec!["spec.foo"]);
        assert_eq!(obj["metadata"]["labels"]["a"], "b");
        let mut causes = Vec::new();
        walk.validate(&obj, &schema, &mut String::new(), &mut causes);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.rules[0].backendRefs[0].weight");
    }

    #[test]
    fn keywords_are_checked_with_the_servers_wording() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
                "weight": {"type": "integer", "minimum": 0, "maximum": 100},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "items": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
                "port": {"x-kubernetes-int-or-string": true},
            },
        }}});
        let walk = Walk {
            defs: None,
            structural: true,
        };
        let obj = json!({"metadata": {"name": "x"}, "spec": {
            "name": "ABCD", "weight": 101, "mode": "c", "items": ["x", "y"], "port": true,
        }});
        let mut causes = Vec::new();
        walk.validate(&obj, &schema, &mut String::new(), &mut causes);
        let msgs: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            vec![
                "spec.items: Too many: 2: must have at most 1 items",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.name: Too long: may not be more than 3 bytes",
                "spec.name: Invalid value: \"ABCD\": spec.name in body should match '^[a-z]+$'",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
                "spec.weight: Invalid value: 101: spec.weight in body should be less than or equal to 100",
            ]
        );
        let mut nulls = json!({"spec": {"name": "ab", "weight": null}});
        walk.prune(
            &mut nulls,
            &schema,
            &mut String::new(),
            &mut Vec::new(),
            true,
        );
        assert_eq!(nulls, json!({"spec": {"name": "ab"}}));
        let mut causes = Vec::new();
        walk.validate(
            &json!({"spec": {}}),
            &schema,
            &mut String::new(),
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(
            (causes[0].field.as_str(), causes[0].message.as_str()),
            ("spec.name", "Required value")
        );
    }
}
