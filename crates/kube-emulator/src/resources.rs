//! The served resource types and discovery documents.

use std::sync::Arc;

use serde_json::{json, Value};

/// A served resource type (one group/version/kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name used in paths, e.g. `deployments`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (then `.status` is only written through it).
    pub status_subresource: bool,
}

impl ResourceType {
    /// A resource type (convenience constructor).
    pub fn new(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status_subresource: bool,
    ) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource,
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A registered type with what the server knows about it beyond the public description.
#[derive(Debug)]
pub(crate) struct Rt {
    pub t: ResourceType,
    /// Compiled into the API server (strategic merge patch allowed, unconditional PUT allowed),
    /// as opposed to a custom resource.
    pub builtin: bool,
    /// Discovery names and, for custom resources, the CRD's printer columns.
    pub info: TypeInfo,
}

/// What discovery and the Table printers know of a type besides its [`ResourceType`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TypeInfo {
    /// `singularName` (the kind in lower case unless a CRD says otherwise).
    pub singular: String,
    /// `shortNames`, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// `categories`, e.g. `all`.
    pub categories: Vec<String>,
    /// For custom resources: the served version's `additionalPrinterColumns` (an empty list
    /// when the CRD has none); `None` for built-in types.
    pub printer_columns: Option<Vec<Value>>,
}

impl TypeInfo {
    /// The names the real API server gives a built-in type (and the real CRDs the custom
    /// types served by default).
    pub(crate) fn known(t: &ResourceType) -> TypeInfo {
        let (short, categories): (&[&str], &[&str]) = match (t.group.as_str(), t.plural.as_str()) {
            ("", "pods") => (&["po"], &["all"]),
            ("", "services") => (&["svc"], &["all"]),
            ("", "namespaces") => (&["ns"], &[]),
            ("", "configmaps") => (&["cm"], &[]),
            ("", "events") | ("events.k8s.io", "events") => (&["ev"], &[]),
            ("", "serviceaccounts") => (&["sa"], &[]),
            ("apps", "deployments") => (&["deploy"], &["all"]),
            ("apps", "replicasets") => (&["rs"], &["all"]),
            ("apps", "statefulsets") => (&["sts"], &["all"]),
            ("apps", "daemonsets") => (&["ds"], &["all"]),
            ("autoscaling", "horizontalpodautoscalers") => (&["hpa"], &["all"]),
            ("networking.k8s.io", "ingresses") => (&["ing"], &[]),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                (&["crd", "crds"], &["api-extensions"])
            }
            ("gateway.networking.k8s.io", "gateways") => (&["gtw"], &["gateway-api"]),
            ("gateway.networking.k8s.io", "gatewayclasses") => (&["gc"], &["gateway-api"]),
            ("gateway.networking.k8s.io", _) => (&[], &["gateway-api"]),
            ("networking.istio.io", "virtualservices") => {
                (&["vs"], &["istio-io", "networking-istio-io"])
            }
            ("networking.istio.io", "destinationrules") => {
                (&["dr"], &["istio-io", "networking-istio-io"])
            }
            ("gateway.solo.io", "virtualservices") => (&["vs"], &[]),
            ("gateway.solo.io", "routetables") => (&["rt"], &[]),
            ("gloo.solo.io", "upstreams") => (&["us"], &[]),
            ("flagger.app", _) => (&[], &["all"]),
            _ => (&[], &[]),
        };
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        TypeInfo {
            singular: t.kind.to_lowercase(),
            short_names: owned(short),
            categories: owned(categories),
            printer_columns: None,
        }
    }

    /// The names and printer columns of one served version of a CRD.
    fn from_crd(crd: &Value, version: &Value) -> TypeInfo {
        let strings = |ptr: &str| -> Vec<String> {
            crd.pointer(ptr)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let singular = crd
            .pointer("/spec/names/singular")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .unwrap_or_else(|| {
                crd.pointer("/spec/names/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase()
            });
        TypeInfo {
            singular,
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            printer_columns: Some(
                version
                    .get("additionalPrinterColumns")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
        }
    }

    /// The verbs discovery lists for the type (namespaces cannot be deleted as a collection).
    fn verbs(t: &ResourceType) -> Value {
        if t.group.is_empty() && t.plural == "namespaces" {
            json!(["create", "delete", "get", "list", "patch", "update", "watch"])
        } else {
            json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ])
        }
    }
}

