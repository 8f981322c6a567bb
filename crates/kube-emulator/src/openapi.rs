//! The OpenAPI documents: `/openapi/v3` (the index of group-versions), `/openapi/v3/api/v1`
//! and `/openapi/v3/apis/{group}/{version}` (one OpenAPI 3.0 document each), and
//! `/openapi/v2` (one Swagger 2.0 document of everything, in JSON only).
//!
//! The built-in kinds' schemas are `k8s-openapi`'s (see [`crate::schema::builtin`]); their
//! group-version documents are built once per process and kept as bytes. A custom type's
//! schema is its CustomResourceDefinition's `openAPIV3Schema` for that version, read from the
//! stored CRD when its document is asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::errors::ApiError;
use crate::resources::{version_priority, Rt};
use crate::schema::{self, OBJECT_META_DEF, PATCH_DEF, REF_PREFIX};
use crate::server::{error_response, json_response, Shared};
use crate::store::State;

/// One served kind of a group-version document.
struct Kind {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
    status: bool,
    /// Compiled into the server: strategic merge patch is accepted.
    builtin: bool,
    def: String,
}

impl Kind {
    fn of(rt: &Rt, def: String) -> Self {
        Kind {
            group: rt.t.group.clone(),
            version: rt.t.version.clone(),
            kind: rt.t.kind.clone(),
            plural: rt.t.plural.clone(),
            namespaced: rt.t.namespaced,
            status: rt.t.status_subresource,
            builtin: rt.builtin,
            def,
        }
    }

