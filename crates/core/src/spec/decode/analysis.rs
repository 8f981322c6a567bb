//! `spec.analysis`: its interval, weights and thresholds, the lists it holds, and the checks of
//! its rollout strategy against the provider.

use std::time::Duration;

use super::alerts::decode_alert;
use super::diagnostics::{join, Cx, Hint};
use super::fields::{to_u32, Field, Reader};
use super::judge::decode_judge;
use super::matches::decode_matches;
use super::metrics::decode_metrics;
use super::webhooks::decode_webhooks;
use super::{MAX_INTERVAL, MAX_TICK_COUNT};
use crate::spec::duration::format_human;
use crate::spec::types::{Analysis, ApiVersion, Provider, SessionAffinity};
use crate::spec::yaml::quote;

/// Which strategy fields were written, so that a field with an error does not also count as absent.
pub(super) struct Written {
    /// stepWeight, stepWeights or iterations had an error (so their zero values mean nothing).
    strategy_errors: bool,
    max_weight: Option<usize>,
    step_weights_line: usize,
    step_weight_promotion: Option<usize>,
    mirror: Option<usize>,
    match_line: Option<usize>,
    /// Flagger's CRD requires `interval`, `threshold` and exactly one of `iterations`,
    /// `stepWeight` and `stepWeights`: which of them are written.
    interval: bool,
    threshold: bool,
    strategy_keys: Vec<&'static str>,
}

