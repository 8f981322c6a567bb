//! Server-side `Table` answers: the columns `kubectl get` prints.
//!
//! A GET, LIST or WATCH whose `Accept` header asks for `as=Table;g=meta.k8s.io;v=v1` (or
//! `v1beta1`) gets a `meta.k8s.io` `Table` instead of the objects. The built-in types have
//! the real API server's printer columns, with the cells computed the same way (a Pod's
//! READY/STATUS/RESTARTS, a Service's PORT(S), ages as `5s`, `3m2s`, `2d4h`...); custom
//! resources have their CRD's `additionalPrinterColumns` for the served version, evaluated
//! with a JSONPath subset ([`JsonPath`]), or an `Age` column when the CRD has none; any
//! other type gets `Name` and `Created At`.
//!
//! The server always computes the wide columns (priority 1); kubectl hides them unless
//! `-o wide`.

use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::errors::ApiError;
use crate::resources::Rt;
use crate::store::State;

/// What a Table row's `object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

/// A request for Tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableOpts {
    /// `meta.k8s.io/v1` or `meta.k8s.io/v1beta1`.
    pub api_version: &'static str,
    pub include: Include,
}

impl TableOpts {
    /// The `Content-Type` of a Table answer.
    pub(crate) fn content_type(&self) -> &'static str {
        if self.api_version.ends_with("v1beta1") {
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
        } else {
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        }
    }
}

/// Whether a request asks for Tables: the first media range of `accept` the server can
/// answer decides (a Table of a known version, or plain JSON). When the client only accepts
/// Tables of versions that do not exist the answer is 406, as the real server's.
pub(crate) fn requested(
    accept: &str,
    include_object: Option<&str>,
) -> Result<Option<TableOpts>, ApiError> {
    let mut asked_table = false;
    let mut chosen: Option<&'static str> = None;
    for clause in accept.split(',') {
        let mut parts = clause.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let (mut as_kind, mut version, mut group) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", v)) => as_kind = v,
                Some(("v", v)) => version = v,
                Some(("g", v)) => group = v,
                _ => {}
            }
        }
        if as_kind.is_empty() {
            break;
        }
        if as_kind != "Table" {
            // Another transformation (PartialObjectMetadata, discovery): not ours.
            return Ok(None);
        }
        asked_table = true;
        if group == "meta.k8s.io" {
            match version {
                "v1" => chosen = Some("meta.k8s.io/v1"),
                "v1beta1" => chosen = Some("meta.k8s.io/v1beta1"),
                _ => continue,
            }
            break;
        }
    }
    let Some(api_version) = chosen else {
        if asked_table && !accept.split(',').any(plain_json) {
            return Err(ApiError::new(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            ));
        }
        return Ok(None);
    };
    let include = match include_object.unwrap_or_default() {
        "" | "Metadata" => Include::Metadata,
        "None" => Include::None,
        "Object" => Include::Object,
        other => {
            return Err(ApiError::bad_request(format!(
                "unrecognized includeObject value: \"{other}\""
            )))
        }
    };
    Ok(Some(TableOpts {
        api_version,
        include,
    }))
}

fn plain_json(clause: &str) -> bool {
    let mut parts = clause.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default();
    matches!(media, "application/json" | "application/*" | "*/*")
        && !parts.any(|p| p.starts_with("as="))
}

/// A Table of `objects` (stored objects of type `rt`), with `metadata` as the Table's list
/// metadata. `headers` false leaves `columnDefinitions` empty (a watch's later events).
pub(crate) fn table(
    rt: &Rt,
    objects: &[&Value],
    metadata: Value,
    opts: &TableOpts,
    headers: bool,
) -> Value {
    let now = Timestamp::now();
    let printer = Printer::of(rt);
    let columns = if headers {
        printer.columns()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let (cells, conditions) = printer.cells(o, now);
            let object = match opts.include {
                Include::None => Value::Null,
                Include::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": opts.api_version,
                    "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
                Include::Object => State::render(rt, o),
            };
            let mut row = json!({"cells": cells, "object": object});
            if let Some(c) = conditions {
                row["conditions"] = c;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": opts.api_version,
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The printer columns of the custom types the emulator serves by default, as their real
/// CRDs declare them (the same for every served version).
pub(crate) fn default_printer_columns(group: &str, plural: &str) -> Vec<Value> {
    let c = |name: &str, ty: &str, path: &str, priority: i64| {
        let mut col = json!({"name": name, "type": ty, "jsonPath": path});
        if priority != 0 {
            col["priority"] = json!(priority);
        }
        col
    };
    let age = || c("Age", "date", ".metadata.creationTimestamp", 0);
    match (group, plural) {
        ("gateway.networking.k8s.io", "gatewayclasses") => vec![
            c("Controller", "string", ".spec.controllerName", 0),
            c(
                "Accepted",
                "string",
                ".status.conditions[?(@.type==\"Accepted\")].status",
                0,
            ),
            age(),
            c("Description", "string", ".spec.description", 1),
        ],
        ("gateway.networking.k8s.io", "gateways") => vec![
            c("Class", "string", ".spec.gatewayClassName", 0),
            c("Address", "string", ".status.addresses[*].value", 0),
            c(
                "Programmed",
                "string",
                ".status.conditions[?(@.type==\"Programmed\")].status",
                0,
            ),
            age(),
        ],
        ("gateway.networking.k8s.io", "httproutes") => {
            vec![c("Hostnames", "string", ".spec.hostnames", 0), age()]
        }
        ("networking.istio.io", "virtualservices") => vec![
            c("Gateways", "string", ".spec.gateways", 0),
            c("Hosts", "string", ".spec.hosts", 0),
            age(),
        ],
        ("networking.istio.io", "destinationrules") => {
            vec![c("Host", "string", ".spec.host", 0), age()]
        }
        ("flagger.app", "canaries") => vec![
            c("Status", "string", ".status.phase", 0),
            c("Weight", "string", ".status.canaryWeight", 0),
            c("Suspended", "boolean", ".spec.suspend", 1),
            c("FailedChecks", "string", ".status.failedChecks", 1),
            c("Interval", "string", ".spec.analysis.interval", 1),
            c("Mirror", "boolean", ".spec.analysis.mirror", 1),
            c("StepWeight", "string", ".spec.analysis.stepWeight", 1),
            c("StepWeights", "string", ".spec.analysis.stepWeights", 1),
            c("MaxWeight", "string", ".spec.analysis.maxWeight", 1),
            c(
                "LastTransitionTime",
                "string",
                ".status.lastTransitionTime",
                0,
            ),
        ],
        ("flagger.app", "metrictemplates") => {
            vec![c("Provider", "string", ".spec.provider.type", 0)]
        }
        _ => Vec::new(),
    }
}

/// How the rows of a type are printed.
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Service,
    ConfigMap,
    Secret,
    Namespace,
    /// `events.k8s.io` Events (`true`) are printed from their core/v1 field names.
    Event(bool),
    Lease,
    Ingress,
    Hpa,
    ServiceAccount,
    RoleBinding,
    /// Roles and ClusterRoles: Name and Created At (RFC 3339).
    Role,
    /// A custom resource: the CRD's printer columns (name, type, format, description,
    /// priority) with their compiled paths.
    Custom(Vec<(Value, Option<JsonPath>)>),
    /// Name and Created At.
    Default,
}

/// A column definition.
fn col(name: &str, ty: &str, priority: i64, description: &str) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": if name == "Name" { "name" } else { "" },
        "description": description,
        "priority": priority,
    })
}

