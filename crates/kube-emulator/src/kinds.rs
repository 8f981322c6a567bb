//! Per-kind defaulting and validation of the built-in types this emulator knows about.

use serde_json::{json, Map, Value};

use crate::errors::{ApiError, ApiResult, Cause};
use crate::resources::Rt;
use crate::selectors::{
    is_dns1123_label, is_dns1123_subdomain, valid_label_key, valid_label_value, LabelSelector,
};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const LABEL_KEY_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
const SERVICE_NAME_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_group(rt: &Rt, group: &str, plural: &str) -> bool {
    rt.group() == group && rt.plural() == plural
}

/// Validates `metadata.name` (the rule depends on the type).
pub(crate) fn validate_name(rt: &Rt, name: &str) -> ApiResult<()> {
    let cause = if is_group(rt, "", "services") {
        let ok = is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase());
        (!ok).then(|| Cause::invalid("metadata.name", &json!(name), SERVICE_NAME_MSG))
    } else if is_group(rt, "", "namespaces") {
        (!is_dns1123_label(name)).then(|| Cause::invalid("metadata.name", &json!(name), LABEL_MSG))
    } else if rt.group() == "rbac.authorization.k8s.io" {
        // RBAC names are path segments: anything but '/', '%', '.' and '..'.
        let bad = name.contains('/') || name.contains('%') || name == "." || name == "..";
        bad.then(|| Cause::invalid("metadata.name", &json!(name), "may not contain '/' or '%'"))
    } else {
        (!is_dns1123_subdomain(name))
            .then(|| Cause::invalid("metadata.name", &json!(name), SUBDOMAIN_MSG))
    };
    match cause {
        Some(c) => Err(ApiError::invalid(rt.kind(), rt.group(), name, vec![c])),
        None => Ok(()),
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let entry = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// Pod spec defaults (as `SetDefaults_PodSpec` / `SetDefaults_Container`).
fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = s.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let last = image.rsplit('/').next().unwrap_or_default();
                let tag_latest =
                    !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
                let policy = if tag_latest { "Always" } else { "IfNotPresent" };
                set_default(c, "imagePullPolicy", json!(policy));
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Applies the API server's defaults. `next_ip` allocates a Service cluster IP.
pub(crate) fn apply_defaults(
    rt: &Rt,
    obj: &mut Value,
    old: Option<&Value>,
    next_ip: &mut dyn FnMut() -> String,
) {
    match (rt.group(), rt.plural()) {
        ("apps", "deployments") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                if let Some(st) = strategy.as_object_mut() {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type") == Some(&json!("RollingUpdate")) {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
                if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                    default_pod_spec(ps);
                }
            }
        }
        ("apps", "statefulsets" | "daemonsets" | "replicasets") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                if rt.plural() != "daemonsets" {
                    set_default(spec, "replicas", json!(1));
                }
                if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                    default_pod_spec(ps);
                }
            }
        }
        ("", "pods") => {
            if let Some(ps) = obj.get_mut("spec") {
                default_pod_spec(ps);
            }
        }
        ("", "services") => {
            let old_spec = old
                .and_then(|o| o.get("spec"))
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                let external = spec.get("type") == Some(&json!("ExternalName"));
                if !external {
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                    // The cluster IP is kept across updates that omit it.
                    if spec.get("clusterIP").is_none_or(|v| v.is_null() || v == "") {
                        match old_spec.get("clusterIP").filter(|v| v.is_string()) {
                            Some(ip) => {
                                spec.insert("clusterIP".into(), ip.clone());
                            }
                            None => {
                                spec.insert("clusterIP".into(), json!(next_ip()));
                            }
                        }
                    }
                    let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
                    set_default(spec, "clusterIPs", json!([ip]));
                    set_default(spec, "ipFamilies", json!(["IPv4"]));
                    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                }
                if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
            if obj.get("status").is_none() {
                obj["status"] = json!({"loadBalancer": {}});
            }
        }
        ("", "secrets") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    use base64::Engine as _;
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(data) = data.as_object_mut() {
                        for (k, v) in sd {
                            let s = v.as_str().unwrap_or_default();
                            let enc =
                                base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
                            data.insert(k, json!(enc));
                        }
                    }
                }
            }
        }
        ("", "namespaces") => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(meta) = obj_mut(obj, "metadata") {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        _ => {}
    }
}