pub(super) fn decode_analysis(
    cx: &mut Cx,
    version: ApiVersion,
    mut r: Reader,
) -> (Analysis, Written) {
    let defaults = Analysis::default();
    let line_if = |r: &Reader, key: &str| r.present(key).then(|| r.key_line(key));
    let mut written = Written {
        strategy_errors: false,
        max_weight: line_if(&r, "maxWeight"),
        step_weights_line: r.key_line("stepWeights"),
        step_weight_promotion: line_if(&r, "stepWeightPromotion"),
        mirror: line_if(&r, "mirror"),
        match_line: line_if(&r, "match"),
        interval: r.present("interval"),
        threshold: r.present("threshold"),
        strategy_keys: ["iterations", "stepWeight", "stepWeights"]
            .into_iter()
            .filter(|k| r.present(k))
            .collect(),
    };

    let mut interval = defaults.interval;
    if let Some(f) = r.field("interval") {
        if let Some((d, text)) = f.duration(cx) {
            interval = d;
            match version {
                ApiVersion::FlaggerV1beta1 if d < Duration::from_secs(10) => {
                    cx.warn(
                        f.line(),
                        &f.path,
                        format!("interval {text} is below 10s: Flagger raises intervals below 10s to 10s, so aviary runs every 10s"),
                    )
                    .hint("use apiVersion aviary.dev/v1alpha1 for shorter intervals");
                    interval = Duration::from_secs(10);
                }
                ApiVersion::AviaryV1alpha1 if d < Duration::from_secs(1) => {
                    f.error(
                        cx,
                        format!("expected an interval of at least 1s, got {}", quote(&text)),
                    )
                    .hint("the shortest analysis interval is 1s");
                }
                _ if d > MAX_INTERVAL => {
                    f.error(
                        cx,
                        format!(
                            "expected an interval of at most {}, got {}",
                            format_human(MAX_INTERVAL),
                            quote(&text)
                        ),
                    )
                    .hint("the interval is the time between two checks of the canary, e.g. 1m; for a longer analysis, raise iterations or lower stepWeight");
                }
                _ => {}
            }
        }
    }
    let threshold = r
        .int(cx, "threshold", 0, Some(MAX_TICK_COUNT))
        .map_or(1, |t| to_u32(t).max(1));
    // 0 is Flagger's zero value: not set (100).
    let max_weight = r.int(cx, "maxWeight", 0, Some(100)).map_or(0, to_u32);
    let errors_before = cx.errors.len();
    let step_weight = r.int(cx, "stepWeight", 1, Some(100)).map_or(0, to_u32);
    let mut step_weights: Vec<u32> = Vec::new();
    let mut previous: Option<(usize, i64)> = None;
    let mut capped = false;
    for (i, item) in r.list(cx, "stepWeights").iter().enumerate() {
        let Some(w) = item.int(cx, 1, None) else {
            continue;
        };
        if let Some((pi, pw)) = previous {
            if w <= pw {
                item.error(
                    cx,
                    format!("stepWeights must be strictly increasing, but entry {i} ({w}) is not above entry {pi} ({pw})"),
                )
                .hint("list the canary weights in increasing order, such as [1, 5, 10, 25, 50]");
            }
        }
        previous = Some((i, w));
        if capped {
            continue;
        }
        if w > 100 {
            // Flagger caps the canary's weight at 100: [1, 2, 10, 200] runs 1, 2, 10, 100.
            item.warn(
                cx,
                format!("stepWeights entry {i} ({w}) is above 100: Flagger caps it at 100, and so does aviary"),
            )
            .hint("write 100 for the last step");
            capped = true;
        }
        step_weights.push(to_u32(w.min(100)));
    }
    // 0 is Flagger's zero value: not set (promote in one step).
    let step_weight_promotion = r
        .int(cx, "stepWeightPromotion", 0, Some(100))
        .map_or(0, to_u32);
    let iterations = r
        .int(cx, "iterations", 0, Some(MAX_TICK_COUNT))
        .map_or(0, to_u32);
    written.strategy_errors = cx.errors.len() > errors_before;
    let mirror = r.flag(cx, "mirror");
    let mirror_weight = r.int(cx, "mirrorWeight", 0, Some(100)).map(to_u32);
    let primary_ready_threshold = r
        .int(cx, "primaryReadyThreshold", 0, Some(100))
        .map_or(defaults.primary_ready_threshold, to_u32);
    let canary_ready_threshold = r
        .int(cx, "canaryReadyThreshold", 0, Some(100))
        .map_or(defaults.canary_ready_threshold, to_u32);
    let alerts = r
        .list(cx, "alerts")
        .iter()
        .filter_map(|item| decode_alert(cx, item))
        .collect();
    let metric_items = r.list(cx, "metrics");
    let metrics = decode_metrics(cx, &metric_items);
    let hook_items = r.list(cx, "webhooks");
    let webhooks = decode_webhooks(cx, &hook_items);
    let match_items = r.list(cx, "match");
    let matches = decode_matches(cx, match_items);
    let session_affinity = r.map(cx, "sessionAffinity").and_then(|mut sa| {
        let cookie_name = sa.req_string(cx, "cookieName");
        // Flagger reads 0 as "not set": a day.
        let max_age =
            sa.int(cx, "maxAge", 0, None)
                .map_or(86_400, |v| if v == 0 { 86_400 } else { to_u32(v) });
        let primary_cookie_name = sa.string(cx, "primaryCookieName");
        let domain = sa.string(cx, "domain").filter(|d| !d.is_empty());
        let http_only = sa.flag(cx, "httpOnly");
        let partitioned = sa.flag(cx, "partitioned");
        let path = sa.string(cx, "path").filter(|p| !p.is_empty());
        let same_site = sa
            .field("sameSite")
            .and_then(|f| f.one_of(cx, "sameSite", &["Strict", "Lax", "None"]));
        let secure = sa.flag(cx, "secure");
        sa.finish(cx);
        Some(SessionAffinity {
            cookie_name: cookie_name?,
            max_age,
            primary_cookie_name,
            domain,
            http_only,
            partitioned,
            path,
            same_site,
            secure,
        })
    });
    // The statistical judge is an aviary addition; under flagger.app it stays an unknown field.
    let judge = match version {
        ApiVersion::AviaryV1alpha1 => r.map(cx, "judge").map(|j| decode_judge(cx, j)),
        ApiVersion::FlaggerV1beta1 => None,
    };
    r.finish(cx);
    let analysis = Analysis {
        interval,
        threshold,
        max_weight,
        step_weight,
        step_weights,
        step_weight_promotion,
        iterations,
        mirror,
        mirror_weight,
        primary_ready_threshold,
        canary_ready_threshold,
        alerts,
        metrics,
        webhooks,
        r#match: matches,
        session_affinity,
        judge,
    };
    (analysis, written)
}

