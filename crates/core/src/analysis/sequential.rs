//! Two event rates compared as counts: the canary's and the primary's events (errors, or
//! requests slower than a pivot) out of their requests, one [`Trial`] per interval.
//!
//! Given an interval's `k = x + y` events, the canary's share `x` is binomial with
//! `θ(r) = r·n_c / (r·n_c + n_p)`, where `r` is the ratio of the canary's event rate to the
//! primary's, whatever the primary's rate is (it cancels): the conditional test. One pooled
//! trial is the fixed window's test ([`conditional_p`]); a release's trials in order are the
//! sequential test's ([`super::spending`]). Latency histograms become trials through
//! [`slow_requests`].

use serde::{Deserialize, Serialize};

/// One interval: the canary's and the primary's events and the requests they came out of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub canary_events: u64,
    pub canary_requests: u64,
    pub primary_events: u64,
    pub primary_requests: u64,
}

impl Trial {
    /// Requests on both sides and no more events than requests: a trial that carries
    /// information.
    pub fn usable(&self) -> bool {
        self.canary_requests > 0
            && self.primary_requests > 0
            && self.canary_events <= self.canary_requests
            && self.primary_events <= self.primary_requests
    }

    /// The events of both sides.
    pub fn events(&self) -> u64 {
        self.canary_events.saturating_add(self.primary_events)
    }

    /// The canary's expected share of the events if its rate were `r` times the primary's:
    /// `r·n_c / (r·n_c + n_p)`.
    pub fn share(&self, r: f64) -> f64 {
        let (nc, np) = (self.canary_requests as f64, self.primary_requests as f64);
        r * nc / (r * nc + np)
    }
}

/// The one-sided exact conditional test of a single (pooled) trial, for a fixed window: given
/// the `k` events of both sides, the probability of `x` or more (`greater`) or `x` or fewer (not
/// `greater`) of them in the canary if its rate were `r0` times the primary's. `None` without
/// requests on a side.
pub fn conditional_p(t: &Trial, r0: f64, greater: bool) -> Option<f64> {
    if !t.usable() {
        return None;
    }
    let (k, theta) = (t.events(), t.share(r0));
    Some(if greater {
        super::stats::binomial_sf(t.canary_events, k, theta)
    } else {
        super::stats::binomial_cdf(t.canary_events, k, theta)
    })
}

/// The bucket bound of one histogram (`(upper bound, cumulative count)`, as [`slow_requests`]
/// reads them) whose tail is closest, by ratio, to the `1 − quantile` share above `quantile`,
/// among the bounds with at most half the requests above them (a tail too wide leaves a
/// slower canary little room to show). `None` without requests or without such a bound.
///
/// Used on the primary's baseline, before the canary served anything, so the pivot cannot
/// depend on the canary's requests.
pub fn tail_pivot(buckets: &[(f64, u64)], quantile: f64) -> Option<f64> {
    let total = buckets
        .iter()
        .filter(|x| !x.0.is_nan())
        .map(|x| x.1)
        .max()
        .filter(|t| *t > 0)? as f64;
    let target = (1.0 - quantile.clamp(0.0, 1.0)).max(1e-6);
    buckets
        .iter()
        .filter(|x| x.0.is_finite())
        .map(|&(le, below)| (le, (total - (below as f64).min(total)) / total))
        .filter(|&(_, tail)| tail > 0.0 && tail <= 0.5)
        .min_by(|a, b| {
            let off = |tail: f64| (tail / target).ln().abs();
            off(a.1).total_cmp(&off(b.1))
        })
        .map(|(le, _)| le)
}

/// Requests above `bound` and all requests of one histogram.
pub fn above(buckets: &[(f64, u64)], bound: f64) -> Option<(u64, u64)> {
    let total = buckets
        .iter()
        .filter(|x| !x.0.is_nan())
        .map(|x| x.1)
        .max()?;
    let below = buckets.iter().find(|x| x.0 == bound).map(|x| x.1)?;
    Some((total.saturating_sub(below), total))
}

/// Slow requests as in [`slow_requests`], above a `bound` fixed beforehand ([`tail_pivot`] of a
/// baseline). `None` when a side has no requests or lacks the bound.
pub fn slow_above(canary: &[(f64, u64)], primary: &[(f64, u64)], bound: f64) -> Option<Trial> {
    let (canary_events, canary_requests) = above(canary, bound)?;
    let (primary_events, primary_requests) = above(primary, bound)?;
    Some(Trial {
        canary_events,
        canary_requests,
        primary_events,
        primary_requests,
    })
}

