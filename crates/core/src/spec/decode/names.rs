//! Checks of names: Kubernetes object names, the names aviary derives from them (the `-primary`
//! and `-canary` objects, the state ConfigMap and Lease), and the names of list items.

use std::collections::HashMap;

use super::diagnostics::{Cx, Hint};
use crate::spec::yaml::quote;

/// Kubernetes' limit on a Service name (an RFC 1035 label) and on a name that must be one.
const DNS_LABEL_MAX: usize = 63;
/// Kubernetes' limit on most object names (an RFC 1123 subdomain).
const DNS_SUBDOMAIN_MAX: usize = 253;

pub(super) fn is_dns_label(s: &str) -> bool {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    !s.is_empty() && s.len() <= 63 && ok_chars && alnum(s.bytes().next()) && alnum(s.bytes().last())
}

pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let alnum =
                |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && alnum(label.bytes().next())
                && alnum(label.bytes().last())
        })
}

/// The state ConfigMap and the Lease aviary keeps for a Canary are named `<name>-aviary`, which
/// must still be a Kubernetes name.
pub(super) fn check_state_name(cx: &mut Cx, name: &str, line: usize) {
    let state = crate::spec::state_object_name(name);
    if state.len() > DNS_SUBDOMAIN_MAX {
        cx.error(
            line,
            "metadata.name",
            format!(
                "the Canary's name is {} characters, so the ConfigMap and Lease aviary keeps for it ({}...-aviary) would be {}, over Kubernetes' limit of {DNS_SUBDOMAIN_MAX}",
                name.len(),
                &name[..20.min(name.len())],
                state.len()
            ),
        )
        .hint(format!(
            "use a name of at most {} characters",
            DNS_SUBDOMAIN_MAX - "-aviary".len()
        ));
    }
}

/// Checks that `<base>-primary` and `<base>-canary`, the Services aviary creates, are valid
/// Service names (RFC 1035 labels of at most 63 characters). `what` says where `base` comes
/// from, for the message.
pub(super) fn check_service_base(cx: &mut Cx, base: &str, line: usize, path: &str, what: &str) {
    let (what, alt) = match what.split_once(" | ") {
        Some((w, a)) => (w, a),
        None => (what, ""),
    };
    let longest = format!("{base}-primary");
    let starts_with_letter = base.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let label_chars = base
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let max = DNS_LABEL_MAX - "-primary".len();
    if longest.len() > DNS_LABEL_MAX {
        cx.error(
            line,
            path,
            format!(
                "{} is {} characters, so the primary's Service {} would be {}, over Kubernetes' limit of {DNS_LABEL_MAX} for a Service name",
                quote(base),
                base.len(),
                quote(&longest),
                longest.len()
            ),
        )
        .hint(format!(
            "shorten {what} to at most {max} characters{alt} (aviary names the Services <name>, <name>-primary and <name>-canary)"
        ));
    } else if !starts_with_letter || !label_chars {
        cx.error(
            line,
            path,
            format!(
                "{} cannot name a Service: Service names are lowercase letters, digits and '-', starting with a letter",
                quote(base)
            ),
        )
        .hint(format!(
            "use such a name for {what}{alt} (aviary names the Services <name>, <name>-primary and <name>-canary)"
        ));
    }
}

/// Checks that `<base>-primary` (a Deployment, an autoscaler) or `<base>-canary` (an Ingress) is
/// still a valid object name.
pub(super) fn check_derived_name(
    cx: &mut Cx,
    base: &str,
    suffix: &str,
    line: usize,
    path: &str,
    what: &str,
) {
    let derived = format!("{base}{suffix}");
    if derived.len() > DNS_SUBDOMAIN_MAX {
        cx.error(
            line,
            path,
            format!(
                "{what} is {} characters, so the {} aviary creates from it would be {}, over Kubernetes' limit of {DNS_SUBDOMAIN_MAX}",
                base.len(),
                quote(&format!("<name>{suffix}")),
                derived.len()
            ),
        )
        .hint(format!(
            "use a name of at most {} characters",
            DNS_SUBDOMAIN_MAX - suffix.len()
        ));
    }
}

/// Checks a list item's `name` for uniqueness; returns whether it is the first of its name.
pub(super) fn unique_name(
    cx: &mut Cx,
    seen: &mut HashMap<String, usize>,
    what: &str,
    name: &str,
    line: usize,
    path: &str,
) -> bool {
    if let Some(first) = seen.get(name) {
        cx.error(
            line,
            path,
            format!(
                "duplicate {what} name {} (first at line {first})",
                quote(name)
            ),
        )
        .hint(format!("give each {what} a different name"));
        return false;
    }
    seen.insert(name.to_string(), line);
    true
}