/// The checks that look at several analysis fields (and the provider) together.
pub(super) fn check_strategy(
    cx: &mut Cx,
    a: &Analysis,
    written: &Written,
    provider: Option<&Provider>,
    field: &Field,
) {
    let kubernetes = provider == Some(&Provider::Kubernetes);
    let path = &field.path;
    if provider == Some(&Provider::KubernetesReplicas) {
        // A replica split can only express weights: no request matching, no mirroring.
        for (set, name, why) in [
            (
                !a.r#match.is_empty(),
                "match",
                "A/B testing needs a router that can match requests",
            ),
            (
                a.mirror,
                "mirror",
                "mirroring needs a proxy that copies requests",
            ),
            (
                a.iterations > 0,
                "iterations",
                "replica ratio shifts traffic by weights only",
            ),
        ] {
            if set {
                cx.error(
                    field.key_line,
                    &join(path, name),
                    format!("{name} is not supported by provider kubernetes:replicas: {why}"),
                )
                .hint("use stepWeight and maxWeight with kubernetes:replicas, or a mesh or ingress provider (istio, gloo, nginx, gatewayapi)");
            }
        }
    }
    if !cx.strict {
        check_flagger_schema(cx, written, field);
    }
    let no_strategy = a.step_weight == 0 && a.step_weights.is_empty() && a.iterations == 0;
    if no_strategy && !written.strategy_errors && !kubernetes {
        cx.error(field.key_line, path, "no rollout strategy")
            .hint("set stepWeight and maxWeight for a canary, iterations and match for A/B testing, or iterations for blue/green");
    }
    if a.step_weight > 0 && !a.step_weights.is_empty() {
        let last = a.step_weights.last().copied().unwrap_or(0);
        cx.warn(
            written.step_weights_line,
            &join(path, "stepWeights"),
            "stepWeights is ignored because stepWeight is set (Flagger's scheduler gives stepWeight precedence, and Flagger's CRD refuses the two together)",
        )
        .hint(format!("remove one of the two; note that Flagger still stops at the last stepWeights entry ({last})"));
    }
    check_overshoot(cx, a, written, provider, field);
    if let (Some(line), true) = (
        written.max_weight,
        a.max_weight > 0 && !a.step_weights.is_empty(),
    ) {
        let last = a.step_weights.last().copied().unwrap_or(0);
        cx.warn(
            line,
            &join(path, "maxWeight"),
            format!("maxWeight is ignored because stepWeights is set (its last entry, {last}, is the maximum weight)"),
        )
        .hint("remove maxWeight");
    }
    if !a.r#match.is_empty() {
        let line = written.match_line.unwrap_or(field.key_line);
        let match_path = join(path, "match");
        if kubernetes {
            // Flagger accepts it, drops the match with a warning event ("A/B testing is not
            // supported when using the kubernetes provider") and runs blue/green: so does aviary.
            cx.warn(
                line,
                &match_path,
                "match is dropped: the kubernetes provider cannot route by request, so (as in Flagger) this canary runs blue/green, not A/B testing",
            )
            .hint("remove match, or use a provider that routes by header, such as istio, nginx or gatewayapi");
        } else if a.iterations == 0 && !written.strategy_errors {
            cx.warn(
                line,
                &match_path,
                "match is only used by A/B testing, which needs iterations",
            )
            .hint("set iterations (the number of checks to run) for A/B testing, or remove match");
        }
        if a.mirror {
            if let Some(mline) = written.mirror {
                cx.warn(
                    mline,
                    &join(path, "mirror"),
                    "mirror is ignored in A/B testing (match is set); Flagger mirrors traffic only in blue/green",
                );
            }
        }
    }
    if kubernetes {
        if let Some(line) = written.step_weight_promotion {
            cx.warn(
                line,
                &join(path, "stepWeightPromotion"),
                "stepWeightPromotion is ignored by the kubernetes provider, which does not shift traffic gradually",
            );
        }
    }
}