/// Validates an object (`old` on update).
pub(crate) fn validate(rt: &Rt, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut causes = Vec::new();
    if let Some(labels) = obj.pointer("/metadata/labels") {
        if !labels.is_object() && !labels.is_null() {
            causes.push(Cause::invalid(
                "metadata.labels",
                labels,
                "must be a map of strings",
            ));
        } else if let Some(m) = labels.as_object() {
            for (k, v) in m {
                match v.as_str() {
                    None => causes.push(Cause::invalid("metadata.labels", v, "must be a string")),
                    Some(value) if !valid_label_value(value) => {
                        causes.push(Cause::invalid("metadata.labels", v, LABEL_VALUE_MSG))
                    }
                    Some(_) => {}
                }
                if !valid_label_key(k) {
                    causes.push(Cause::invalid("metadata.labels", &json!(k), LABEL_KEY_MSG));
                }
            }
        }
    }
    match (rt.group(), rt.plural()) {
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets") => {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(r) = spec.get("replicas") {
                if r.as_i64().is_none_or(|n| n < 0) {
                    causes.push(Cause::invalid(
                        "spec.replicas",
                        r,
                        "must be greater than or equal to 0",
                    ));
                }
            }
            let selector = spec.get("selector").filter(|s| !s.is_null());
            match selector {
                None => causes.push(Cause::required("spec.selector", "")),
                Some(sel) => {
                    let labels = spec.pointer("/template/metadata/labels");
                    match LabelSelector::from_object(sel) {
                        Err(e) => causes.push(Cause::invalid("spec.selector", sel, &e)),
                        Ok(s) if s.is_empty() => causes.push(Cause::invalid(
                            "spec.selector",
                            sel,
                            "empty selector is invalid for deployment",
                        )),
                        Ok(s) if !s.matches(labels) => causes.push(Cause::invalid(
                            "spec.template.metadata.labels",
                            labels.unwrap_or(&Value::Null),
                            "`selector` does not match template `labels`",
                        )),
                        Ok(_) => {}
                    }
                    if let Some(old_sel) = old.and_then(|o| o.pointer("/spec/selector")) {
                        if old_sel != sel {
                            causes.push(Cause::invalid("spec.selector", sel, "field is immutable"));
                        }
                    }
                }
            }
            validate_containers(
                spec.pointer("/template/spec/containers"),
                "spec.template.spec.containers",
                &mut causes,
            );
        }
        ("", "pods") => {
            validate_containers(
                obj.pointer("/spec/containers"),
                "spec.containers",
                &mut causes,
            );
        }
        ("", "services") => {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
                causes.push(Cause::unsupported(
                    "spec.type",
                    &json!(ty),
                    &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
                ));
            }
            if let Some(td) = spec.get("trafficDistribution").filter(|v| !v.is_null()) {
                const DISTRIBUTIONS: [&str; 3] =
                    ["PreferClose", "PreferSameNode", "PreferSameZone"];
                if !td.as_str().is_some_and(|t| DISTRIBUTIONS.contains(&t)) {
                    causes.push(Cause::unsupported(
                        "spec.trafficDistribution",
                        td,
                        &DISTRIBUTIONS,
                    ));
                }
            }
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            let ports = spec.get("ports").and_then(Value::as_array);
            if ty != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
                causes.push(Cause::required("spec.ports", ""));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let valid = p
                    .get("port")
                    .and_then(Value::as_i64)
                    .is_some_and(|n| (1..=65535).contains(&n));
                if !valid {
                    causes.push(Cause::invalid(
                        &format!("spec.ports[{i}].port"),
                        p.get("port").unwrap_or(&Value::Null),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let (Some(old_ip), Some(new_ip)) = (
                old.and_then(|o| o.pointer("/spec/clusterIP")),
                spec.get("clusterIP"),
            ) {
                if old_ip != new_ip {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        new_ip,
                        "may not change once set",
                    ));
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let text = |ptr: &str| obj.pointer(ptr).and_then(Value::as_str).unwrap_or_default();
            let (group, plural) = (text("/spec/group"), text("/spec/names/plural"));
            if group.is_empty() {
                causes.push(Cause::required("spec.group", ""));
            }
            if plural.is_empty() {
                causes.push(Cause::required("spec.names.plural", ""));
            }
            if text("/spec/names/kind").is_empty() {
                causes.push(Cause::required("spec.names.kind", ""));
            }
            if name != format!("{plural}.{group}") {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &json!(name),
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
            let versions = obj.pointer("/spec/versions").and_then(Value::as_array);
            if versions.is_none_or(|v| v.is_empty()) {
                causes.push(Cause::required(
                    "spec.versions",
                    "must have exactly one version marked as storage version",
                ));
            }
        }
        ("", "configmaps" | "secrets") => {
            if let Some(data) = obj.get("data").and_then(Value::as_object) {
                for (k, v) in data {
                    if !v.is_string() {
                        causes.push(Cause::invalid(&format!("data[{k}]"), v, "must be a string"));
                    }
                }
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt.kind(), rt.group(), name, causes))
    }
}

fn validate_containers(containers: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    match containers.and_then(Value::as_array) {
        None => causes.push(Cause::required(field, "")),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(field, "")),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(&format!("{field}[{i}].name"), ""));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(&format!("{field}[{i}].image"), ""));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ResourceType, Rt};

    fn rt(group: &str, kind: &str, plural: &str) -> Rt {
        let t = ResourceType::new(group, "v1", kind, plural, true, false);
        Rt {
            info: crate::resources::TypeInfo::known(&t),
            t,
            builtin: true,
        }
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}});
        let mut ip = || "10.96.0.10".to_string();
        apply_defaults(
            &rt("apps", "Deployment", "deployments"),
            &mut d,
            None,
            &mut ip,
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
    }

    #[test]
    fn service_keeps_cluster_ip() {
        let r = rt("", "Service", "services");
        let old = json!({"spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}});
        let mut new = json!({"spec": {"ports": [{"port": 80}]}});
        let mut ip = || "10.96.0.99".to_string();
        apply_defaults(&r, &mut new, Some(&old), &mut ip);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new["spec"]["ports"][0]["targetPort"], 80);
        assert!(validate(&r, &new, Some(&old)).is_ok());
    }

    #[test]
    fn a_headless_service_stays_headless_and_its_traffic_distribution_is_checked() {
        let r = rt("", "Service", "services");
        let old = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        let mut new =
            json!({"spec": {"ports": [{"port": 80}], "trafficDistribution": "PreferClose"}});
        let mut ip = || "10.96.0.99".to_string();
        apply_defaults(&r, &mut new, Some(&old), &mut ip);
        assert_eq!(new["spec"]["clusterIP"], "None");
        assert!(validate(&r, &new, Some(&old)).is_ok());
        let to_ip = json!({"spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}});
        assert!(validate(&r, &to_ip, Some(&old)).is_err());
        let bad = json!({"spec": {"ports": [{"port": 80}], "trafficDistribution": "Nearby"}});
        let err = validate(&r, &bad, None)
            .err()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(
            err.contains("spec.trafficDistribution: Unsupported value: \"Nearby\""),
            "{err}"
        );
    }

    #[test]
    fn label_values_are_validated() {
        let r = rt("", "ConfigMap", "configmaps");
        let bad = json!({"metadata": {"name": "a", "labels": {"app": "not valid!"}}});
        let err = validate(&r, &bad, None)
            .err()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(
            err.contains("a valid label must be an empty string"),
            "{err}"
        );
        let bad_key = json!({"metadata": {"name": "a", "labels": {"-x": "ok"}}});
        assert!(validate(&r, &bad_key, None).is_err());
        let good =
            json!({"metadata": {"name": "a", "labels": {"example.com/x": "", "app": "v1.2_3"}}});
        assert!(validate(&r, &good, None).is_ok());
    }

    #[test]
    fn deployment_selector_rules() {
        let r = rt("apps", "Deployment", "deployments");
        let d = json!({"metadata": {"name": "a"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let err = validate(&r, &d, None)
            .err()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(
            err.contains("`selector` does not match template `labels`"),
            "{err}"
        );
        let ok = json!({"metadata": {"name": "a"}, "spec": {
            "selector": {"matchLabels": {"app": "b"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(validate(&r, &ok, None).is_ok());
        let err = validate(&r, &ok, Some(&d))
            .err()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(err.contains("field is immutable"), "{err}");
    }
}