    fn gvk(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

/// `api/v1` or `apis/{group}/{version}`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A short hash of bytes, for `?hash=` (FNV-1a, 64 bits, twice with different seeds).
fn hash_hex(parts: &[&[u8]]) -> String {
    let mut out = String::new();
    for seed in [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4] {
        let mut h = seed;
        for p in parts {
            for b in p.iter() {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        out.push_str(&format!("{h:016X}"));
    }
    out
}

/// The served group-versions: (group, version, built-in).
fn group_versions(st: &State) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = Vec::new();
    for rt in st.registry.all() {
        if !out
            .iter()
            .any(|(g, v, _)| *g == rt.t.group && *v == rt.t.version)
        {
            out.push((rt.t.group.clone(), rt.t.version.clone(), rt.builtin));
        }
    }
    out.sort_by(|a, b| {
        (a.0.as_str(), std::cmp::Reverse(version_priority(&a.1)))
            .cmp(&(b.0.as_str(), std::cmp::Reverse(version_priority(&b.1))))
    });
    out
}

/// Answers `GET /openapi/...` (`segs` after `openapi`).
pub(crate) fn serve(shared: &Shared, segs: &[&str], accept: &str) -> Response {
    // kubectl asks for `/openapi/v2` in protobuf only; the emulator has JSON only, and a 406
    // sends client-go to its fallback.
    let json_ok = accept.is_empty()
        || accept.contains("json")
        || accept.contains("*/*")
        || !accept.contains("protobuf");
    if !json_ok {
        return error_response(&ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json",
        ));
    }
    let (group, version) = match segs {
        ["v2"] => return json_response(200, &v2_document(&shared.lock())),
        ["v3"] => {
            let (gvs, custom) = {
                let st = shared.lock();
                let gvs = group_versions(&st);
                let custom: Vec<String> = gvs
                    .iter()
                    .map(|(g, v, b)| {
                        if *b {
                            String::new()
                        } else {
                            custom_hash(&st, g, v)
                        }
                    })
                    .collect();
                (gvs, custom)
            };
            return json_response(200, &index(&gvs, &custom));
        }
        ["v3", "api", v] => ("", *v),
        ["v3", "apis", g, v] => (*g, *v),
        _ => return error_response(&ApiError::no_route()),
    };
    let builtin = {
        let st = shared.lock();
        match group_versions(&st)
            .into_iter()
            .find(|(g, v, _)| g == group && v == version)
        {
            None => return error_response(&ApiError::no_route()),
            Some((_, _, true)) => true,
            Some(_) => false,
        }
    };
    let bytes = if builtin {
        builtin_document(group, version).map(|(d, _)| d.to_vec())
    } else {
        let doc = custom_document(&shared.lock(), group, version);
        serde_json::to_vec(&doc).ok()
    };
    match bytes {
        Some(b) => {
            let mut resp = Response::new(Body::from(b));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        None => error_response(&ApiError::no_route()),
    }
}

/// `GET /openapi/v3`: `custom` holds the hash of each custom group-version of `gvs`.
fn index(gvs: &[(String, String, bool)], custom: &[String]) -> Value {
    let mut paths = Map::new();
    for ((g, v, builtin), custom_hash) in gvs.iter().zip(custom) {
        let hash = if *builtin {
            builtin_document(g, v).map(|(_, h)| h)
        } else {
            Some(custom_hash.clone())
        };
        let Some(hash) = hash else { continue };
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

type Cached = (Arc<Vec<u8>>, String);

/// A built-in group-version's document and its hash, built on first use and kept.
fn builtin_document(group: &str, version: &str) -> Option<Cached> {
    static DOCS: OnceLock<Mutex<HashMap<String, Option<Cached>>>> = OnceLock::new();
    let docs = DOCS.get_or_init(Default::default);
    let key = gv_path(group, version);
    let mut map = docs.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(key)
        .or_insert_with(|| {
            let b = schema::builtin();
            let reg = crate::resources::Registry::new(&[]);
            let kinds: Vec<Kind> = reg
                .all()
                .filter(|rt| rt.builtin && rt.t.group == group && rt.t.version == version)
                .filter_map(|rt| {
                    let def = b.def_name(group, version, &rt.t.kind)?;
                    Some(Kind::of(rt, def.to_string()))
                })
                .collect();
            if kinds.is_empty() {
                return None;
            }
            let mut roots: Vec<&str> = kinds.iter().map(|k| k.def.as_str()).collect();
            roots.extend(COMMON_DEFS);
            let mut schemas = schema::closure(&b.defs, &roots);
            for k in &kinds {
                if let Some(s) = schemas.get_mut(&k.def).and_then(Value::as_object_mut) {
                    s.insert("x-kubernetes-group-version-kind".into(), json!([k.gvk()]));
                }
            }
            let doc = gv_document(&kinds, schemas);
            let bytes = serde_json::to_vec(&doc).ok()?;
            let hash = hash_hex(&[&bytes]);
            Some((Arc::new(bytes), hash))
        })
        .clone()
}

/// Definitions every group-version document carries besides its kinds'.
const COMMON_DEFS: [&str; 4] = [
    OBJECT_META_DEF,
    PATCH_DEF,
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
];

/// The stored CRDs of a custom group-version's types, with each type.
fn custom_kinds<'a>(
    st: &'a State,
    group: &str,
    version: &str,
) -> Vec<(Arc<Rt>, Option<&'a Value>)> {
    let crds = st.list(
        &(
            "apiextensions.k8s.io".to_string(),
            "customresourcedefinitions".to_string(),
        ),
        None,
    );
    st.registry
        .all()
        .filter(|rt| !rt.builtin && rt.t.group == group && rt.t.version == version)
        .map(|rt| {
            let name = format!("{}.{}", rt.t.plural, rt.t.group);
            let crd = crds
                .iter()
                .find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(&name))
                .copied();
            (rt.clone(), crd)
        })
        .collect()
}

fn custom_hash(st: &State, group: &str, version: &str) -> String {
    let mut parts: Vec<String> = vec![gv_path(group, version)];
    for (rt, crd) in custom_kinds(st, group, version) {
        parts.push(rt.t.kind.clone());
        parts.push(
            crd.and_then(|c| c.pointer("/metadata/resourceVersion"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        );
    }
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    hash_hex(&refs)
}

/// The definition name the API server gives a custom kind: the group reversed, the version,
/// the kind (`io.k8s.networking.gateway.v1.HTTPRoute`).
fn custom_def_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    format!("{}.{version}.{kind}", parts.join("."))
}

/// The `openAPIV3Schema` of a CRD's version.
pub(crate) fn crd_version_schema<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?
        .pointer("/schema/openAPIV3Schema")
}

fn custom_document(st: &State, group: &str, version: &str) -> Value {
    let b = schema::builtin();
    let mut schemas = schema::closure(&b.defs, &COMMON_DEFS);
    let mut kinds = Vec::new();
    for (rt, crd) in custom_kinds(st, group, version) {
        let def = custom_def_name(group, version, &rt.t.kind);
        let mut s = crd
            .and_then(|c| crd_version_schema(c, version))
            .cloned()
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        if let Some(m) = s.as_object_mut() {
            let props = m.entry("properties").or_insert_with(|| json!({}));
            if let Some(p) = props.as_object_mut() {
                p.insert(
                    "metadata".into(),
                    json!({
                        "allOf": [{"$ref": format!("{REF_PREFIX}{OBJECT_META_DEF}")}],
                        "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
                    }),
                );
                for (field, text) in [
                    ("apiVersion", "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"),
                    ("kind", "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"),
                ] {
                    p.entry(field)
                        .or_insert_with(|| json!({"type": "string", "description": text}));
                }
            }
            let kind = Kind::of(&rt, def.clone());
            m.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([kind.gvk()]),
            );
            kinds.push(kind);
        }
        schemas.insert(def, s);
    }
    gv_document(&kinds, schemas)
}

fn camel(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `CoreV1`, `AppsV1`, `GatewayNetworkingV1`, as in the API server's operation ids.
fn gv_camel(group: &str, version: &str) -> String {
    let g = if group.is_empty() {
        "core".to_string()
    } else {
        group.trim_end_matches(".k8s.io").to_string()
    };
    let mut out: String = g.split(['.', '-']).map(camel).collect();
    out.push_str(&camel(version));
    out
}

fn query_param(name: &str, description: &str, ty: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    })
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut out = vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed", "string"),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.", "string"),
        query_param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.", "string"),
    ];
    if patch {
        out.push(query_param("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.", "boolean"));
    }
    out
}