const NAME_DOC: &str = "The object's name, unique in its namespace.";
const AGE_DOC: &str = "Time since the object was created (metadata.creationTimestamp).";
const CONTAINERS_DOC: &str = "The names of the pod template's containers.";
const IMAGES_DOC: &str = "The images of the pod template's containers.";
const SELECTOR_DOC: &str = "The label selector of the pods.";

/// A column: name, type, priority (1: only with `-o wide`), description.
type ColumnSpec = (&'static str, &'static str, i64, &'static str);

const NAME: ColumnSpec = ("Name", "string", 0, NAME_DOC);
const AGE: ColumnSpec = ("Age", "string", 0, AGE_DOC);
const CONTAINERS: ColumnSpec = ("Containers", "string", 1, CONTAINERS_DOC);
const IMAGES: ColumnSpec = ("Images", "string", 1, IMAGES_DOC);
const SELECTOR: ColumnSpec = ("Selector", "string", 1, SELECTOR_DOC);

const POD_COLUMNS: &[ColumnSpec] = &[
    NAME,
    (
        "Ready",
        "string",
        0,
        "Ready containers out of all containers.",
    ),
    (
        "Status",
        "string",
        0,
        "The pod's state, summed up from its containers.",
    ),
    (
        "Restarts",
        "string",
        0,
        "Container restarts, and the time since the last one.",
    ),
    AGE,
    ("IP", "string", 1, "The pod's IP address."),
    ("Node", "string", 1, "The node the pod is bound to."),
    (
        "Nominated Node",
        "string",
        1,
        "The node nominated for the pod by preemption.",
    ),
    (
        "Readiness Gates",
        "string",
        1,
        "Readiness gates whose condition is True, of all.",
    ),
];
const DEPLOYMENT_COLUMNS: &[ColumnSpec] = &[
    NAME,
    (
        "Ready",
        "string",
        0,
        "Ready pods out of the desired replicas.",
    ),
    ("Up-to-date", "integer", 0, "Pods of the current template."),
    ("Available", "integer", 0, "Pods available to serve."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const REPLICASET_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Desired", "integer", 0, "Desired replicas."),
    ("Current", "integer", 0, "Replicas that exist."),
    ("Ready", "integer", 0, "Ready replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const STATEFULSET_COLUMNS: &[ColumnSpec] = &[
    NAME,
    (
        "Ready",
        "string",
        0,
        "Ready pods out of the desired replicas.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
];
const DAEMONSET_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Desired", "integer", 0, "Nodes that should run the pod."),
    ("Current", "integer", 0, "Nodes that run the pod."),
    ("Ready", "integer", 0, "Nodes whose pod is ready."),
    (
        "Up-to-date",
        "integer",
        0,
        "Nodes that run the current template.",
    ),
    ("Available", "integer", 0, "Nodes whose pod is available."),
    (
        "Node Selector",
        "string",
        0,
        "The pod template's node selector.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const SERVICE_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Type", "string", 0, "How the service is exposed."),
    ("Cluster-IP", "string", 0, "The service's cluster IP."),
    (
        "External-IP",
        "string",
        0,
        "Addresses from outside the cluster.",
    ),
    ("Port(s)", "string", 0, "The service's ports."),
    AGE,
    (
        "Selector",
        "string",
        1,
        "The label selector of the backing pods.",
    ),
];
const CONFIGMAP_COLUMNS: &[ColumnSpec] = &[NAME, ("Data", "string", 0, "Number of keys."), AGE];
const SECRET_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Type", "string", 0, "The secret's type."),
    ("Data", "string", 0, "Number of keys."),
    AGE,
];
const NAMESPACE_COLUMNS: &[ColumnSpec] =
    &[NAME, ("Status", "string", 0, "The namespace's phase."), AGE];
const EVENT_COLUMNS: &[ColumnSpec] = &[
    (
        "Last Seen",
        "string",
        0,
        "Time since the event was last seen.",
    ),
    ("Type", "string", 0, "Normal or Warning."),
    (
        "Reason",
        "string",
        0,
        "Why the event happened, in one word.",
    ),
    ("Object", "string", 0, "The object the event is about."),
    (
        "Subobject",
        "string",
        1,
        "The part of the object the event is about.",
    ),
    (
        "Source",
        "string",
        1,
        "The component that reported the event.",
    ),
    ("Message", "string", 0, "What happened."),
    (
        "First Seen",
        "string",
        1,
        "Time since the event was first seen.",
    ),
    ("Count", "string", 1, "How many times it happened."),
    ("Name", "string", 1, NAME_DOC),
];
const LEASE_COLUMNS: &[ColumnSpec] = &[NAME, ("Holder", "string", 0, "Who holds the lease."), AGE];
const INGRESS_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Class", "string", 0, "The ingress class."),
    ("Hosts", "string", 0, "Hosts the rules match."),
    ("Address", "string", 0, "The load balancer's addresses."),
    ("Ports", "string", 0, "Ports the ingress serves."),
    AGE,
];
const HPA_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Reference", "string", 0, "The scaled workload."),
    ("Targets", "string", 0, "Current and target metric values."),
    ("MinPods", "string", 0, "Lower replica limit."),
    ("MaxPods", "integer", 0, "Upper replica limit."),
    ("Replicas", "integer", 0, "Current replicas."),
    AGE,
];
const SERVICEACCOUNT_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Secrets", "string", 0, "Number of listed secrets."),
    AGE,
];
const ROLEBINDING_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Role", "string", 0, "The bound role."),
    AGE,
    ("Users", "string", 1, "Bound users."),
    ("Groups", "string", 1, "Bound groups."),
    ("ServiceAccounts", "string", 1, "Bound service accounts."),
];
const ROLE_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Created At", "string", 0, "When the object was created."),
];
const DEFAULT_COLUMNS: &[ColumnSpec] = &[
    NAME,
    ("Created At", "date", 0, "When the object was created."),
];

