//! Validating admission: what a webhook installed in the cluster refuses after the API server's
//! own validation. The emulator stands in for ingress-nginx's (`validate.nginx.ingress.kubernetes.io`),
//! which checks the values of the canary annotations aviary writes on an Ingress
//! (ingress-nginx's annotation validation, on by default since its 1.9): `canary` a boolean,
//! `canary-weight` and `canary-weight-total` integers, `canary-by-header` and `canary-by-cookie`
//! header-name characters, `canary-by-header-pattern` a regular expression. A denial is a 400
//! whose message names the webhook, the annotation and its value, as the API server relays it.

use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::resources::Rt;

const NGINX: &str = "nginx.ingress.kubernetes.io/";
const NGINX_WEBHOOK: &str = "validate.nginx.ingress.kubernetes.io";

/// Whether `value` is what ingress-nginx's validator for annotation `name` (without the
/// prefix) accepts; annotations it does not check are accepted.
fn nginx_value_ok(name: &str, value: &str) -> bool {
    let header_chars = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match name {
        // Go's strconv.ParseBool.
        "canary" => matches!(
            value,
            "1" | "t"
                | "T"
                | "TRUE"
                | "true"
                | "True"
                | "0"
                | "f"
                | "F"
                | "FALSE"
                | "false"
                | "False"
        ),
        // Go's strconv.Atoi.
        "canary-weight" | "canary-weight-total" => value.parse::<i64>().is_ok(),
        "canary-by-header" | "canary-by-cookie" => header_chars(value),
        "canary-by-header-pattern" => regex::Regex::new(value).is_ok(),
        _ => true,
    }
}

/// What the cluster's validating webhooks say of `obj`, written as `rt`.
pub(crate) fn admit(rt: &Rt, obj: &Value) -> ApiResult<()> {
    if rt.group() != "networking.k8s.io" || rt.plural() != "ingresses" {
        return Ok(());
    }
    let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    else {
        return Ok(());
    };
    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(NGINX) else {
            continue;
        };
        let text = value.as_str().unwrap_or_default();
        if !nginx_value_ok(name, text) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "admission webhook \"{NGINX_WEBHOOK}\" denied the request: annotation {key} contains invalid value {text}"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_annotations_are_checked_as_ingress_nginx_checks_them() {
        for (name, good, bad) in [
            ("canary", "true", "yes"),
            ("canary-weight", "30", "30%"),
            ("canary-weight-total", "1000", "x"),
            ("canary-by-header", "x-canary", "x canary"),
            ("canary-by-cookie", "canary_v2", ""),
            ("canary-by-header-pattern", "^insider-.*$", "(unclosed"),
        ] {
            assert!(nginx_value_ok(name, good), "{name}={good}");
            assert!(!nginx_value_ok(name, bad), "{name}={bad}");
        }
        assert!(nginx_value_ok("rewrite-target", "/$1"));
    }
}
