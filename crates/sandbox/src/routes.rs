//! Reads the routing objects aviary wrote to the (emulated) cluster and turns them into the
//! traffic split the sandbox's proxy applies, the way the mesh or gateway would: weights of
//! the `<svc>-primary`/`<svc>-canary` backends, and header conditions that send requests to the
//! canary (A/B testing).

use serde_json::Value;
use splitter::{HeaderMatch, Match, MatchKind};

/// The providers whose objects the sandbox can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Router {
    /// Gateway API HTTPRoute (`gatewayapi:v1`).
    #[value(name = "gatewayapi")]
    GatewayApi,
    /// Istio VirtualService.
    Istio,
    /// Plain Kubernetes: the share of ready replicas (`kubernetes:replicas`).
    #[value(name = "kubernetes:replicas")]
    Replicas,
}

impl Router {
    /// The provider name aviary is given (`--provider`).
    pub fn provider(self) -> &'static str {
        match self {
            Router::GatewayApi => "gatewayapi:v1",
            Router::Istio => "istio",
            Router::Replicas => "kubernetes:replicas",
        }
    }

    pub fn name(self) -> String {
        super::args::flag_value(self)
    }

    /// Whether the provider can route by header (A/B testing).
    pub fn matches_headers(self) -> bool {
        !matches!(self, Router::Replicas)
    }
}

/// Where the routing objects send traffic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// Whether aviary has routed this service yet (before bootstrap the target's own pods
    /// take all traffic, as the Service selecting them would).
    pub routed: bool,
    /// Share of the other requests for the canary, 0-100.
    pub canary_weight: u8,
    /// Requests matching one of these go to the canary.
    pub matches: Vec<Match>,
    /// Hosts whose every request goes to the canary: the host names of the preview object
    /// (`<name>-preview`) whose one backend is the canary, as a gateway or mesh would route them.
    pub preview_hosts: Vec<String>,
}

/// Reads `name`'s routing objects in `namespace` through `get(api_version, plural, name)`.
pub fn desired(
    router: Router,
    name: &str,
    get: impl Fn(&str, &str, &str) -> Option<Value>,
) -> Desired {
    let primary = format!("{name}-primary");
    let canary = format!("{name}-canary");
    let preview = format!("{name}-preview");
    let mut desired = desired_split(router, name, &primary, &canary, &get);
    if desired.routed {
        desired.preview_hosts = preview_hosts(router, &preview, &canary, &get);
    }
    desired
}

/// The hosts of the preview object `preview` that sends every request to `canary`.
fn preview_hosts(
    router: Router,
    preview: &str,
    canary: &str,
    get: &impl Fn(&str, &str, &str) -> Option<Value>,
) -> Vec<String> {
    let (object, hosts, rules, backends, backend_name): (_, _, _, _, fn(&Value) -> Option<&Value>) =
        match router {
            Router::GatewayApi => (
                get("gateway.networking.k8s.io/v1", "httproutes", preview),
                "/spec/hostnames",
                "/spec/rules",
                "backendRefs",
                |b| b.get("name"),
            ),
            Router::Istio => (
                get("networking.istio.io/v1", "virtualservices", preview),
                "/spec/hosts",
                "/spec/http",
                "route",
                |d| d.pointer("/destination/host"),
            ),
            Router::Replicas => return Vec::new(),
        };
    let Some(object) = object else {
        return Vec::new();
    };
    let is_canary = |n: &str| n == canary || n.starts_with(&format!("{canary}."));
    // Every backend with a weight, of every rule, is the canary.
    let only_canary = object
        .pointer(rules)
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules.iter().all(|rule| {
                rule.get(backends)
                    .and_then(Value::as_array)
                    .is_some_and(|bs| {
                        bs.iter().all(|b| {
                            b.get("weight").and_then(Value::as_u64) == Some(0)
                                || backend_name(b)
                                    .and_then(Value::as_str)
                                    .is_some_and(is_canary)
                        })
                    })
            })
        });
    if !only_canary {
        return Vec::new();
    }
    object
        .pointer(hosts)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
        .collect()
}