impl Rt {
    pub(crate) fn group(&self) -> &str {
        &self.t.group
    }
    pub(crate) fn plural(&self) -> &str {
        &self.t.plural
    }
    pub(crate) fn kind(&self) -> &str {
        &self.t.kind
    }
    /// Objects of all versions of a group/resource share one storage; so do the Events of the
    /// core group and of `events.k8s.io` (see [`crate::events`]).
    pub(crate) fn storage_key(&self) -> (String, String) {
        if crate::events::is_events_view(self) {
            return (String::new(), "events".into());
        }
        (self.t.group.clone(), self.t.plural.clone())
    }
}

fn builtin_types() -> Vec<(ResourceType, bool)> {
    let b = |g: &str, v: &str, k: &str, p: &str, ns: bool, st: bool| {
        (ResourceType::new(g, v, k, p, ns, st), true)
    };
    let c = |g: &str, v: &str, k: &str, p: &str, ns: bool, st: bool| {
        (ResourceType::new(g, v, k, p, ns, st), false)
    };
    vec![
        b("", "v1", "Namespace", "namespaces", false, false),
        b("", "v1", "Service", "services", true, false),
        b("", "v1", "ConfigMap", "configmaps", true, false),
        b("", "v1", "Secret", "secrets", true, false),
        b("", "v1", "Pod", "pods", true, true),
        b("", "v1", "Event", "events", true, false),
        b("", "v1", "ServiceAccount", "serviceaccounts", true, false),
        b("apps", "v1", "Deployment", "deployments", true, true),
        b("apps", "v1", "DaemonSet", "daemonsets", true, true),
        b("apps", "v1", "StatefulSet", "statefulsets", true, true),
        b("apps", "v1", "ReplicaSet", "replicasets", true, true),
        b(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            true,
        ),
        b("coordination.k8s.io", "v1", "Lease", "leases", true, false),
        b(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            true,
        ),
        b("events.k8s.io", "v1", "Event", "events", true, false),
        b(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
        ),
        c(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
            "httproutes",
            true,
            true,
        ),
        c(
            "gateway.networking.k8s.io",
            "v1",
            "Gateway",
            "gateways",
            true,
            true,
        ),
        c(
            "gateway.networking.k8s.io",
            "v1",
            "GatewayClass",
            "gatewayclasses",
            false,
            true,
        ),
        c(
            "gateway.networking.k8s.io",
            "v1beta1",
            "HTTPRoute",
            "httproutes",
            true,
            true,
        ),
        c(
            "gateway.networking.k8s.io",
            "v1beta1",
            "Gateway",
            "gateways",
            true,
            true,
        ),
        c(
            "gateway.networking.k8s.io",
            "v1beta1",
            "GatewayClass",
            "gatewayclasses",
            false,
            true,
        ),
        c(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
            true,
            false,
        ),
        c(
            "networking.istio.io",
            "v1",
            "DestinationRule",
            "destinationrules",
            true,
            false,
        ),
        c(
            "networking.istio.io",
            "v1beta1",
            "VirtualService",
            "virtualservices",
            true,
            false,
        ),
        c(
            "networking.istio.io",
            "v1beta1",
            "DestinationRule",
            "destinationrules",
            true,
            false,
        ),
        c(
            "gateway.solo.io",
            "v1",
            "RouteTable",
            "routetables",
            true,
            false,
        ),
        c(
            "gateway.solo.io",
            "v1",
            "VirtualService",
            "virtualservices",
            true,
            false,
        ),
        c("gloo.solo.io", "v1", "Upstream", "upstreams", true, false),
        c("flagger.app", "v1beta1", "Canary", "canaries", true, true),
        c(
            "flagger.app",
            "v1beta1",
            "MetricTemplate",
            "metrictemplates",
            true,
            false,
        ),
    ]
}