fn schema_ref(def: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{def}")})
}

fn response(def: &str) -> Value {
    json!({
        "description": "OK",
        "content": {
            "application/json": {"schema": schema_ref(def)},
            "application/yaml": {"schema": schema_ref(def)},
        },
    })
}

fn operation(
    k: &Kind,
    action: &str,
    id: String,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    let tag = if k.group.is_empty() {
        format!("core_{}", k.version)
    } else {
        format!(
            "{}_{}",
            k.group.trim_end_matches(".k8s.io").replace('.', "_"),
            k.version
        )
    };
    let mut op = json!({
        "tags": [tag],
        "description": description,
        "operationId": id,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": k.gvk(),
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    op
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn pretty_param() -> Value {
    query_param("pretty", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).", "string")
}

/// The paths of one kind: its collection, an object, and the object's status.
fn kind_paths(k: &Kind, paths: &mut Map<String, Value>) {
    let prefix = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let gv = gv_camel(&k.group, &k.version);
    let (collection, scope) = if k.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", k.plural),
            "Namespaced",
        )
    } else {
        (format!("{prefix}/{}", k.plural), "")
    };
    let mut base_params = vec![pretty_param()];
    if k.namespaced {
        base_params.insert(
            0,
            path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ),
        );
    }
    let kind = &k.kind;
    let json_body =
        |def: &str| json!({"content": {"*/*": {"schema": schema_ref(def)}}, "required": true});
    // kubectl computes a strategic merge patch only for a kind whose PATCH accepts one:
    // custom resources do not.
    let mut patch_types = vec![
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ];
    if k.builtin {
        patch_types.push("application/strategic-merge-patch+json");
    }
    let patch_content: Map<String, Value> = patch_types
        .into_iter()
        .map(|t| (t.to_string(), json!({"schema": schema_ref(PATCH_DEF)})))
        .collect();
    let patch_body = json!({"content": patch_content, "required": true});
    let list_params = vec![
        query_param("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        query_param("fieldSelector", "A selector to restrict the list of returned objects by their fields. Defaults to everything.", "string"),
        query_param("labelSelector", "A selector to restrict the list of returned objects by their labels. Defaults to everything.", "string"),
        query_param("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        query_param("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        query_param("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        query_param("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.", "boolean"),
    ];
    let mut coll = Map::new();
    coll.insert(
        "get".into(),
        operation(
            k,
            "list",
            format!("list{gv}{scope}{kind}"),
            format!("list or watch objects of kind {kind}"),
            list_params,
            None,
            json!({"200": {"description": "OK"}}),
        ),
    );
    coll.insert(
        "post".into(),
        operation(
            k,
            "post",
            format!("create{gv}{scope}{kind}"),
            format!("create a {kind}"),
            write_params(false),
            Some(json_body(&k.def)),
            json!({"200": response(&k.def), "201": response(&k.def), "202": response(&k.def)}),
        ),
    );
    coll.insert(
        "delete".into(),
        operation(
            k,
            "deletecollection",
            format!("deletecollection{gv}{scope}{kind}"),
            format!("delete collection of {kind}"),
            vec![],
            Some(json_body(
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            )),
            json!({"200": response("io.k8s.apimachinery.pkg.apis.meta.v1.Status")}),
        ),
    );
    coll.insert("parameters".into(), Value::Array(base_params.clone()));
    paths.insert(collection.clone(), Value::Object(coll));

    let mut item_params = vec![path_param("name", &format!("name of the {kind}"))];
    item_params.extend(base_params);
    let item_ops = |suffix: &str, what: &str| {
        let mut m = Map::new();
        m.insert(
            "get".into(),
            operation(
                k,
                "get",
                format!("read{gv}{scope}{kind}{suffix}"),
                format!("read {what} of the specified {kind}"),
                vec![],
                None,
                json!({"200": response(&k.def)}),
            ),
        );
        m.insert(
            "put".into(),
            operation(
                k,
                "put",
                format!("replace{gv}{scope}{kind}{suffix}"),
                format!("replace {what} of the specified {kind}"),
                write_params(false),
                Some(json_body(&k.def)),
                json!({"200": response(&k.def), "201": response(&k.def)}),
            ),
        );
        m.insert(
            "patch".into(),
            operation(
                k,
                "patch",
                format!("patch{gv}{scope}{kind}{suffix}"),
                format!("partially update {what} of the specified {kind}"),
                write_params(true),
                Some(patch_body.clone()),
                json!({"200": response(&k.def), "201": response(&k.def)}),
            ),
        );
        m.insert("parameters".into(), Value::Array(item_params.clone()));
        m
    };
    let mut item = item_ops("", "the");
    item.insert(
        "delete".into(),
        operation(k, "delete", format!("delete{gv}{scope}{kind}"), format!("delete a {kind}"), vec![
            query_param("dryRun", "When present, indicates that modifications should not be persisted.", "string"),
            query_param("propagationPolicy", "Whether and how garbage collection will be performed.", "string"),
        ], Some(json!({"content": {"*/*": {"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")}}})), json!({"200": response("io.k8s.apimachinery.pkg.apis.meta.v1.Status"), "202": response("io.k8s.apimachinery.pkg.apis.meta.v1.Status")})),
    );
    paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
    if k.status {
        paths.insert(
            format!("{collection}/{{name}}/status"),
            Value::Object(item_ops("Status", "status")),
        );
    }
}

fn gv_document(kinds: &[Kind], schemas: Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for k in kinds {
        kind_paths(k, &mut paths);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
    })
}

/// `GET /openapi/v2` in JSON: every served group-version's paths and definitions, in
/// Swagger 2.0 form (`#/definitions/` references, body parameters).
pub(crate) fn v2_document(st: &State) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (g, v, builtin) in group_versions(st) {
        let bytes = if builtin {
            builtin_document(&g, &v).map(|(d, _)| d)
        } else {
            serde_json::to_vec(&custom_document(st, &g, &v))
                .ok()
                .map(Arc::new)
        };
        let Some(bytes) = bytes else { continue };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let text = text.replace(REF_PREFIX, "#/definitions/");
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(s) = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, def) in s {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| v2_schema(def));
            }
        }
        if let Some(p) = doc.get("paths").and_then(Value::as_object) {
            for (path, item) in p {
                paths.insert(path.clone(), v2_path_item(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    })
}

/// A v3 schema in v2 form: a `$ref` wrapped in `allOf` for its siblings is a plain `$ref`.
fn v2_schema(s: &Value) -> Value {
    match s {
        Value::Object(m) => {
            if let Some(Value::Array(all)) = m.get("allOf") {
                if let [one] = all.as_slice() {
                    if one.get("$ref").is_some() {
                        let mut out = Map::new();
                        for (k, v) in m {
                            if k != "allOf" && k != "default" {
                                out.insert(k.clone(), v2_schema(v));
                            }
                        }
                        if let Some(r) = one.get("$ref") {
                            out.insert("$ref".into(), r.clone());
                        }
                        return Value::Object(out);
                    }
                }
            }
            Value::Object(m.iter().map(|(k, v)| (k.clone(), v2_schema(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(v2_schema).collect()),
        other => other.clone(),
    }
}

fn v2_param(p: &Value) -> Value {
    let mut out = p.clone();
    if let Some(m) = out.as_object_mut() {
        if let Some(Value::Object(s)) = m.remove("schema") {
            for (k, v) in s {
                m.insert(k, v);
            }
        }
    }
    out
}

fn v2_path_item(item: &Value) -> Value {
    let Some(m) = item.as_object() else {
        return item.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        if k == "parameters" {
            let ps: Vec<Value> = v.as_array().into_iter().flatten().map(v2_param).collect();
            out.insert(k.clone(), Value::Array(ps));
            continue;
        }
        let Some(op) = v.as_object() else { continue };
        let mut o = Map::new();
        let mut params: Vec<Value> = op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(v2_param)
            .collect();
        if let Some(schema) = op
            .get("requestBody")
            .and_then(|b| b.get("content"))
            .and_then(Value::as_object)
            .and_then(|c| c.values().next())
            .and_then(|c| c.get("schema"))
        {
            params.insert(
                0,
                json!({"name": "body", "in": "body", "required": true, "schema": schema}),
            );
        }
        for (ok, ov) in op {
            match ok.as_str() {
                "parameters" | "requestBody" => {}
                "responses" => {
                    let rs: Map<String, Value> = ov
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(code, r)| {
                            let mut nr = json!({"description": r.get("description").cloned().unwrap_or(json!("OK"))});
                            if let Some(s) = r.pointer("/content/application~1json/schema") {
                                nr["schema"] = s.clone();
                            }
                            (code.clone(), nr)
                        })
                        .collect();
                    o.insert(ok.clone(), Value::Object(rs));
                }
                _ => {
                    o.insert(ok.clone(), ov.clone());
                }
            }
        }
        if !params.is_empty() {
            o.insert("parameters".into(), Value::Array(params));
        }
        o.insert("consumes".into(), json!(["*/*"]));
        o.insert(
            "produces".into(),
            json!(["application/json", "application/yaml"]),
        );
        o.insert("schemes".into(), json!(["https"]));
        out.insert(k.clone(), Value::Object(o));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hashes() {
        assert_eq!(gv_camel("", "v1"), "CoreV1");
        assert_eq!(
            gv_camel("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(
            custom_def_name("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "io.k8s.networking.gateway.v1.HTTPRoute"
        );
        assert_ne!(hash_hex(&[b"a"]), hash_hex(&[b"b"]));
        assert_eq!(hash_hex(&[b"a"]).len(), 32);
    }
}