fn desired_split(
    router: Router,
    name: &str,
    primary: &str,
    canary: &str,
    get: &impl Fn(&str, &str, &str) -> Option<Value>,
) -> Desired {
    match router {
        Router::GatewayApi => match get("gateway.networking.k8s.io/v1", "httproutes", name) {
            Some(route) => from_rules(
                route.pointer("/spec/rules"),
                "backendRefs",
                |b| b.get("name"),
                gateway_matches,
                primary,
                canary,
            ),
            None => Desired::default(),
        },
        Router::Istio => match get("networking.istio.io/v1", "virtualservices", name) {
            Some(vs) => from_rules(
                vs.pointer("/spec/http"),
                "route",
                |d| d.pointer("/destination/host"),
                istio_matches,
                primary,
                canary,
            ),
            None => Desired::default(),
        },
        Router::Replicas => {
            let replicas = |n: &str| {
                get("apps/v1", "deployments", n)
                    .and_then(|d| d.pointer("/spec/replicas").and_then(Value::as_u64))
            };
            match replicas(primary) {
                Some(p) => {
                    let c = replicas(name).unwrap_or(0);
                    let weight = (100 * c).checked_div(p + c).unwrap_or(0);
                    Desired {
                        routed: true,
                        canary_weight: weight.min(100) as u8,
                        ..Desired::default()
                    }
                }
                None => Desired::default(),
            }
        }
    }
}

/// Rules in order: a rule with header conditions that sends traffic to the canary adds them
/// to the A/B matches; the first rule without header conditions gives the weights.
fn from_rules(
    rules: Option<&Value>,
    backends_key: &str,
    backend_name: impl Fn(&Value) -> Option<&Value>,
    header_matches: impl Fn(&Value) -> Vec<Match>,
    primary: &str,
    canary: &str,
) -> Desired {
    let mut desired = Desired {
        routed: true,
        ..Desired::default()
    };
    let Some(rules) = rules.and_then(Value::as_array) else {
        return desired;
    };
    let mut weighted = false;
    for rule in rules {
        let (mut p, mut c) = (0u64, 0u64);
        for b in rule
            .get(backends_key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A backend without a weight takes all of its rule's traffic (weight 1 of 1).
            let w = b.get("weight").and_then(Value::as_u64).unwrap_or(1);
            match backend_name(b).and_then(Value::as_str) {
                Some(n) if n == primary || n.starts_with(&format!("{primary}.")) => p += w,
                Some(n) if n == canary || n.starts_with(&format!("{canary}.")) => c += w,
                _ => {}
            }
        }
        let share = (100 * c).checked_div(p + c).unwrap_or(0);
        let matches = header_matches(rule);
        if matches.is_empty() {
            if !weighted {
                desired.canary_weight = share.min(100) as u8;
                weighted = true;
            }
        } else if share > 0 {
            desired.matches.extend(matches);
        }
    }
    desired
}

/// HTTPRoute `matches[].headers[]` (`type` Exact by default, or RegularExpression).
fn gateway_matches(rule: &Value) -> Vec<Match> {
    let mut out = Vec::new();
    for m in rule
        .get("matches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let headers: Vec<HeaderMatch> = m
            .get("headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                let kind = match h.get("type").and_then(Value::as_str).unwrap_or("Exact") {
                    "RegularExpression" => MatchKind::Regex,
                    _ => MatchKind::Exact,
                };
                Some(HeaderMatch {
                    name: h.get("name")?.as_str()?.to_ascii_lowercase(),
                    kind,
                    value: h.get("value")?.as_str()?.to_string(),
                })
            })
            .collect();
        if !headers.is_empty() {
            out.push(Match { headers });
        }
    }
    out
}

