//! `analysis.judge`: the statistical judge, an aviary addition.

use super::diagnostics::{join, Cx, Hint};
use super::fields::{to_u32, Reader};
use crate::analysis::Method;
use crate::spec::types::{JudgeKind, JudgeMetric, JudgeSpec};

/// `analysis.judge`.
pub(super) fn decode_judge(cx: &mut Cx, mut r: Reader) -> JudgeSpec {
    let duration = |r: &mut Reader, cx: &mut Cx, key: &'static str, default: &str| {
        r.field(key)
            .and_then(|f| f.duration(cx))
            .unwrap_or_else(|| {
                (
                    crate::spec::duration::parse_go_duration(default).unwrap_or_default(),
                    default.to_string(),
                )
            })
    };
    let method = r
        .field("method")
        .and_then(|f| f.one_of(cx, "judge method", &Method::NAMES))
        .map_or(Method::Sequential, |m| {
            if m == "fixed-window" {
                Method::FixedWindow
            } else {
                Method::Sequential
            }
        });
    let (window, window_text) = duration(&mut r, cx, "window", "5m");
    let (step, _) = duration(&mut r, cx, "step", "30s");
    let (baseline, _) = duration(&mut r, cx, "baseline", "1h");
    // A score field, `None` when absent or out of range (reported).
    let score = |r: &mut Reader, cx: &mut Cx, key: &'static str| {
        let f = r.field(key)?;
        let v = f.number(cx)?;
        if !(0.0..=100.0).contains(&v) {
            f.error(cx, format!("expected a score 0-100, got {v}"));
            return None;
        }
        Some(v)
    };
    let provider = r
        .field("provider")
        .and_then(|f| super::metric_template::decode_provider(cx, &f, "analysis.judge"));
    let pass_score = score(&mut r, cx, "passScore").unwrap_or(95.0);
    let marginal_score = score(&mut r, cx, "marginalScore").unwrap_or(75.0);
    if marginal_score > pass_score {
        cx.error(
            r.key_line("marginalScore"),
            &join(&r.path, "marginalScore"),
            format!("marginalScore {marginal_score} is above passScore {pass_score}"),
        );
    }
    let path = join(&r.path, "metrics");
    let line = r.key_line("metrics");
    let items = r.list(cx, "metrics");
    if items.is_empty() {
        cx.error(line, &path, "the judge needs at least one metric")
            .hint("add metrics: [{name: p99-latency, kind: latency, query: ...}]");
    }
    let mut metrics = Vec::new();
    for item in &items {
        let Some(mut m) = item.map(cx) else { continue };
        let name = m.req_string(cx, "name");
        let kind = m
            .req(cx, "kind", |f, cx| {
                f.one_of(cx, "judge kind", &JudgeKind::NAMES)
            })
            .map(|k| match k.as_str() {
                "latency" => JudgeKind::Latency,
                "error-rate" => JudgeKind::ErrorRate,
                "increase" => JudgeKind::Increase,
                _ => JudgeKind::Decrease,
            });
        let (query, histogram_query, errors_query, total_query) = match kind {
            Some(JudgeKind::ErrorRate) => (
                None,
                None,
                m.req_string(cx, "errorsQuery"),
                m.req_string(cx, "totalQuery"),
            ),
            // A latency metric takes a histogram (judged request by request) or a value query.
            Some(JudgeKind::Latency) if m.present("histogramQuery") => {
                if m.present("query") {
                    if let Some(f) = m.field("query") {
                        f.error(
                            cx,
                            "a latency metric takes histogramQuery or query, not both",
                        )
                        .hint("keep histogramQuery: the judge then compares request by request");
                    }
                }
                (None, m.req_string(cx, "histogramQuery"), None, None)
            }
            Some(_) => (m.req_string(cx, "query"), None, None, None),
            None => (None, None, None, None),
        };
        let quantile = match m.field("quantile") {
            Some(f) => match f.number(cx) {
                Some(q) if q > 0.0 && q < 1.0 => q,
                Some(q) => {
                    f.error(cx, format!("expected a quantile between 0 and 1, got {q}"));
                    0.9
                }
                None => 0.9,
            },
            None => 0.9,
        };
        let critical = m.flag(cx, "critical");
        let weight = m.number(cx, "weight").unwrap_or(1.0);
        let alpha = m.number(cx, "alpha").unwrap_or(method.default_alpha());
        let effect_floor = m
            .number(cx, "effectFloor")
            .unwrap_or(method.default_effect_floor());
        let min_samples = m.int(cx, "minSamples", 1, None).map_or(10, to_u32);
        let min_requests = m
            .int(cx, "minRequests", 1, None)
            .map_or(100, |v| u64::try_from(v).unwrap_or(100));
        m.finish(cx);
        if let (Some(name), Some(kind)) = (name, kind) {
            metrics.push(JudgeMetric {
                name,
                kind,
                query,
                histogram_query,
                quantile,
                errors_query,
                total_query,
                critical,
                weight,
                alpha,
                effect_floor,
                min_samples,
                min_requests,
            });
        }
    }
    r.finish(cx);
    JudgeSpec {
        method,
        window,
        window_text,
        step,
        baseline,
        provider,
        pass_score,
        marginal_score,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::decode::test_support::*;

    const JUDGE: &str = "    judge:\n      provider:\n        type: TYPE\n        address: https://api.datadoghq.eu\n        secretRef: {name: datadog}\n      metrics:\n        - name: errors\n          kind: error-rate\n          errorsQuery: 'sum:errors{kube_deployment:{{ workload }}}.as_count()'\n          totalQuery: 'sum:hits{kube_deployment:{{ workload }}}.as_count()'\n";

    #[test]
    fn the_judge_takes_a_provider_block_like_a_templates() {
        let text = canary(
            "aviary.dev/v1alpha1",
            &format!("{STEPS}{}", JUDGE.replace("TYPE", "datadog")),
        );
        let docs = decode_lenient(&text);
        let provider = docs
            .canaries
            .first()
            .and_then(|c| c.analysis.as_ref())
            .and_then(|a| a.judge.as_ref())
            .and_then(|j| j.provider.clone());
        match provider {
            Some(p) => {
                assert_eq!(p.provider_type, "datadog");
                assert_eq!(p.address.as_deref(), Some("https://api.datadoghq.eu"));
                assert_eq!(p.secret_ref.map(|s| s.name).as_deref(), Some("datadog"));
            }
            None => panic!("no judge provider in {docs:#?}"),
        }
        let text = canary(
            "aviary.dev/v1alpha1",
            &format!("{STEPS}{}", JUDGE.replace("TYPE", "sumologic")),
        );
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.contains(
                "analysis.judge.provider.type: analysis.judge: unknown metric provider type \"sumologic\""
            )),
            "{errs:?}"
        );
    }
}