/// The start of the warning for an analysis that Flagger's CRD refuses (the tests leave it out).
pub(super) const FLAGGER_REFUSES: &str = "Flagger's CRD refuses this analysis";

/// What Flagger's CRD refuses and aviary reads anyway: `interval`, `threshold` and exactly one of
/// `iterations`, `stepWeight` and `stepWeights` are required. One warning saying what is wrong
/// and what Flagger would do.
fn check_flagger_schema(cx: &mut Cx, written: &Written, field: &Field) {
    let mut wrong = Vec::new();
    let mut fixes = Vec::new();
    for (present, key, default) in [
        (written.interval, "interval", "1m"),
        (written.threshold, "threshold", "1"),
    ] {
        if !present {
            wrong.push(format!("no {key} (aviary uses {default})"));
            fixes.push(format!("{key}: {default}"));
        }
    }
    match written.strategy_keys.as_slice() {
        [_] => {}
        [] => {
            wrong.push("none of iterations, stepWeight and stepWeights".to_string());
            fixes.push("stepWeight (canary) or iterations (blue/green, A/B testing)".to_string());
        }
        keys => {
            wrong.push(format!(
                "{} together (it takes exactly one)",
                keys.join(" and ")
            ));
            fixes.push(format!("only one of {}", keys.join(", ")));
        }
    }
    if wrong.is_empty() {
        return;
    }
    cx.warn(
        field.key_line,
        &field.path,
        format!(
            "{FLAGGER_REFUSES}: {}; Flagger's API server would not store this Canary",
            wrong.join(", ")
        ),
    )
    .hint(format!("for Flagger, write {}", fixes.join(" and ")));
}