/// VirtualService `http[].match[].headers` (`exact`, `prefix`, `regex`).
fn istio_matches(rule: &Value) -> Vec<Match> {
    let mut out = Vec::new();
    for m in rule
        .get("match")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let headers: Vec<HeaderMatch> = m
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, sm)| {
                let (kind, value) = [
                    ("exact", MatchKind::Exact),
                    ("prefix", MatchKind::Prefix),
                    ("regex", MatchKind::Regex),
                ]
                .into_iter()
                .find_map(|(k, kind)| Some((kind, sm.get(k)?.as_str()?.to_string())))?;
                Some(HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    kind,
                    value,
                })
            })
            .collect();
        if !headers.is_empty() {
            out.push(Match { headers });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(
        api: &'static str,
        plural: &'static str,
        obj: Value,
    ) -> impl Fn(&str, &str, &str) -> Option<Value> {
        move |a, p, _| (a == api && p == plural).then(|| obj.clone())
    }

    #[test]
    fn httproute_weights_and_ab_rules() {
        let route = json!({"spec": {"rules": [
            {"matches": [{"headers": [{"name": "X-Canary", "value": "insider"}]}],
             "backendRefs": [{"name": "podinfo-primary", "weight": 0}, {"name": "podinfo-canary", "weight": 100}]},
            {"backendRefs": [{"name": "podinfo-primary", "weight": 70}, {"name": "podinfo-canary", "weight": 30}]}
        ]}});
        let d = desired(
            Router::GatewayApi,
            "podinfo",
            one("gateway.networking.k8s.io/v1", "httproutes", route),
        );
        assert!(d.routed);
        assert_eq!(d.canary_weight, 30);
        assert_eq!(d.matches.len(), 1);
        assert_eq!(d.matches[0].headers[0].name, "x-canary");
        assert_eq!(d.matches[0].headers[0].kind, MatchKind::Exact);
        assert_eq!(
            desired(Router::GatewayApi, "podinfo", |_, _, _| None),
            Desired::default()
        );
    }

    #[test]
    fn virtualservice_weights_and_regex_cookie() {
        let vs = json!({"spec": {"http": [
            {"match": [{"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}],
             "route": [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                       {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
            {"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100},
                       {"destination": {"host": "podinfo-canary"}, "weight": 0}]}
        ]}});
        let d = desired(
            Router::Istio,
            "podinfo",
            one("networking.istio.io/v1", "virtualservices", vs),
        );
        assert_eq!(d.canary_weight, 0);
        assert_eq!(d.matches[0].headers[0].kind, MatchKind::Regex);
        assert_eq!(d.matches[0].headers[0].name, "cookie");
    }

    #[test]
    fn preview_hosts_come_from_a_preview_object_that_only_reaches_the_canary() {
        let main = json!({"spec": {"rules": [{"backendRefs": [
            {"name": "podinfo-primary", "weight": 90}, {"name": "podinfo-canary", "weight": 10}]}]}});
        let preview = |backends: Value| json!({"spec": {"hostnames": ["Canary.Example.com"], "rules": [{"backendRefs": backends}]}});
        let get = |p: Value| {
            let main = main.clone();
            move |_: &str, _: &str, n: &str| match n {
                "podinfo" => Some(main.clone()),
                "podinfo-preview" => Some(p.clone()),
                _ => None,
            }
        };
        let d = desired(
            Router::GatewayApi,
            "podinfo",
            get(preview(
                json!([{"name": "podinfo-canary", "port": 9898, "weight": 100}]),
            )),
        );
        assert_eq!(d.canary_weight, 10);
        assert_eq!(d.preview_hosts, ["canary.example.com"]);
        // A preview route that also reaches the primary is not a preview: its host is split.
        let d = desired(
            Router::GatewayApi,
            "podinfo",
            get(preview(
                json!([{"name": "podinfo-canary"}, {"name": "podinfo-primary", "weight": 1}]),
            )),
        );
        assert!(d.preview_hosts.is_empty());
        let vs = json!({"spec": {"hosts": ["canary.example.com"], "http": [{"route": [
            {"destination": {"host": "podinfo-canary", "port": {"number": 9898}}, "weight": 100}]}]}});
        let get = move |_: &str, _: &str, n: &str| match n {
            "podinfo" => Some(
                json!({"spec": {"http": [{"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]}]}}),
            ),
            "podinfo-preview" => Some(vs.clone()),
            _ => None,
        };
        assert_eq!(
            desired(Router::Istio, "podinfo", get).preview_hosts,
            ["canary.example.com"]
        );
    }

    #[test]
    fn replica_ratio() {
        let get = |_: &str, _: &str, n: &str| match n {
            "podinfo-primary" => Some(json!({"spec": {"replicas": 3}})),
            "podinfo" => Some(json!({"spec": {"replicas": 1}})),
            _ => None,
        };
        let d = desired(Router::Replicas, "podinfo", get);
        assert_eq!(d.canary_weight, 25);
        assert!(d.routed);
    }
}
