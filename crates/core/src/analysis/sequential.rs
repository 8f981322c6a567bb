//! Anytime-valid comparison of two event rates: the canary's and the primary's errors (or slow
//! requests) per request, interval after interval, with evidence that accumulates over the whole
//! release and a false-alarm probability that stays below `alpha` however often it is looked at.
//!
//! The model is the one Lindon, Sanden and Shirikian use for count data ("Rapid Regression
//! Detection in Software Deployments through Sequential Testing", KDD 2022): in each interval the
//! canary served `n_c` requests with `x` events and the primary `n_p` requests with `y` events.
//! Given the interval's `k = x + y` events, the canary's share `x` is binomial with
//! `θ(r) = r·n_c / (r·n_c + n_p)`, where `r` is the ratio of the canary's event rate to the
//! primary's, whatever the primary's rate is (it cancels). So every interval is a known-`θ`
//! binomial trial, and the weights may change between intervals.
//!
//! * **Regression** ([`RateTest::regression`]): the null is `r ≤ r0` (`r0 = 1 + effect floor`),
//!   the alternative a mixture over `r = r0·g` for [`GRID`] ratios `g` from 1.05 to 20. The
//!   mixture of likelihood ratios is a non-negative supermartingale under the null (each ratio
//!   is one, and for `r < r0` its expectation per trial is below one), so by Ville's inequality
//!   it crosses `1/alpha` with probability at most `alpha`, at any time or never. A crossing is
//!   sticky: once crossed, the regression is decided.
//! * **No regression** ([`RateTest::pass`]): the mirror test of `r ≥ r0` against `r = r0/g`;
//!   its crossing decides that the canary is not worse than the floor.
//! * Neither crossed: not yet decided.
//!
//! Exact, not only asymptotic: under equal rates the canary's share of the interval's events is
//! hypergeometric (a random split of the pooled requests), which is less dispersed than the
//! binomial in the convex order, so the binomial likelihood ratio (convex in `x`) still has
//! expectation at most one. The anytime-valid p-value is `1 / max M`.

use serde::{Deserialize, Serialize};

/// One interval: the canary's and the primary's events and the requests they came out of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
}

/// Ratios `g` of the alternatives to the null (`r = r0·g` for a regression, `r0/g` for a pass).
pub const GRID: usize = 32;
const GRID_LOW: f64 = 1.1;
const GRID_HIGH: f64 = 10.0;

fn grid() -> [f64; GRID] {
    let (lo, hi) = (GRID_LOW.ln(), GRID_HIGH.ln());
    let mut g = [0.0; GRID];
    for (j, slot) in g.iter_mut().enumerate() {
        *slot = (lo + (hi - lo) * j as f64 / (GRID - 1) as f64).exp();
    }
    g
}

/// The outcome of [`rate_test`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateTest {
    /// The regression e-process crossed `1/alpha`: the canary's rate is above `r0` times the
    /// primary's.
    pub regression: bool,
    /// The no-regression e-process crossed `1/alpha`: the canary's rate is below `r0` times the
    /// primary's.
    pub pass: bool,
    /// Anytime-valid p-value of "no regression", `min(1, 1 / max M)`.
    pub p_value: f64,
    /// The largest value the regression e-process reached.
    pub e_value: f64,
    /// Interval (1-based) at which the decision (regression, else pass) was reached.
    pub decided_at: Option<usize>,
    /// Events and requests summed over every usable trial.
    pub canary_events: u64,
    pub canary_requests: u64,
    pub primary_events: u64,
    pub primary_requests: u64,
}

impl RateTest {
    /// The canary's and the primary's event rates over every usable trial (`None` without
    /// requests).
    pub fn rates(&self) -> (Option<f64>, Option<f64>) {
        let rate = |e: u64, n: u64| (n > 0).then(|| e as f64 / n as f64);
        (
            rate(self.canary_events, self.canary_requests),
            rate(self.primary_events, self.primary_requests),
        )
    }
}

/// Runs both e-processes over `trials` in order; see the module documentation. `r0` is the
/// ratio of rates the null allows (≥ 1 in practice), `alpha` the false-alarm bound, in (0, 1).
/// Trials without requests on a side, or with more events than requests, carry no information
/// and are skipped. Never panics.
pub fn rate_test(trials: &[Trial], r0: f64, alpha: f64) -> RateTest {
    let g = grid();
    let threshold = -(alpha.clamp(f64::MIN_POSITIVE, 1.0)).ln();
    let r0 = if r0.is_finite() && r0 > 0.0 { r0 } else { 1.0 };
    let mut up = [0.0f64; GRID];
    let mut down = [0.0f64; GRID];
    let mut out = RateTest {
        regression: false,
        pass: false,
        p_value: 1.0,
        e_value: 1.0,
        decided_at: None,
        canary_events: 0,
        canary_requests: 0,
        primary_events: 0,
        primary_requests: 0,
    };
    let mut max_up = 0.0f64; // log of the largest regression e-value
    let mut max_down = 0.0f64;
    for (i, t) in trials.iter().enumerate() {
        if !t.usable() {
            continue;
        }
        out.canary_events = out.canary_events.saturating_add(t.canary_events);
        out.canary_requests = out.canary_requests.saturating_add(t.canary_requests);
        out.primary_events = out.primary_events.saturating_add(t.primary_events);
        out.primary_requests = out.primary_requests.saturating_add(t.primary_requests);
        if t.canary_events == 0 && t.primary_events == 0 {
            continue;
        }
        let (nc, np) = (t.canary_requests as f64, t.primary_requests as f64);
        let (x, y) = (t.canary_events as f64, t.primary_events as f64);
        let theta = |r: f64| r * nc / (r * nc + np);
        let t0 = theta(r0);
        let log_lr = |r: f64| {
            let t1 = theta(r);
            x * (t1 / t0).ln() + y * ((1.0 - t1) / (1.0 - t0)).ln()
        };
        for j in 0..GRID {
            up[j] += log_lr(r0 * g[j]);
            down[j] += log_lr(r0 / g[j]);
        }
        max_up = max_up.max(log_mean_exp(&up));
        max_down = max_down.max(log_mean_exp(&down));
        if out.decided_at.is_none() && (max_up >= threshold || max_down >= threshold) {
            out.decided_at = Some(i + 1);
        }
        if !out.regression && max_up >= threshold {
            out.regression = true;
            out.decided_at = Some(i + 1);
        }
    }
    out.pass = !out.regression && max_down >= threshold;
    out.e_value = max_up.exp();
    out.p_value = (-max_up).exp().clamp(0.0, 1.0);
    out
}