impl Printer {
    fn of(rt: &Rt) -> Printer {
        if let Some(columns) = &rt.info.printer_columns {
            let columns = if columns.is_empty() {
                vec![
                    json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
                ]
            } else {
                columns.clone()
            };
            return Printer::Custom(
                columns
                    .into_iter()
                    .map(|c| {
                        let path = c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .and_then(|p| JsonPath::parse(p).ok());
                        (c, path)
                    })
                    .collect(),
            );
        }
        match (rt.group(), rt.plural()) {
            ("", "pods") => Printer::Pod,
            ("apps", "deployments") => Printer::Deployment,
            ("apps", "replicasets") => Printer::ReplicaSet,
            ("apps", "statefulsets") => Printer::StatefulSet,
            ("apps", "daemonsets") => Printer::DaemonSet,
            ("", "services") => Printer::Service,
            ("", "configmaps") => Printer::ConfigMap,
            ("", "secrets") => Printer::Secret,
            ("", "namespaces") => Printer::Namespace,
            ("", "events") => Printer::Event(false),
            // Both groups' Events are stored in the core form (see `crate::events`).
            ("events.k8s.io", "events") => Printer::Event(false),
            ("coordination.k8s.io", "leases") => Printer::Lease,
            ("networking.k8s.io", "ingresses") => Printer::Ingress,
            ("autoscaling", "horizontalpodautoscalers") => Printer::Hpa,
            ("", "serviceaccounts") => Printer::ServiceAccount,
            ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
                Printer::RoleBinding
            }
            ("rbac.authorization.k8s.io", "roles" | "clusterroles") => Printer::Role,
            _ => Printer::Default,
        }
    }

    fn columns(&self) -> Vec<Value> {
        let specs: &[ColumnSpec] = match self {
            Printer::Pod => POD_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICASET_COLUMNS,
            Printer::StatefulSet => STATEFULSET_COLUMNS,
            Printer::DaemonSet => DAEMONSET_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::ConfigMap => CONFIGMAP_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Event(_) => EVENT_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Ingress => INGRESS_COLUMNS,
            Printer::Hpa => HPA_COLUMNS,
            Printer::ServiceAccount => SERVICEACCOUNT_COLUMNS,
            Printer::RoleBinding => ROLEBINDING_COLUMNS,
            Printer::Role => ROLE_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
            Printer::Custom(columns) => {
                let mut out = vec![col("Name", "string", 0, NAME_DOC)];
                for (c, _) in columns {
                    let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
                    out.push(json!({
                        "name": text("name"),
                        "type": text("type"),
                        "format": text("format"),
                        "description": text("description"),
                        "priority": c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    }));
                }
                return out;
            }
        };
        specs
            .iter()
            .map(|(name, ty, priority, doc)| col(name, ty, *priority, doc))
            .collect()
    }

    /// A row's cells and its conditions (a finished Pod's `Completed`).
    fn cells(&self, o: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
        let name = json!(text(o, "/metadata/name"));
        let age = || json!(age(o, now));
        let cells = match self {
            Printer::Pod => return pod_cells(o, now),
            Printer::Deployment => {
                let (containers, images) = containers_cells(o);
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        int(o, "/status/readyReplicas"),
                        replicas(o)
                    )),
                    json!(int(o, "/status/updatedReplicas")),
                    json!(int(o, "/status/availableReplicas")),
                    age(),
                    json!(containers),
                    json!(images),
                    json!(selector_string(o.pointer("/spec/selector"))),
                ]
            }
            Printer::ReplicaSet => {
                let (containers, images) = containers_cells(o);
                vec![
                    name,
                    json!(replicas(o)),
                    json!(int(o, "/status/replicas")),
                    json!(int(o, "/status/readyReplicas")),
                    age(),
                    json!(containers),
                    json!(images),
                    json!(selector_string(o.pointer("/spec/selector"))),
                ]
            }
            Printer::StatefulSet => {
                let (containers, images) = containers_cells(o);
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        int(o, "/status/readyReplicas"),
                        replicas(o)
                    )),
                    age(),
                    json!(containers),
                    json!(images),
                ]
            }
            Printer::DaemonSet => {
                let (containers, images) = containers_cells(o);
                vec![
                    name,
                    json!(int(o, "/status/desiredNumberScheduled")),
                    json!(int(o, "/status/currentNumberScheduled")),
                    json!(int(o, "/status/numberReady")),
                    json!(int(o, "/status/updatedNumberScheduled")),
                    json!(int(o, "/status/numberAvailable")),
                    json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
                    age(),
                    json!(containers),
                    json!(images),
                    json!(selector_string(o.pointer("/spec/selector"))),
                ]
            }
            Printer::Service => service_cells(o, name, age()),
            Printer::ConfigMap => vec![
                name,
                json!(count(o, "/data") + count(o, "/binaryData")),
                age(),
            ],
            Printer::Secret => {
                let ty = Some(text(o, "/type"))
                    .filter(|t| !t.is_empty())
                    .unwrap_or("Opaque");
                vec![name, json!(ty), json!(count(o, "/data")), age()]
            }
            Printer::Namespace => {
                let phase = Some(text(o, "/status/phase"))
                    .filter(|t| !t.is_empty())
                    .unwrap_or("Active");
                vec![name, json!(phase), age()]
            }
            Printer::Event(new_api) => event_cells(o, *new_api, now),
            Printer::Lease => vec![name, json!(text(o, "/spec/holderIdentity")), age()],
            Printer::Ingress => ingress_cells(o, name, age()),
            Printer::Hpa => {
                let min = o
                    .pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "<unset>".to_string());
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        text(o, "/spec/scaleTargetRef/kind"),
                        text(o, "/spec/scaleTargetRef/name")
                    )),
                    json!(hpa_targets(o)),
                    json!(min),
                    json!(int(o, "/spec/maxReplicas")),
                    json!(int(o, "/status/currentReplicas")),
                    age(),
                ]
            }
            Printer::ServiceAccount => vec![name, json!(count(o, "/secrets")), age()],
            Printer::RoleBinding => {
                let mut users = Vec::new();
                let mut groups = Vec::new();
                let mut sas = Vec::new();
                for s in array(o, "/subjects") {
                    let n = text(s, "/name");
                    match text(s, "/kind") {
                        "User" => users.push(n.to_string()),
                        "Group" => groups.push(n.to_string()),
                        "ServiceAccount" => sas.push(format!("{}/{n}", text(s, "/namespace"))),
                        _ => {}
                    }
                }
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        text(o, "/roleRef/kind"),
                        text(o, "/roleRef/name")
                    )),
                    age(),
                    json!(users.join(", ")),
                    json!(groups.join(", ")),
                    json!(sas.join(", ")),
                ]
            }
            Printer::Custom(columns) => {
                let mut cells = vec![name];
                for (c, path) in columns {
                    let ty = c.get("type").and_then(Value::as_str).unwrap_or_default();
                    let found = path.as_ref().and_then(|p| p.eval(o).into_iter().next());
                    cells.push(match found {
                        Some(v) => custom_cell(ty, v, now),
                        None => Value::Null,
                    });
                }
                cells
            }
            Printer::Default | Printer::Role => {
                let created = Some(text(o, "/metadata/creationTimestamp"))
                    .filter(|t| !t.is_empty())
                    .unwrap_or("0001-01-01T00:00:00Z");
                vec![name, json!(created)]
            }
        };
        (cells, None)
    }
}