/// Flagger adds stepWeight until the weight reaches maxWeight, so it can go past it (stepWeight
/// 20, maxWeight 50: 20, 40, 60); aviary stops at maxWeight (20, 40, 50).
fn check_overshoot(
    cx: &mut Cx,
    a: &Analysis,
    written: &Written,
    provider: Option<&Provider>,
    field: &Field,
) {
    let shifting = !matches!(provider, Some(Provider::Kubernetes));
    if !shifting || a.iterations > 0 || a.step_weight == 0 || !a.step_weights.is_empty() {
        return;
    }
    let (step, max) = (a.step_weight, a.max_weight());
    if max >= 100 || max % step == 0 {
        return;
    }
    let steps = max.div_ceil(step);
    let flagger_last = (steps * step).min(100);
    let mut flagger: Vec<String> = (1..steps).map(|k| (k * step).to_string()).collect();
    flagger.push(flagger_last.to_string());
    let mut aviary: Vec<String> = (1..steps).map(|k| (k * step).to_string()).collect();
    aviary.push(max.to_string());
    let line = written.max_weight.unwrap_or(field.key_line);
    cx.warn(
        line,
        &join(&field.path, "maxWeight"),
        format!(
            "maxWeight {max} is not a multiple of stepWeight {step}: Flagger goes past it ({}), aviary stops at it ({})",
            flagger.join(", "),
            aviary.join(", ")
        ),
    )
    .hint(format!(
        "make maxWeight a multiple of stepWeight, e.g. maxWeight: {}, for the same steps in both",
        (max / step).max(1) * step
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::decode::test_support::*;
    use crate::spec::types::*;

    #[test]
    fn flagger_zero_values_mean_unset() {
        // maxWeight: 0 and stepWeightPromotion: 0 are Flagger's zero values: not set.
        let docs = decode_lenient(&canary(
            FLAGGER_API,
            "    stepWeight: 10\n    maxWeight: 0\n    stepWeightPromotion: 0\n",
        ));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!((a.max_weight, a.step_weight_promotion), (0, 0));
        assert_eq!(a.max_weight(), 100);
        assert_eq!(
            errors(&canary(FLAGGER_API, "    stepWeight: 10\n    stepWeightPromotion: -1\n")),
            vec!["canary.yaml:13: spec.analysis.stepWeightPromotion: expected an integer 0-100, got -1\n  help: stepWeightPromotion is the percentage moved back to the primary at each promotion step, e.g. stepWeightPromotion: 25"]
        );
    }

    #[test]
    fn step_weights_above_100_are_capped() {
        let text = canary(FLAGGER_API, "    stepWeights: [1, 2, 10, 200]\n");
        let docs = decode_lenient(&text);
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.step_weights, vec![1, 2, 10, 100]);
        assert_eq!(a.max_weight(), 100);
        assert_eq!(
            warnings(&text),
            vec!["canary.yaml:12: warning: spec.analysis.stepWeights[3]: stepWeights entry 3 (200) is above 100: Flagger caps it at 100, and so does aviary\n  help: write 100 for the last step"]
        );
        // Entries after the first capped one are never reached.
        let docs = decode_lenient(&canary(FLAGGER_API, "    stepWeights: [50, 150, 300]\n"));
        assert_eq!(
            docs.canaries[0].analysis.as_ref().unwrap().step_weights,
            vec![50, 100]
        );
        let plan = crate::plan::compute(&crate::engine::Config::from_canary(
            &decode_lenient(&text).canaries[0],
            &Provider::Istio,
        ));
        let json = serde_json::to_string(&plan.unwrap()).unwrap();
        assert!(json.contains("\"weights\":[1,2,10,100]"), "{json}");
    }

    #[test]
    fn what_flaggers_crd_refuses_is_a_warning() {
        let all = |text: &str| -> Vec<String> {
            decode(text)
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            all(&canary(FLAGGER_API, "    stepWeight: 10\n    stepWeights: [5, 50]\n")),
            vec![
                "canary.yaml:11: warning: spec.analysis: Flagger's CRD refuses this analysis: no interval (aviary uses 1m), no threshold (aviary uses 1), stepWeight and stepWeights together (it takes exactly one); Flagger's API server would not store this Canary\n  help: for Flagger, write interval: 1m and threshold: 1 and only one of stepWeight, stepWeights",
                "canary.yaml:13: warning: spec.analysis.stepWeights: stepWeights is ignored because stepWeight is set (Flagger's scheduler gives stepWeight precedence, and Flagger's CRD refuses the two together)\n  help: remove one of the two; note that Flagger still stops at the last stepWeights entry (50)",
            ]
        );
        // A complete analysis: no word.
        assert!(all(&canary(
            FLAGGER_API,
            "    interval: 1m\n    threshold: 5\n    stepWeight: 10\n    maxWeight: 50\n"
        ))
        .is_empty());
        // aviary.dev is not Flagger's: nothing to say.
        assert!(all(&canary(AVIARY_API, "    stepWeight: 10\n")).is_empty());
    }

    #[test]
    fn overshooting_max_weight_is_explained() {
        let w = warnings(&canary(
            FLAGGER_API,
            "    stepWeight: 20\n    maxWeight: 50\n",
        ));
        assert_eq!(
            w,
            vec!["canary.yaml:13: warning: spec.analysis.maxWeight: maxWeight 50 is not a multiple of stepWeight 20: Flagger goes past it (20, 40, 60), aviary stops at it (20, 40, 50)\n  help: make maxWeight a multiple of stepWeight, e.g. maxWeight: 40, for the same steps in both"]
        );
        assert!(warnings(&canary(
            FLAGGER_API,
            "    stepWeight: 20\n    maxWeight: 60\n"
        ))
        .is_empty());
        assert!(
            warnings(&canary(FLAGGER_API, "    stepWeight: 30\n")).is_empty(),
            "100 caps both"
        );
    }

    #[test]
    fn session_affinity_cookie_attributes() {
        let text = canary(
            FLAGGER_API,
            "    stepWeight: 10\n    sessionAffinity:\n      cookieName: flagger-cookie\n      domain: example.com\n      httpOnly: true\n      partitioned: true\n      path: /app\n      sameSite: Lax\n      secure: true\n",
        )
        .replace("spec:\n", "spec:\n  provider: gatewayapi:v1\n");
        let docs = decode_lenient(&text);
        let sa = docs.canaries[0]
            .analysis
            .as_ref()
            .unwrap()
            .session_affinity
            .clone()
            .unwrap();
        assert_eq!(sa.domain.as_deref(), Some("example.com"));
        assert_eq!(sa.path.as_deref(), Some("/app"));
        assert_eq!(sa.same_site.as_deref(), Some("Lax"));
        assert!(sa.http_only && sa.partitioned && sa.secure);
        // aviary's gatewayapi and istio routers set the cookie with its attributes, as Flagger's do.
        let w = warnings(&text);
        assert!(w.is_empty(), "{w:?}");
        assert!(warnings(&text.replace("gatewayapi:v1", "istio")).is_empty());
        // The CRD's enum.
        assert_eq!(
            errors(&text.replace("sameSite: Lax", "sameSite: lax")),
            vec!["canary.yaml:20: spec.analysis.sessionAffinity.sameSite: unknown sameSite \"lax\"\n  help: did you mean \"Lax\"?"]
        );
        // nginx: Flagger ignores sessionAffinity too, so there is nothing to say.
        assert!(warnings(&text.replace("gatewayapi:v1", "nginx")).is_empty());
    }

    #[test]
    fn step_weight_ten() {
        let text = canary(FLAGGER_API, "    maxWeight: 50\n    stepWeight: ten\n");
        assert_eq!(
            errors(&text),
            vec![
                "canary.yaml:13: spec.analysis.stepWeight: expected an integer 1-100, got \"ten\"\n  help: stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10"
            ]
        );
        let text = canary(FLAGGER_API, "    stepWeight: \"10\"\n");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:12: spec.analysis.stepWeight: expected an integer 1-100, got \"10\"\n  help: remove the quotes: 10"]
        );
    }

    #[test]
    fn negative_max_weight() {
        let text = canary(FLAGGER_API, "    stepWeight: 10\n    maxWeight: -5\n");
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:13: spec.analysis.maxWeight: expected an integer 0-100, got -5\n  help: maxWeight is the largest percentage of traffic the canary gets before promotion, e.g. maxWeight: 50"]
        );
    }

    #[test]
    fn step_weights_not_increasing() {
        let text = canary(
            FLAGGER_API,
            "    stepWeights:\n    - 5\n    - 20\n    - 10\n",
        );
        assert_eq!(
            errors(&text),
            vec!["canary.yaml:15: spec.analysis.stepWeights[2]: stepWeights must be strictly increasing, but entry 2 (10) is not above entry 1 (20)\n  help: list the canary weights in increasing order, such as [1, 5, 10, 25, 50]"]
        );
        let docs = decode_lenient(&canary(FLAGGER_API, "    stepWeights: [1, 5, 80]\n"));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.step_weights, vec![1, 5, 80]);
        assert_eq!(a.max_weight(), 80);
    }

    #[test]
    fn short_intervals() {
        let docs = decode_lenient(&canary(
            FLAGGER_API,
            "    interval: 5s\n    stepWeight: 10\n",
        ));
        assert_eq!(
            docs.canaries[0].analysis.as_ref().unwrap().interval,
            Duration::from_secs(10)
        );
        let w: Vec<String> = docs.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            vec!["canary.yaml:12: warning: spec.analysis.interval: interval 5s is below 10s: Flagger raises intervals below 10s to 10s, so aviary runs every 10s\n  help: use apiVersion aviary.dev/v1alpha1 for shorter intervals"]
        );
        let docs = decode_lenient(&canary(
            AVIARY_API,
            "    interval: 5s\n    stepWeight: 10\n",
        ));
        assert!(docs.warnings.is_empty());
        assert_eq!(
            docs.canaries[0].analysis.as_ref().unwrap().interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            errors(&canary(AVIARY_API, "    interval: 500ms\n    stepWeight: 10\n")),
            vec!["canary.yaml:12: spec.analysis.interval: expected an interval of at least 1s, got \"500ms\"\n  help: the shortest analysis interval is 1s"]
        );
        assert_eq!(
            errors(&canary(FLAGGER_API, "    interval: 60\n    stepWeight: 10\n")),
            vec!["canary.yaml:12: spec.analysis.interval: expected a duration such as 30s or 1m, got 60\n  help: add a unit: \"60s\""]
        );
        assert_eq!(
            errors(&canary(FLAGGER_API, "    interval: \"60\"\n    stepWeight: 10\n")),
            vec!["canary.yaml:12: spec.analysis.interval: expected a duration such as 30s or 1m, got \"60\"\n  help: add a unit: \"60s\""]
        );
    }

    #[test]
    fn strategies() {
        assert_eq!(
            errors(&canary(FLAGGER_API, "    threshold: 2\n")),
            vec!["canary.yaml:11: spec.analysis: no rollout strategy\n  help: set stepWeight and maxWeight for a canary, iterations and match for A/B testing, or iterations for blue/green"]
        );
        // Blue/green on kubernetes needs nothing more; skipAnalysis turns the check off.
        let k8s = |body: &str| {
            canary(FLAGGER_API, body).replace("spec:\n", "spec:\n  provider: kubernetes\n")
        };
        assert!(decode_lenient(&k8s("    threshold: 2\n")).canaries.len() == 1);
        let skip = canary(FLAGGER_API, "    threshold: 2\n")
            .replace("spec:\n", "spec:\n  skipAnalysis: true\n");
        assert!(decode_lenient(&skip).canaries[0].skip_analysis);
        // Flagger drops the match with a warning and runs blue/green; so does aviary.
        let text =
            k8s("    iterations: 10\n    match:\n    - headers:\n        x: {exact: \"1\"}\n");
        assert_eq!(
            warnings(&text),
            vec!["canary.yaml:14: warning: spec.analysis.match: match is dropped: the kubernetes provider cannot route by request, so (as in Flagger) this canary runs blue/green, not A/B testing\n  help: remove match, or use a provider that routes by header, such as istio, nginx or gatewayapi"]
        );
        let config =
            crate::engine::Config::from_canary(&decode(&text).canaries[0], &Provider::Istio);
        assert_eq!(config.strategy, crate::engine::Strategy::BlueGreen);
        // A/B testing.
        let docs = decode_lenient(&canary(
            FLAGGER_API,
            "    iterations: 10\n    match:\n    - headers:\n        x-canary:\n          regex: \".*insider.*\"\n      sourceLabels: {app: x}\n",
        ));
        let a = docs.canaries[0].analysis.as_ref().unwrap();
        assert_eq!(a.iterations, 10);
        assert_eq!(
            a.r#match[0].headers.get("x-canary"),
            Some(&StringMatch::Regex(".*insider.*".into()))
        );
        assert!(docs.warnings.is_empty());
        let w = warnings(&canary(
            FLAGGER_API,
            "    stepWeight: 10\n    stepWeights: [1, 5]\n    maxWeight: 50\n    mirror: true\n    match:\n    - uri: {prefix: /}\n",
        ));
        assert_eq!(
            w,
            vec![
                "canary.yaml:13: warning: spec.analysis.stepWeights: stepWeights is ignored because stepWeight is set (Flagger's scheduler gives stepWeight precedence, and Flagger's CRD refuses the two together)\n  help: remove one of the two; note that Flagger still stops at the last stepWeights entry (5)",
                "canary.yaml:14: warning: spec.analysis.maxWeight: maxWeight is ignored because stepWeights is set (its last entry, 5, is the maximum weight)\n  help: remove maxWeight",
                "canary.yaml:15: warning: spec.analysis.mirror: mirror is ignored in A/B testing (match is set); Flagger mirrors traffic only in blue/green",
                "canary.yaml:16: warning: spec.analysis.match: match is only used by A/B testing, which needs iterations\n  help: set iterations (the number of checks to run) for A/B testing, or remove match",
            ]
        );
    }
}