/// `ln(mean(exp(v)))`, without overflow.
fn log_mean_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    let s: f64 = v.iter().map(|x| (x - m).exp()).sum();
    m + (s / v.len() as f64).ln()
}

/// The one-sided exact conditional test of a single (pooled) trial, for a fixed window: given
/// the `k` events of both sides, the probability of `x` or more (`greater`) or `x` or fewer (not
/// `greater`) of them in the canary if its rate were `r0` times the primary's. `None` without
/// requests on a side.
pub fn conditional_p(t: &Trial, r0: f64, greater: bool) -> Option<f64> {
    if !t.usable() {
        return None;
    }
    let k = t.canary_events.saturating_add(t.primary_events);
    let (nc, np) = (t.canary_requests as f64, t.primary_requests as f64);
    let theta = r0 * nc / (r0 * nc + np);
    Some(if greater {
        super::stats::binomial_sf(t.canary_events, k, theta)
    } else {
        super::stats::binomial_cdf(t.canary_events, k, theta)
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

    use crate::analysis::rng::SplitMix as Rng;

    fn binomial(rng: &mut Rng, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| rng.uniform() < p).count() as u64
    }

    fn release(rng: &mut Rng, canary_rate: f64, primary_rate: f64, intervals: usize) -> Vec<Trial> {
        (0..intervals)
            .map(|i| {
                let weight = (0.1 * (i + 1) as f64).min(0.5);
                let nc = (2000.0 * weight) as u64;
                let np = 2000 - nc;
                Trial {
                    canary_events: binomial(rng, nc, canary_rate),
                    canary_requests: nc,
                    primary_events: binomial(rng, np, primary_rate),
                    primary_requests: np,
                }
            })
            .collect()
    }

    #[test]
    fn equal_rates_rarely_cross_however_long_the_release() {
        // 400 releases of 30 intervals, looked at after every interval: the share that ever
        // crosses stays below alpha (Ville), with room for sampling error.
        let mut rng = Rng(7);
        let alpha = 0.05;
        let crossed = (0..400)
            .filter(|_| rate_test(&release(&mut rng, 0.01, 0.01, 30), 1.0, alpha).regression)
            .count();
        assert!(
            crossed <= 400 * 6 / 100,
            "{crossed} of 400 good releases flagged"
        );
    }

    #[test]
    fn a_doubled_error_rate_is_found_and_the_decision_sticks() {
        let mut rng = Rng(11);
        let mut found = 0;
        for _ in 0..50 {
            let trials = release(&mut rng, 0.02, 0.01, 12);
            let t = rate_test(&trials, 1.0, 0.05);
            if t.regression {
                found += 1;
                // More (good) data afterwards never takes the decision back.
                let mut more = trials.clone();
                more.extend(release(&mut rng, 0.01, 0.01, 10));
                assert!(rate_test(&more, 1.0, 0.05).regression);
                assert!(t.p_value <= 0.05 && t.e_value >= 20.0, "{t:?}");
            }
        }
        assert!(found >= 45, "found {found} of 50");
    }

    #[test]
    fn equal_rates_with_much_data_are_decided_as_a_pass() {
        let mut rng = Rng(3);
        let t = rate_test(&release(&mut rng, 0.05, 0.05, 20), 1.2, 0.05);
        assert!(t.pass && !t.regression, "{t:?}");
        // Nothing happened at all: nothing to decide.
        let idle = vec![
            Trial {
                canary_events: 0,
                canary_requests: 100,
                primary_events: 0,
                primary_requests: 900
            };
            3
        ];
        let t = rate_test(&idle, 1.0, 0.05);
        assert!(!t.pass && !t.regression && t.decided_at.is_none(), "{t:?}");
        assert_eq!((t.canary_requests, t.primary_requests), (300, 2700));
    }

    #[test]
    fn an_improvement_is_not_a_regression() {
        let mut rng = Rng(5);
        let t = rate_test(&release(&mut rng, 0.005, 0.02, 10), 1.0, 0.05);
        assert!(!t.regression && t.pass, "{t:?}");
    }

    #[test]
    fn unusable_trials_are_skipped() {
        let bad = [
            Trial {
                canary_events: 5,
                canary_requests: 0,
                primary_events: 0,
                primary_requests: 10,
            },
            Trial {
                canary_events: 50,
                canary_requests: 10,
                primary_events: 0,
                primary_requests: 10,
            },
        ];
        let t = rate_test(&bad, 1.0, 0.05);
        assert_eq!((t.canary_requests, t.primary_requests), (0, 0));
        assert!(!t.regression && !t.pass);
        assert_eq!(t.rates(), (None, None));
    }

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