/// Kubernetes version priority: GA > beta > alpha, then by number (as discovery orders them).
pub(crate) fn version_priority(v: &str) -> (u8, u32, u32) {
    let rest = match v.strip_prefix('v') {
        Some(r) => r,
        None => return (0, 0, 0),
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major: u32 = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (stage, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, major, 0);
    };
    (stage, major, num.parse().unwrap_or(0))
}

/// All served types.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    types: Vec<Arc<Rt>>,
}

impl Registry {
    pub(crate) fn new(extra: &[ResourceType]) -> Self {
        let mut reg = Registry::default();
        for (t, builtin) in builtin_types() {
            reg.add(t, builtin);
        }
        for t in extra {
            reg.add(t.clone(), false);
        }
        reg
    }

    fn add(&mut self, t: ResourceType, builtin: bool) {
        let mut info = TypeInfo::known(&t);
        if !builtin {
            // As its CRD (from `crd_objects`) will say.
            info.printer_columns =
                Some(crate::tables::default_printer_columns(&t.group, &t.plural));
        }
        self.add_with(t, builtin, info);
    }

    fn add_with(&mut self, t: ResourceType, builtin: bool, info: TypeInfo) {
        let rt = Arc::new(Rt { t, builtin, info });
        if let Some(pos) = self.types.iter().position(|r| {
            r.t.group == rt.t.group && r.t.version == rt.t.version && r.t.plural == rt.t.plural
        }) {
            self.types[pos] = rt;
        } else {
            self.types.push(rt);
        }
    }

