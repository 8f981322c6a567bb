//! Session affinity (`analysis.sessionAffinity`), as Flagger's istio and gatewayapi routers do
//! it: while the canary gets traffic, responses from the canary carry a `Set-Cookie` with a
//! random value, and a rule in front of the weighted one sends requests carrying that cookie to
//! the canary; with `primaryCookieName`, responses from the primary carry a cookie of their own
//! (living one analysis interval) that a second rule keeps on the primary. Once the canary's
//! weight is back to 0 (promotion or rollback), the rule in front matches the last canary cookie
//! and expires it (`Max-Age=-1`).
//!
//! Flagger keeps the cookies in the Canary's status; aviary keeps them where the routing object
//! says them: each `set_routes` reads the `Set-Cookie` values back from the object it last wrote
//! ([`Cookies::after`]), so a re-run or a resumed rollout keeps the cookie users already hold.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use aviary_core::spec::SessionAffinity;

/// The request header the sticky rules match.
pub(crate) const COOKIE: &str = "Cookie";
/// The response header the weighted rule adds.
pub(crate) const SET_COOKIE: &str = "Set-Cookie";

/// What a router needs of `analysis.sessionAffinity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Affinity {
    pub cookie_name: String,
    pub primary_cookie_name: Option<String>,
    /// Seconds the canary cookie lives.
    pub max_age: u32,
    /// Seconds the primary cookie lives: the analysis interval.
    pub interval: u64,
    /// The cookie's attributes after `Max-Age`, each as `; Name[=value]`.
    attributes: String,
}

impl Affinity {
    pub fn new(sa: &SessionAffinity, interval: std::time::Duration) -> Affinity {
        let mut attributes = String::new();
        if let Some(d) = sa.domain.as_deref().filter(|d| !d.is_empty()) {
            attributes.push_str(&format!("; Domain={d}"));
        }
        if sa.http_only {
            attributes.push_str("; HttpOnly");
        }
        if sa.partitioned {
            attributes.push_str("; Partitioned");
        }
        if let Some(p) = sa.path.as_deref().filter(|p| !p.is_empty()) {
            attributes.push_str(&format!("; Path={p}"));
        }
        if let Some(s) = sa.same_site.as_deref().filter(|s| !s.is_empty()) {
            attributes.push_str(&format!("; SameSite={s}"));
        }
        if sa.secure {
            attributes.push_str("; Secure");
        }
        Affinity {
            cookie_name: sa.cookie_name.clone(),
            primary_cookie_name: sa.primary_cookie_name.clone().filter(|n| !n.is_empty()),
            max_age: sa.max_age,
            interval: interval.as_secs(),
            attributes,
        }
    }

    /// The `Set-Cookie` value for `cookie` (`name=value`) living `max_age` seconds.
    pub fn set_cookie(&self, cookie: &str, max_age: i64) -> String {
        format!("{cookie}; Max-Age={max_age}{}", self.attributes)
    }

    /// Whether a header match value is one of the sticky rules' cookie matches.
    pub fn is_cookie_match(&self, name: &str, value: &str) -> bool {
        name.eq_ignore_ascii_case(COOKIE)
            && (value.contains(&self.cookie_name)
                || self
                    .primary_cookie_name
                    .as_deref()
                    .is_some_and(|p| value.contains(p)))
    }
}

/// The regular expression that matches a `Cookie` header carrying `cookie` (`name=value`), as
/// Flagger writes it.
pub(crate) fn cookie_regex(cookie: &str) -> String {
    let (name, value) = cookie.split_once('=').unwrap_or((cookie, ""));
    format!(".*{name}.*{value}.*")
}

/// The cookies one `set_routes` writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cookies {
    /// `name=value` of the canary cookie, while the canary gets traffic.
    pub canary: Option<String>,
    /// `name=value` of the primary cookie, while the canary gets traffic.
    pub primary: Option<String>,
    /// `name=value` of the last run's canary cookie, expired once the canary has no traffic.
    pub previous: Option<String>,
}

impl Cookies {
    /// The cookies to write for a canary weight of `canary_weight`, given the object written
    /// last (`None` when there is none): the cookies it sets are kept, a missing one is drawn.
    pub fn after(affinity: &Affinity, existing: Option<&Value>, canary_weight: u32) -> Cookies {
        let mut set = Vec::new();
        if let Some(v) = existing {
            set_cookies(v, &mut set);
        }
        let of = |name: &str, expired: bool| {
            let prefix = format!("{name}=");
            set.iter()
                .filter(|s| s.starts_with(&prefix))
                .find(|s| s.contains("Max-Age=-1") == expired)
                .map(|s| s.split(';').next().unwrap_or_default().trim().to_string())
                .filter(|c| c.len() > prefix.len())
        };
        let current = of(&affinity.cookie_name, false);
        if canary_weight > 0 {
            Cookies {
                canary: Some(current.unwrap_or_else(|| draw(&affinity.cookie_name))),
                primary: affinity
                    .primary_cookie_name
                    .as_deref()
                    .map(|p| of(p, false).unwrap_or_else(|| draw(p))),
                previous: None,
            }
        } else {
            Cookies {
                canary: None,
                primary: None,
                previous: current.or_else(|| of(&affinity.cookie_name, true)),
            }
        }
    }
}

