//! `analysis.alerts`: the alerts sent through an AlertProvider.

use super::canary::decode_ref;
use super::diagnostics::Cx;
use super::fields::Field;
use crate::spec::types::Alert;

const SEVERITIES: [&str; 3] = ["info", "warn", "error"];

pub(super) fn decode_alert(cx: &mut Cx, item: &Field) -> Option<Alert> {
    let mut r = item.map(cx)?;
    let name = r.req_string(cx, "name");
    let severity = match r.field("severity") {
        // Flagger's CRD also allows "", which Flagger reads as info.
        Some(f) if f.node.as_str() == Some("") => Some("info".to_string()),
        Some(f) => f.one_of(cx, "severity", &SEVERITIES),
        None => Some("info".to_string()),
    };
    let provider_ref = r.req(cx, "providerRef", |f, cx| {
        let pr = f.map(cx)?;
        decode_ref(cx, pr, true, None)
    });
    r.finish(cx);
    Some(Alert {
        name: name?,
        severity: severity?,
        provider_ref: provider_ref?,
    })
}