    /// CustomResourceDefinition objects describing the custom (non built-in) types.
    pub(crate) fn crd_objects(&self) -> Vec<Value> {
        let mut out: Vec<(ResourceType, Vec<String>)> = Vec::new();
        for r in self.types.iter().filter(|r| !r.builtin) {
            match out
                .iter_mut()
                .find(|(t, _)| t.group == r.t.group && t.plural == r.t.plural)
            {
                Some((_, versions)) => versions.push(r.t.version.clone()),
                None => out.push((r.t.clone(), vec![r.t.version.clone()])),
            }
        }
        out.into_iter()
            .map(|(t, mut versions)| {
                versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                let storage = versions.first().cloned().unwrap_or_default();
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let mut version = json!({
                            "name": v,
                            "served": true,
                            "storage": *v == storage,
                            "schema": {"openAPIV3Schema": crate::schema::known_crd_schema(&t.group, &t.kind)
                                .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))},
                        });
                        if t.status_subresource {
                            version["subresources"] = json!({"status": {}});
                        }
                        let columns = crate::tables::default_printer_columns(&t.group, &t.plural);
                        if !columns.is_empty() {
                            version["additionalPrinterColumns"] = Value::Array(columns);
                        }
                        version
                    })
                    .collect();
                let info = TypeInfo::known(&t);
                let mut names = json!({
                    "kind": t.kind,
                    "listKind": format!("{}List", t.kind),
                    "plural": t.plural,
                    "singular": info.singular,
                });
                if !info.short_names.is_empty() {
                    names["shortNames"] = json!(info.short_names);
                }
                if !info.categories.is_empty() {
                    names["categories"] = json!(info.categories);
                }
                json!({
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": format!("{}.{}", t.plural, t.group)},
                    "spec": {
                        "group": t.group,
                        "names": names,
                        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                        "versions": vs,
                    },
                })
            })
            .collect()
    }

    /// Serves (or stops serving) the types a CustomResourceDefinition describes.
    pub(crate) fn sync_crd(&mut self, crd: &Value, deleted: bool) {
        let text = |ptr: &str| {
            crd.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (group, plural, kind) = (
            text("/spec/group"),
            text("/spec/names/plural"),
            text("/spec/names/kind"),
        );
        if group.is_empty() || plural.is_empty() || kind.is_empty() {
            return;
        }
        self.types
            .retain(|r| r.builtin || !(r.t.group == group && r.t.plural == plural));
        if deleted {
            return;
        }
        let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
        for v in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let Some(name) = v.get("name").and_then(Value::as_str) else {
                continue;
            };
            let status = v.pointer("/subresources/status").is_some();
            self.add_with(
                ResourceType::new(&group, name, &kind, &plural, namespaced, status),
                false,
                TypeInfo::from_crd(crd, v),
            );
        }
    }

    /// Every served type, in registration order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Rt>> {
        self.types.iter()
    }

    pub(crate) fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Rt>> {
        self.types
            .iter()
            .find(|r| r.t.group == group && r.t.version == version && r.t.plural == plural)
            .cloned()
    }

    /// The type of `plural` in `group` at the group's preferred version that serves it.
    pub(crate) fn preferred(&self, group: &str, plural: &str) -> Option<Arc<Rt>> {
        self.types
            .iter()
            .filter(|r| r.t.group == group && r.t.plural == plural)
            .max_by_key(|r| version_priority(&r.t.version))
            .cloned()
    }

    pub(crate) fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<Rt>> {
        self.types
            .iter()
            .find(|r| r.t.group == group && r.t.version == version && r.t.kind == kind)
            .cloned()
    }

    pub(crate) fn by_api_version(&self, api_version: &str, plural: &str) -> Option<Arc<Rt>> {
        let (group, version) = split_api_version(api_version);
        self.lookup(group, version, plural)
    }

    /// Groups (non-core) with their versions, highest priority first; groups in registration order.
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.types {
            if r.t.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.t.version) {
                        versions.push(r.t.version.clone());
                    }
                }
                None => out.push((r.t.group.clone(), vec![r.t.version.clone()])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    pub(crate) fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|r| r.t.group == group && r.t.version == version)
    }

    /// `APIResourceList` for one group/version.
    pub(crate) fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = Vec::new();
        for r in self
            .types
            .iter()
            .filter(|r| r.t.group == group && r.t.version == version)
        {
            let mut resource = json!({
                "name": r.t.plural,
                "singularName": r.info.singular,
                "namespaced": r.t.namespaced,
                "kind": r.t.kind,
                "verbs": TypeInfo::verbs(&r.t),
            });
            if !r.info.short_names.is_empty() {
                resource["shortNames"] = json!(r.info.short_names);
            }
            if !r.info.categories.is_empty() {
                resource["categories"] = json!(r.info.categories);
            }
            resources.push(resource);
            if r.t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", r.t.plural),
                    "singularName": "",
                    "namespaced": r.t.namespaced,
                    "kind": r.t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        // The real server lists a group version's resources by name.
        resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        })
    }

    pub(crate) fn api_group(&self, group: &str) -> Option<Value> {
        let (_, versions) = self.groups().into_iter().find(|(g, _)| g == group)?;
        Some(group_json(group, &versions))
    }

    pub(crate) fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, versions)| group_json(g, versions))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": vs,
        "preferredVersion": preferred,
    })
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_by_priority() {
        let reg = Registry::new(&[]);
        let groups = reg.groups();
        let gw = groups
            .iter()
            .find(|(g, _)| g == "gateway.networking.k8s.io")
            .map(|(_, v)| v.clone());
        assert_eq!(gw, Some(vec!["v1".to_string(), "v1beta1".to_string()]));
        assert!(version_priority("v2") > version_priority("v1"));
        assert!(version_priority("v1") > version_priority("v2beta1"));
        assert!(version_priority("v1beta2") > version_priority("v1beta1"));
        assert!(version_priority("v1alpha1") < version_priority("v1beta1"));
    }

    #[test]
    fn status_subresources_are_listed() {
        let reg = Registry::new(&[]);
        let list = reg.resource_list("apps", "v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&"deployments"));
        assert!(names.contains(&"deployments/status"));
        assert!(!names.contains(&"services"));
    }

    #[test]
    fn discovery_lists_names_as_the_real_server() {
        let reg = Registry::new(&[]);
        let find = |group: &str, version: &str, name: &str| -> Value {
            reg.resource_list(group, version)["resources"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
                .unwrap_or_default()
        };
        let deploy = find("apps", "v1", "deployments");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        assert_eq!(deploy["singularName"], "deployment");
        let ns = find("", "v1", "namespaces");
        assert_eq!(ns["shortNames"], json!(["ns"]));
        assert!(ns.get("categories").is_none());
        assert!(!ns["verbs"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("deletecollection"))));
        assert!(find("", "v1", "secrets").get("shortNames").is_none());
        let core = reg.resource_list("", "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);

        // The default custom types' CRDs carry their real names and printer columns.
        let crds = reg.crd_objects();
        let canaries = crds
            .iter()
            .find(|c| c["metadata"]["name"] == "canaries.flagger.app")
            .cloned()
            .unwrap_or_default();
        assert_eq!(canaries["spec"]["names"]["categories"], json!(["all"]));
        assert_eq!(canaries["spec"]["names"]["singular"], "canary");
        assert_eq!(
            canaries["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"],
            ".status.phase"
        );
        let vs = crds
            .iter()
            .find(|c| c["metadata"]["name"] == "virtualservices.networking.istio.io")
            .cloned()
            .unwrap_or_default();
        assert_eq!(vs["spec"]["names"]["shortNames"], json!(["vs"]));
        assert_eq!(
            vs["spec"]["names"]["categories"],
            json!(["istio-io", "networking-istio-io"])
        );
    }

    #[test]
    fn a_crd_names_its_type() {
        let mut reg = Registry::new(&[]);
        let crd = json!({
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "wdgt", "shortNames": ["wd"], "categories": ["all", "toys"]},
                "scope": "Namespaced",
                "versions": [
                    {"name": "v1", "served": true, "additionalPrinterColumns": [{"name": "Color", "type": "string", "jsonPath": ".spec.color"}]},
                    {"name": "v1beta1", "served": true},
                ],
            },
        });
        reg.sync_crd(&crd, false);
        let v1 = reg
            .lookup("example.com", "v1", "widgets")
            .map(|r| r.info.clone());
        let beta = reg
            .lookup("example.com", "v1beta1", "widgets")
            .map(|r| r.info.clone());
        assert_eq!(
            v1,
            Some(TypeInfo {
                singular: "wdgt".into(),
                short_names: vec!["wd".into()],
                categories: vec!["all".into(), "toys".into()],
                printer_columns: Some(vec![
                    json!({"name": "Color", "type": "string", "jsonPath": ".spec.color"})
                ]),
            })
        );
        assert_eq!(beta.and_then(|i| i.printer_columns), Some(Vec::new()));
        let listed = reg.resource_list("example.com", "v1");
        assert_eq!(listed["resources"][0]["shortNames"], json!(["wd"]));
        assert_eq!(listed["resources"][0]["singularName"], "wdgt");
    }

    #[test]
    fn extra_resources_are_registered() {
        let reg = Registry::new(&[ResourceType::new(
            "example.com",
            "v1",
            "Widget",
            "widgets",
            true,
            false,
        )]);
        assert!(reg.lookup("example.com", "v1", "widgets").is_some());
        assert!(reg.by_kind("example.com", "v1", "Widget").is_some());
    }
}