/// Every `Set-Cookie` value in a routing object: Gateway API's `{name: Set-Cookie, value}`
/// header entries and Istio's `Set-Cookie: value` header maps.
fn set_cookies(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if m.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(SET_COOKIE))
            {
                if let Some(s) = m.get("value").and_then(Value::as_str) {
                    out.push(s.to_string());
                }
            }
            for (k, v) in m {
                match v {
                    Value::String(s) if k.eq_ignore_ascii_case(SET_COOKIE) => out.push(s.clone()),
                    _ => set_cookies(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| set_cookies(v, out)),
        _ => {}
    }
}

/// `name=` and ten random letters, as Flagger draws its cookie values.
fn draw(name: &str) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut value = String::with_capacity(10);
    for i in 0..10u8 {
        // A fresh randomly keyed hasher per letter: std's per-process random keys.
        let mut h = RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u8(i);
        h.write(name.as_bytes());
        let n = usize::try_from(h.finish() % LETTERS.len() as u64).unwrap_or(0);
        value.push(char::from(LETTERS[n]));
    }
    format!("{name}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn affinity(primary: Option<&str>) -> Affinity {
        Affinity::new(
            &SessionAffinity {
                cookie_name: "canary-flagger-cookie".into(),
                max_age: 21600,
                primary_cookie_name: primary.map(str::to_string),
                domain: Some("example.com".into()),
                http_only: true,
                partitioned: true,
                path: Some("/app".into()),
                same_site: Some("Strict".into()),
                secure: true,
            },
            std::time::Duration::from_secs(15),
        )
    }

    #[test]
    fn the_set_cookie_value_carries_max_age_then_each_attribute() {
        let a = affinity(None);
        assert_eq!(
            a.set_cookie("canary-flagger-cookie=abcdefghij", 21600),
            "canary-flagger-cookie=abcdefghij; Max-Age=21600; Domain=example.com; HttpOnly; Partitioned; Path=/app; SameSite=Strict; Secure"
        );
        assert_eq!(cookie_regex("c=xyz"), ".*c.*xyz.*");
    }

    #[test]
    fn cookies_are_kept_from_the_object_and_drawn_when_missing() {
        let a = affinity(Some("primary-flagger-cookie"));
        let fresh = Cookies::after(&a, None, 10);
        let canary = fresh.canary.clone().unwrap_or_default();
        let value = canary.strip_prefix("canary-flagger-cookie=").unwrap_or("");
        assert!(
            value.len() == 10 && value.chars().all(|c| c.is_ascii_alphabetic()),
            "{fresh:?}"
        );
        assert!(fresh
            .primary
            .as_deref()
            .is_some_and(|p| p.starts_with("primary-flagger-cookie=")));
        // Written, then read back: the same cookies.
        let object = json!({"spec": {"rules": [{"backendRefs": [
            {"name": "p", "filters": [{"responseHeaderModifier": {"add": [
                {"name": "Set-Cookie", "value": a.set_cookie("primary-flagger-cookie=PPPPPPPPPP", 15)}]}}]},
            {"name": "c", "filters": [{"responseHeaderModifier": {"add": [
                {"name": "Set-Cookie", "value": a.set_cookie("canary-flagger-cookie=CCCCCCCCCC", 21600)}]}}]},
        ]}]}});
        let kept = Cookies::after(&a, Some(&object), 20);
        assert_eq!(
            kept,
            Cookies {
                canary: Some("canary-flagger-cookie=CCCCCCCCCC".into()),
                primary: Some("primary-flagger-cookie=PPPPPPPPPP".into()),
                previous: None,
            }
        );
        // Back to 0: the canary cookie becomes the one to expire, and stays so (Istio's map form).
        let done = Cookies::after(&a, Some(&object), 0);
        assert_eq!(
            done.previous.as_deref(),
            Some("canary-flagger-cookie=CCCCCCCCCC")
        );
        let expiring = json!({"spec": {"http": [{"headers": {"response": {"add": {
            "Set-Cookie": a.set_cookie("canary-flagger-cookie=CCCCCCCCCC", -1)}}}}]}});
        assert_eq!(Cookies::after(&a, Some(&expiring), 0), done);
        // A new run draws a new cookie.
        let next = Cookies::after(&a, Some(&expiring), 10);
        assert_ne!(next.canary, done.previous);
    }
}