fn text<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn int(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn array<'a>(o: &'a Value, ptr: &str) -> &'a [Value] {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Entries of a map or list.
fn count(o: &Value, ptr: &str) -> i64 {
    match o.pointer(ptr) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

/// `spec.replicas`, 1 when unset (the API default).
fn replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn timestamp(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok()
}

/// The time since `ts` as kubectl shows ages, `<unknown>` without a time stamp.
fn since(ts: Option<&str>, now: Timestamp) -> String {
    match ts.filter(|s| !s.is_empty()).and_then(timestamp) {
        Some(t) => human_duration(now.duration_since(t).as_secs()),
        None => "<unknown>".to_string(),
    }
}

fn age(o: &Value, now: Timestamp) -> String {
    since(
        o.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now,
    )
}

/// A duration in seconds the way Kubernetes prints ages: precise while short (`90s`,
/// `3m2s`, `5h10m`, `2d4h`), coarser as it grows (`45m`, `20h`, `30d`, `3y12d`).
pub(crate) fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".to_string();
    }
    if secs < 0 {
        return "0s".to_string();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

/// Container names and images of the pod template, comma-separated.
fn containers_cells(o: &Value) -> (String, String) {
    let containers = array(o, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// A `metav1.LabelSelector` as a selector string: requirements sorted by key, `k=v`,
/// `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let k = text(e, "/key");
        let mut values: Vec<&str> = array(e, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let s = match text(e, "/operator") {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k.to_string(),
            "DoesNotExist" => format!("!{k}"),
            _ => continue,
        };
        reqs.push((k.to_string(), s));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// A string map as `k=v,...` sorted by key, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let pairs: Vec<String> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

fn condition_true(o: &Value, ty: &str) -> bool {
    array(o, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == ty && text(c, "/status") == "True")
}

/// The later of a restart time seen so far and a container's last termination.
fn later_restart(last: Option<Timestamp>, status: &Value) -> Option<Timestamp> {
    let finished = status
        .pointer("/lastState/terminated/finishedAt")
        .and_then(Value::as_str)
        .and_then(timestamp);
    match (last, finished) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = text(t, "/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int(t, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(t, "/exitCode"))
    }
}

/// A Pod's cells, the way the real printer sums up its containers.
fn pod_cells(pod: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let init_specs = array(pod, "/spec/initContainers");
    let sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
    };
    let total = array(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| text(c, "/restartPolicy") == "Always")
            .count();
    let phase = text(pod, "/status/phase");
    let mut reason = phase.to_string();
    let status_reason = text(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    if array(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }
    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "All of the pod's containers exited successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod's containers ended and at least one of them failed."}]),
        ),
        _ => None,
    };

    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let mut ready = 0;
    let mut initializing = false;
    for (i, cs) in array(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts += int(cs, "/restartCount");
        last_restart = later_restart(last_restart, cs);
        let is_sidecar = sidecar(text(cs, "/name"));
        if is_sidecar {
            sidecar_restarts += int(cs, "/restartCount");
            last_sidecar_restart = later_restart(last_sidecar_restart, cs);
        }
        let terminated = cs.pointer("/state/terminated");
        let waiting_reason = text(cs, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if is_sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = match terminated {
            Some(t) => terminated_reason(t, "Init:"),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in array(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(cs, "/restartCount");
            last_restart = later_restart(last_restart, cs);
            let waiting_reason = text(cs, "/state/waiting/reason");
            let terminated = cs.pointer("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".to_string();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(t).as_secs())
        ),
        _ => restarts.to_string(),
    };
    let none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let mut ip = text(pod, "/status/podIPs/0/ip");
    if ip.is_empty() {
        ip = text(pod, "/status/podIP");
    }
    let gates = array(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = array(pod, "/status/conditions");
        let true_gates = gates
            .iter()
            .filter(|g| {
                let ty = text(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| text(c, "/type") == ty)
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{true_gates}/{}", gates.len())
    };
    let cells = vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(pod, now)),
        json!(none(ip)),
        json!(none(text(pod, "/spec/nodeName"))),
        json!(none(text(pod, "/status/nominatedNodeName"))),
        json!(gates_cell),
    ];
    (cells, conditions)
}

/// Load balancer ingress points (IP, else hostname), comma-separated.
fn load_balancer(o: &Value) -> String {
    array(o, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| {
            let ip = text(i, "/ip");
            let host = text(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let ty = Some(text(o, "/spec/type"))
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    let mut cluster_ip = text(o, "/spec/clusterIPs/0");
    if cluster_ip.is_empty() {
        cluster_ip = text(o, "/spec/clusterIP");
    }
    let cluster_ip = if cluster_ip.is_empty() {
        "<none>"
    } else {
        cluster_ip
    };
    let external_ips: Vec<&str> = array(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer(o);
            let mut all: Vec<&str> = lb.split(',').filter(|s| !s.is_empty()).collect();
            all.extend(external_ips.iter());
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(o, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = array(o, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = Some(text(p, "/protocol"))
                .filter(|t| !t.is_empty())
                .unwrap_or("TCP");
            let node_port = int(p, "/nodePort");
            if node_port > 0 {
                format!("{}:{node_port}/{protocol}", int(p, "/port"))
            } else {
                format!("{}/{protocol}", int(p, "/port"))
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name,
        json!(ty),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        age,
        json!(format_labels(o.pointer("/spec/selector"))),
    ]
}

fn ingress_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let class = Some(text(o, "/spec/ingressClassName"))
        .filter(|t| !t.is_empty())
        .unwrap_or("<none>");
    let rules = array(o, "/spec/rules");
    // Up to three hosts; rules after the third host make it `+ N more...` (N counts rules).
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for r in rules {
        if hosts.len() == 3 {
            more = true;
        }
        let host = text(r, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - 3)
    } else {
        hosts.join(",")
    };
    let ports = if array(o, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name,
        json!(class),
        json!(hosts),
        json!(load_balancer(o)),
        json!(ports),
        age,
    ]
}

/// A quantity as the object carries it (a string, or a number).
fn quantity(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The TARGETS cell of a HorizontalPodAutoscaler (autoscaling/v2): `current/target` per
/// metric, at most two, then `+ N more...`.
fn hpa_targets(o: &Value) -> String {
    let specs = array(o, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let statuses = array(o, "/status/currentMetrics");
    let unknown = || "<unknown>".to_string();
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let current = |source: &str, field: &str| {
            status
                .and_then(|s| s.get(source))
                .and_then(|s| quantity(s.pointer(&format!("/current/{field}"))))
        };
        let entry = match text(spec, "/type") {
            source @ ("External" | "Object") => {
                let key = if source == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = spec.get(key).and_then(|s| s.get("target"));
                match quantity(target.and_then(|t| t.get("averageValue"))) {
                    Some(avg) => format!(
                        "{}/{avg} (avg)",
                        current(key, "averageValue").unwrap_or_else(unknown)
                    ),
                    None => format!(
                        "{}/{}",
                        current(key, "value").unwrap_or_else(unknown),
                        quantity(target.and_then(|t| t.get("value"))).unwrap_or_default()
                    ),
                }
            }
            "Pods" => format!(
                "{}/{}",
                current("pods", "averageValue").unwrap_or_else(unknown),
                quantity(spec.pointer("/pods/target/averageValue")).unwrap_or_default()
            ),
            source @ ("Resource" | "ContainerResource") => {
                let key = if source == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let Some(r) = spec.get(key) else {
                    list.push("<unknown type>".to_string());
                    continue;
                };
                let resource = text(r, "/name");
                let prefix = if source == "Resource" {
                    resource.to_string()
                } else {
                    format!("{resource} of container \"{}\"", text(r, "/container"))
                };
                match quantity(r.pointer("/target/averageValue")) {
                    Some(avg) => format!(
                        "{prefix}: {}/{avg}",
                        current(key, "averageValue").unwrap_or_else(unknown)
                    ),
                    None => {
                        let cur = status
                            .and_then(|s| s.get(key))
                            .and_then(|s| s.pointer("/current/averageUtilization"))
                            .and_then(Value::as_i64)
                            .map(|u| format!("{u}%"))
                            .unwrap_or_else(unknown);
                        let target = r
                            .pointer("/target/averageUtilization")
                            .and_then(Value::as_i64)
                            .map(|u| format!("{u}%"))
                            .unwrap_or_else(|| "<auto>".to_string());
                        format!("{prefix}: {cur}/{target}")
                    }
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    if list.len() > 2 {
        let more = list.len() - 2;
        list.truncate(2);
        format!("{} + {more} more...", list.join(", "))
    } else {
        list.join(", ")
    }
}

/// An Event's cells; an `events.k8s.io` Event is read through its core/v1 field names.
fn event_cells(o: &Value, new_api: bool, now: Timestamp) -> Vec<Value> {
    let field = |core: &str, new: &str| -> Option<&Value> {
        let key = if new_api { new } else { core };
        o.get(key).filter(|v| !v.is_null())
    };
    let str_field = |core: &str, new: &str| field(core, new).and_then(Value::as_str);
    let first = match str_field("firstTimestamp", "deprecatedFirstTimestamp") {
        Some(t) if !t.is_empty() => since(Some(t), now),
        _ => since(o.get("eventTime").and_then(Value::as_str), now),
    };
    let mut last = match str_field("lastTimestamp", "deprecatedLastTimestamp") {
        Some(t) if !t.is_empty() => since(Some(t), now),
        _ => first.clone(),
    };
    let mut count = field("count", "deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = o.get("series").filter(|s| s.is_object()) {
        last = since(series.get("lastObservedTime").and_then(Value::as_str), now);
        count = int(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let involved = field("involvedObject", "regarding")
        .cloned()
        .unwrap_or(Value::Null);
    let kind = text(&involved, "/kind").to_lowercase();
    let target_name = text(&involved, "/name");
    let target = if target_name.is_empty() {
        kind
    } else {
        format!("{kind}/{target_name}")
    };
    let source = field("source", "deprecatedSource")
        .cloned()
        .unwrap_or(Value::Null);
    let component = Some(text(&source, "/component"))
        .filter(|s| !s.is_empty())
        .unwrap_or(text(o, "/reportingController"));
    let host = Some(text(&source, "/host"))
        .filter(|s| !s.is_empty())
        .unwrap_or(text(o, "/reportingInstance"));
    let source_cell = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    let message = str_field("message", "note").unwrap_or_default().trim();
    vec![
        json!(last),
        json!(text(o, "/type")),
        json!(text(o, "/reason")),
        json!(target),
        json!(text(&involved, "/fieldPath")),
        json!(source_cell),
        json!(message),
        json!(first),
        json!(count),
        json!(text(o, "/metadata/name")),
    ]
}

/// A custom resource's cell for a printer column of type `ty` whose path found `v`, as the
/// real server's CRD table convertor makes it.
fn custom_cell(ty: &str, v: &Value, now: Timestamp) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        ("string", _) => json!(print_result(v)),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => json!(i),
            None => n
                .as_f64()
                .map(|f| json!(f.trunc() as i64))
                .unwrap_or(Value::Null),
        },
        ("number", Value::Number(n)) => n.as_f64().map(|f| json!(f)).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => match timestamp(s) {
            Some(t) => json!(human_duration(now.duration_since(t).as_secs())),
            None => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// A JSONPath result as text: strings as they are, lists and maps as compact JSON.
fn print_result(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(go_float).unwrap_or_default(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "<nil>".to_string(),
        other => other.to_string(),
    }
}

/// A float as Go's `%v` (`%g`) prints it: shortest digits, with an exponent (`1e+06`)
/// below 1e-4 and from 1e6 on.
fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return f.to_string();
    }
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return f.to_string();
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return f.to_string();
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter(Filter),
}

/// `[?(@.a.b OP literal)]`, or `[?(@.a.b)]` (the field exists).
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<String>,
    cmp: Option<(String, Value)>,
}

/// The JSONPath subset CRD printer columns use: `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`
/// and filters `[?(@.type=="Ready")]` (`==`, `!=`, `<`, `<=`, `>`, `>=` against a string,
/// number or boolean).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath(Vec<Step>);

impl JsonPath {
    pub(crate) fn parse(path: &str) -> Result<JsonPath, String> {
        let mut p = path.trim();
        if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            p = inner.trim();
        }
        p = p.strip_prefix('$').unwrap_or(p);
        let chars: Vec<char> = p.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                        end += 1;
                    }
                    let name: String = chars[start..end].iter().collect();
                    if name.is_empty() {
                        if end == chars.len() && steps.is_empty() {
                            // `.` alone: the whole object.
                            i = end;
                            continue;
                        }
                        return Err(format!("empty field name in {path:?}"));
                    }
                    steps.push(if name == "*" {
                        Step::Wildcard
                    } else {
                        Step::Field(name)
                    });
                    i = end;
                }
                '[' => {
                    let close =
                        find_close(&chars, i).ok_or_else(|| format!("unclosed [ in {path:?}"))?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    steps.push(bracket(inner.trim())?);
                    i = close + 1;
                }
                c => return Err(format!("unexpected {c:?} in {path:?}")),
            }
        }
        Ok(JsonPath(steps))
    }

    /// The values the path finds in `root`, in order.
    pub(crate) fn eval<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match (step, v) {
                    (Step::Field(name), Value::Object(m)) => next.extend(m.get(name)),
                    (Step::Index(i), Value::Array(a)) => {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if let Ok(idx) = usize::try_from(idx) {
                            next.extend(a.get(idx));
                        }
                    }
                    (Step::Wildcard, Value::Array(a)) => next.extend(a.iter()),
                    (Step::Wildcard, Value::Object(m)) => next.extend(m.values()),
                    (Step::Filter(f), Value::Array(a)) => {
                        next.extend(a.iter().filter(|e| f.matches(e)))
                    }
                    _ => {}
                }
            }
            current = next;
        }
        current
    }
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
}

fn bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(name) = unquote(inner) {
        return Ok(Step::Field(name.to_string()));
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Ok(Step::Index(i));
    }
    let Some(cond) = inner
        .strip_prefix("?(")
        .and_then(|r| r.strip_suffix(')'))
        .map(str::trim)
    else {
        return Err(format!("unsupported JSONPath element [{inner}]"));
    };
    let (lhs, cmp) = match ["==", "!=", "<=", ">=", "<", ">"]
        .iter()
        .find_map(|op| cond.split_once(op).map(|(l, r)| (l, op, r)))
    {
        Some((l, op, r)) => (l.trim(), Some((op.to_string(), literal(r.trim())?))),
        None => (cond, None),
    };
    let rest = lhs
        .strip_prefix('@')
        .ok_or_else(|| format!("a filter must start with @: [{inner}]"))?;
    let path: Vec<String> = rest
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Ok(Step::Filter(Filter { path, cmp }))
}

fn literal(s: &str) -> Result<Value, String> {
    if let Some(q) = unquote(s) {
        return Ok(json!(q));
    }
    serde_json::from_str::<Value>(s)
        .ok()
        .filter(|v| v.is_number() || v.is_boolean())
        .ok_or_else(|| format!("unsupported filter value {s}"))
}

impl Filter {
    fn matches(&self, element: &Value) -> bool {
        let mut v = element;
        for k in &self.path {
            match v.get(k) {
                Some(next) => v = next,
                None => return false,
            }
        }
        let Some((op, rhs)) = &self.cmp else {
            return true;
        };
        let ord = match (v, rhs) {
            (Value::Number(a), Value::Number(b)) => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (a, b) if a == b => Some(std::cmp::Ordering::Equal),
            _ => None,
        };
        match op.as_str() {
            "==" => ord == Some(std::cmp::Ordering::Equal),
            "!=" => ord != Some(std::cmp::Ordering::Equal),
            "<" => ord == Some(std::cmp::Ordering::Less),
            "<=" => matches!(
                ord,
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            ),
            ">" => ord == Some(std::cmp::Ordering::Greater),
            ">=" => matches!(
                ord,
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            ),
            _ => false,
        }
    }
}

/// Builds a Table's list metadata.
pub(crate) fn list_metadata(rv: &str, cont: Option<&str>, remaining: Option<usize>) -> Value {
    let mut m = Map::new();
    m.insert("resourceVersion".into(), json!(rv));
    if let Some(c) = cont {
        m.insert("continue".into(), json!(c));
    }
    if let Some(r) = remaining {
        m.insert("remainingItemCount".into(), json!(r));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 10 * 60 + 7, "5h10m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (2 * 86400, "2d"),
            (2 * 86400 + 4 * 3600, "2d4h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 12 * 86400, "3y12d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs} s");
        }
        let now: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
        assert_eq!(since(Some("2025-01-01T00:07:00Z"), now), "3m");
        assert_eq!(since(None, now), "<unknown>");
    }

    #[test]
    fn jsonpath_subset() {
        let obj = json!({
            "metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"hosts": ["x", "y"], "ports": [{"port": 80}, {"port": 443}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "Promoted", "status": "True"},
            ], "weight": 10},
        });
        let eval = |p: &str| -> Vec<Value> {
            JsonPath::parse(p)
                .unwrap()
                .eval(&obj)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(eval(".metadata.name"), vec![json!("a")]);
        assert_eq!(eval("{.metadata.name}"), vec![json!("a")]);
        assert_eq!(eval(".spec.ports[1].port"), vec![json!(443)]);
        assert_eq!(eval(".spec.ports[-1].port"), vec![json!(443)]);
        assert_eq!(eval(".spec.ports[*].port"), vec![json!(80), json!(443)]);
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("False")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type != 'Ready')].type"),
            vec![json!("Promoted")]
        );
        assert_eq!(eval(".spec.ports[?(@.port > 100)].port"), vec![json!(443)]);
        assert_eq!(
            eval(".metadata.labels['app.kubernetes.io/name']"),
            vec![json!("web")]
        );
        assert!(eval(".status.phase").is_empty());
        assert!(eval(".spec.ports[5].port").is_empty());
        assert!(JsonPath::parse(".spec[").is_err());
        assert!(JsonPath::parse(".spec[1:2]").is_err());

        let now = Timestamp::now();
        assert_eq!(
            custom_cell("string", &json!(["x", "y"]), now),
            json!("[\"x\",\"y\"]")
        );
        assert_eq!(custom_cell("string", &json!(10), now), json!("10"));
        assert_eq!(custom_cell("integer", &json!(2.7), now), json!(2));
        assert_eq!(custom_cell("boolean", &json!("yes"), now), Value::Null);
        assert_eq!(custom_cell("date", &json!("nope"), now), json!("<invalid>"));
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1500000.5), "1.5000005e+06");
    }

    #[test]
    fn accept_headers_choose_tables() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let opts = requested(kubectl, None).unwrap().unwrap();
        assert_eq!(opts.api_version, "meta.k8s.io/v1");
        assert_eq!(opts.include, Include::Metadata);
        let beta = requested(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            Some("None"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (beta.api_version, beta.include),
            ("meta.k8s.io/v1beta1", Include::None)
        );
        assert_eq!(requested("application/json", None).unwrap(), None);
        assert_eq!(requested("", None).unwrap(), None);
        assert_eq!(
            requested(
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
                None
            )
            .unwrap(),
            None
        );
        let e = requested("application/json;as=Table;v=v9;g=meta.k8s.io", None).unwrap_err();
        assert_eq!(e.code, 406);
        assert_eq!(
            requested(
                "application/json;as=Table;v=v9;g=meta.k8s.io,application/json",
                None
            )
            .unwrap(),
            None
        );
        assert_eq!(
            requested(kubectl, Some("Everything")).unwrap_err().code,
            400
        );
    }

    #[test]
    fn pod_cells_sum_up_containers() {
        let now: Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.9"}], "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-01-01T00:58:00Z"}}},
            ]},
        });
        let (cells, conditions) = pod_cells(&pod, now);
        assert_eq!(
            cells,
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (2m ago)"),
                json!("60m"),
                json!("10.0.0.9"),
                json!("n1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        assert!(conditions.is_none());
        let done = json!({"metadata": {"name": "job"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let (cells, conditions) = pod_cells(&done, now);
        assert_eq!((&cells[1], &cells[2]), (&json!("0/1"), &json!("Completed")));
        assert_eq!(cells[4], json!("<unknown>"));
        assert!(conditions.is_some());
    }

    fn rt(group: &str, plural: &str, printer_columns: Option<Vec<Value>>) -> Rt {
        let t = crate::resources::ResourceType::new(group, "v1", "Thing", plural, true, false);
        let mut info = crate::resources::TypeInfo::known(&t);
        info.printer_columns = printer_columns;
        Rt {
            builtin: info.printer_columns.is_none(),
            t,
            info,
        }
    }

    fn names(table: &Value) -> Vec<&str> {
        table["columnDefinitions"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default()
    }

    const V1: TableOpts = TableOpts {
        api_version: "meta.k8s.io/v1",
        include: Include::Metadata,
    };

    #[test]
    fn events_print_from_either_api() {
        let now: Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let core = json!({
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "message": " pulled \n", "type": "Normal",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:59:00Z", "count": 4,
        });
        assert_eq!(
            event_cells(&core, false, now),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("pulled"),
                json!("60m"),
                json!(4),
                json!("web.1"),
            ]
        );
        let new = json!({
            "metadata": {"name": "e"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "note": "scaled", "reason": "ScalingReplicaSet", "type": "Normal",
            "eventTime": "2025-01-01T00:30:00.000000Z", "reportingController": "deployment-controller",
            "series": {"count": 3, "lastObservedTime": "2025-01-01T00:58:00.000000Z"},
        });
        let cells = event_cells(&new, true, now);
        assert_eq!(cells[0], json!("2m"));
        assert_eq!(cells[3], json!("deployment/web"));
        assert_eq!(cells[5], json!("deployment-controller"));
        assert_eq!(
            (&cells[6], &cells[7], &cells[8]),
            (&json!("scaled"), &json!("30m"), &json!(3))
        );
    }

    #[test]
    fn other_types_print_their_columns() {
        let hpa = json!({"metadata": {"name": "h"}, "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}},
                {"type": "External", "external": {"target": {"value": "3"}}},
            ]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"current": {"averageUtilization": 42}}}]}});
        let t = table(
            &rt("autoscaling", "horizontalpodautoscalers", None),
            &[&hpa],
            json!({}),
            &V1,
            true,
        );
        assert_eq!(
            names(&t),
            [
                "Name",
                "Reference",
                "Targets",
                "MinPods",
                "MaxPods",
                "Replicas",
                "Age"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "h",
                "Deployment/web",
                "cpu: 42%/80%, <unknown>/1k + 1 more...",
                "<unset>",
                5,
                2,
                "<unknown>"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");

        let ing = json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "a"}, {}, {"host": "c"}, {"host": "d"}, {"host": "e"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}]}}});
        let t = table(
            &rt("networking.k8s.io", "ingresses", None),
            &[&ing],
            json!({}),
            &V1,
            true,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "i",
                "<none>",
                "a,c,d + 2 more...",
                "1.2.3.4,lb.example.com",
                "80",
                "<unknown>"
            ])
        );

        // A CRD without printer columns: Name and Age; other types: Name and Created At.
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2025-01-01T00:00:00Z"}});
        let t = table(
            &rt("example.com", "things", Some(Vec::new())),
            &[&obj],
            json!({}),
            &V1,
            true,
        );
        assert_eq!(names(&t), ["Name", "Age"]);
        let t = table(
            &rt("example.com", "things", None),
            &[&obj],
            json!({}),
            &V1,
            false,
        );
        assert_eq!(t["columnDefinitions"], json!([]));
        assert_eq!(t["rows"][0]["cells"], json!(["x", "2025-01-01T00:00:00Z"]));
        let t = table(
            &rt("rbac.authorization.k8s.io", "roles", None),
            &[&obj],
            json!({}),
            &V1,
            true,
        );
        assert_eq!(names(&t), ["Name", "Created At"]);
        assert_eq!(t["columnDefinitions"][1]["type"], "string");
    }

    #[test]
    fn selectors_and_services_print_like_kubectl() {
        let sel = json!({"matchLabels": {"tier": "web", "app": "a"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(
            selector_string(Some(&sel)),
            "app=a,!canary,env in (dev,prod),tier=web"
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.3",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443}],
            "selector": {"app": "a"}}});
        let cells = service_cells(&svc, json!("s"), json!("1s"));
        assert_eq!(
            cells[1..5],
            [
                json!("ClusterIP"),
                json!("10.96.0.3"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP")
            ]
        );
        assert_eq!(cells[6], json!("app=a"));
    }
}