/// What a latency histogram says about slow requests in one interval: the pooled (canary and
/// primary) `quantile` picks a bucket bound (the one at or just below it), and the requests
/// above that bound are the "events".
///
/// `canary` and `primary` are `(upper bound, cumulative count)` buckets as Prometheus'
/// `le` series give them (+inf allowed; a missing +inf bucket makes the largest bound the
/// total). Only bounds both sides have are used. The pivot depends only on the pooled requests,
/// which keeps the conditional test exact. `None` when a side has no requests or no request is
/// above the bound.
pub fn slow_requests(
    canary: &[(f64, u64)],
    primary: &[(f64, u64)],
    quantile: f64,
) -> Option<Trial> {
    let clean = |b: &[(f64, u64)]| {
        let mut v: Vec<(f64, u64)> = b.iter().copied().filter(|(le, _)| !le.is_nan()).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v
    };
    let (c, p) = (clean(canary), clean(primary));
    let total = |v: &[(f64, u64)]| v.iter().map(|b| b.1).max().unwrap_or(0);
    let (nc, np) = (total(&c), total(&p));
    if nc == 0 || np == 0 {
        return None;
    }
    let at = |v: &[(f64, u64)], le: f64| {
        v.iter()
            .find(|b| b.0 == le)
            .map(|b| b.1)
            .unwrap_or_default()
    };
    let bounds: Vec<f64> = c
        .iter()
        .map(|b| b.0)
        .filter(|le| le.is_finite() && p.iter().any(|q| q.0 == *le))
        .collect();
    // The bound at or just below the pooled quantile (so that its tail holds at least the
    // quantile's share of requests, which matters with coarse buckets), else the first one.
    let need = quantile.clamp(0.0, 1.0) * (nc as f64 + np as f64);
    let pooled = |le: f64| at(&c, le) as f64 + at(&p, le) as f64;
    let pivot = bounds
        .iter()
        .copied()
        .rfind(|le| pooled(*le) <= need)
        .or_else(|| bounds.first().copied())?;
    if pooled(pivot) >= (nc as f64 + np as f64) {
        return None;
    }
    let (below_c, below_p) = (at(&c, pivot).min(nc), at(&p, pivot).min(np));
    Some(Trial {
        canary_events: nc - below_c,
        canary_requests: nc,
        primary_events: np - below_p,
        primary_requests: np,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_conditional_test_matches_the_binomial_tail() {
        // 10 canary of 12 events with a 1:1 split: P(X ≥ 10 | Bin(12, ½)) = 79/4096.
        let t = Trial {
            canary_events: 10,
            canary_requests: 500,
            primary_events: 2,
            primary_requests: 500,
        };
        let p = conditional_p(&t, 1.0, true).unwrap_or(f64::NAN);
        assert!((p - 79.0 / 4096.0).abs() < 1e-12, "{p}");
        let q = conditional_p(&t, 1.0, false).unwrap_or(f64::NAN);
        // P(X ≤ 10) = 1 − P(X ≥ 11) = 1 − 13/4096.
        assert!((q - (1.0 - 13.0 / 4096.0)).abs() < 1e-12, "{q}");
    }

    #[test]
    fn the_baseline_pivot_has_a_tail_near_the_quantiles() {
        // 1000 requests: 700 ≤ 5 ms, 930 ≤ 10 ms, 995 ≤ 25 ms. Tails 30%, 7%, 0.5%: for P90
        // (a 10% tail) 10 ms is the closest; for P99 (1%) 25 ms.
        let b = [
            (0.005, 700),
            (0.01, 930),
            (0.025, 995),
            (f64::INFINITY, 1000),
        ];
        assert_eq!(tail_pivot(&b, 0.9), Some(0.01));
        assert_eq!(tail_pivot(&b, 0.99), Some(0.025));
        assert_eq!(above(&b, 0.01), Some((70, 1000)));
        // Tails wider than half are never chosen; nothing above any bound: no pivot.
        let wide = [(0.005, 100), (f64::INFINITY, 1000)];
        assert_eq!(tail_pivot(&wide, 0.9), None);
        let all_fast = [(0.005, 1000), (f64::INFINITY, 1000)];
        assert_eq!(tail_pivot(&all_fast, 0.9), None);
        assert_eq!(tail_pivot(&[], 0.9), None);
    }

    #[test]
    fn slow_requests_are_above_the_bound_at_the_pooled_quantile() {
        // Buckets 0.1, 0.25, 0.5, +inf. Canary: 100 requests, 60 ≤ 0.1, 80 ≤ 0.25, 95 ≤ 0.5.
        // Primary: 900 requests, 720 ≤ 0.1, 850 ≤ 0.25, 890 ≤ 0.5.
        let canary = [(0.1, 60), (0.25, 80), (0.5, 95), (f64::INFINITY, 100)];
        let primary = [(0.1, 720), (0.25, 850), (0.5, 890), (f64::INFINITY, 900)];
        // Pooled: 780, 930, 985 of 1000; the bound at or below the 0.9 quantile is 0.1.
        let t = slow_requests(&canary, &primary, 0.9);
        assert_eq!(
            t,
            Some(Trial {
                canary_events: 40,
                canary_requests: 100,
                primary_events: 180,
                primary_requests: 900
            })
        );
        // At 0.99 it is 0.5 (985 of 1000 at or below it).
        let t = slow_requests(&canary, &primary, 0.99);
        assert_eq!(
            t.map(|t| (t.canary_events, t.primary_events)),
            Some((5, 10))
        );
        // Every request in the first bucket: nothing can be slower.
        let fast = [(0.1, 10), (0.25, 10), (f64::INFINITY, 10)];
        assert_eq!(slow_requests(&fast, &fast, 0.9), None);
        assert_eq!(slow_requests(&[], &primary, 0.9), None);
    }
}
