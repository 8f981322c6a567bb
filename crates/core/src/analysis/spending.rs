//! A group-sequential comparison of two event rates with an alpha-spending boundary: the
//! canary's and the primary's errors (or slow requests) per request, interval after interval,
//! evidence accumulated over the whole release, and a probability of ever flagging a good
//! release that stays below `alpha` however many intervals there are and however often the
//! result is read.
//!
//! The model (Lindon, Sanden and Shirikian, KDD 2022, for count data): in interval `i` the
//! canary served `n_c` requests with `x_i` events and the primary `n_p` with `y_i`. Given the
//! interval's `k_i = x_i + y_i` events, `x_i` is binomial with share
//! `θ_i = r0·n_c / (r0·n_c + n_p)` when the canary's rate is `r0` times the primary's, whatever
//! the primary's rate is, however the weights move between intervals. Under "no regression"
//! (`r ≤ r0`) the canary's running total `S_i = x_1 + … + x_i` is therefore a sum of independent
//! binomials with known parameters, and its exact distribution can be computed.
//!
//! A release is planned: its analysis ends after a known number of steps, at known weights
//! (from the Canary's steps and interval). Instead of paying for an unbounded horizon, as a
//! mixture e-process does (its boundary, `1/alpha`, sits far above a fixed test's critical
//! value), the test spends `alpha` over the planned release, Lan and DeMets style: by
//! information time `t` (the share of the planned analysis behind it, by the calendar or by the
//! canary's share of the traffic so far) it may have spent `alpha · f(t)` ([`spent_share`], the
//! Hwang–Shih–DeCani family).
//! At each interval the critical value is the smallest `c` with
//! `P(S_i ≥ c, no earlier crossing) ≤ alpha·f(t_i) − spent so far`, computed exactly by
//! dynamic programming over the distribution of `S` (on a coarser lattice with normal
//! increments once the counts are large). The sum of the crossing probabilities is at most
//! `alpha·f(1) = alpha`: the false-alarm bound holds for any number of intervals, any
//! weights, and whenever the verdict is read. At time 1 no alpha is left, so no new
//! crossing can happen; a release that ran its planned course without a crossing is a pass.
//!
//! The binomial is the Poisson limit of the exact (hypergeometric) conditional law; for rare
//! events (errors) they coincide, and for slow requests (about a tenth of all requests) the
//! binomial is the more dispersed of the two, so its tails are the safer side.
//!
//! Real counts swing more than binomially (per-pod and per-minute differences). The observed
//! excess is deflated by the over-dispersion ([`Swings`]) before it is placed on the lattice:
//! as a known variance when a baseline of many intervals measured it, and as a Student's t
//! statistic, put on the normal scale at the same tail probability, when only the release's
//! own few intervals measure it ([`dispersion`]). Taking a dispersion measured over five
//! intervals as known flagged good releases at three to eight times `alpha` (the judge
//! benchmark's noisy traffic; the test
//! `swings_of_each_deployment_measured_over_a_few_intervals_do_not_raise_false_alarms`).

use serde::{Deserialize, Serialize};

use super::sequential::Trial;
use super::stats::{binomial_log_pmf, normal_sf, t_as_normal};

/// The Hwang–Shih–DeCani shape the judge uses: O'Brien–Fleming-like, most of alpha kept for the
/// end of the planned analysis (γ = 1 would be Pocock-like, spending evenly). On the judge
/// benchmark γ from −4 to 1 changed power by at most 2 points and mean checks to a rollback by
/// at most 0.4; −4 kept false alarms at or below 1% in noisy traffic where the others did not.
pub const GAMMA: f64 = -4.0;

/// At most this many looks (boundary checks) in a planned analysis, whatever its number of
/// steps (a step of seconds over hours would otherwise cost a look each): one per 1/LOOKS of
/// information time, and one when it reaches 1. Looks are set by the time alone, never by the
/// events.
const LOOKS: usize = 256;

/// Cells of the lattice before it is coarsened (the cost of one interval is at most this
/// times the width of its own increment).
const MAX_CELLS: usize = 4096;
/// Standard deviations kept on either side of an increment's mean.
const SPREAD: f64 = 9.0;
/// Probability below which a cell at an edge of the lattice is dropped.
const NEGLIGIBLE: f64 = 1e-18;

/// The share of `alpha` spent by information time `t` (clamped to [0, 1]):
/// `(1 − e^(−γt)) / (1 − e^(−γ))`, `t` itself for γ = 0.
pub fn spent_share(t: f64, gamma: f64) -> f64 {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    if gamma.abs() < 1e-9 {
        t
    } else {
        (1.0 - (-gamma * t).exp()) / (1.0 - (-gamma).exp())
    }
}

/// What [`spending_test`] knows of how much the event counts swing from interval to interval
/// beyond binomial sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Swings {
    /// Measured by a baseline ([`excess_variance`]'s `κ`, over many intervals): the boundary
    /// widens by it as by a known variance.
    Known(f64),
    /// Measured from the trials themselves ([`dispersion`]), so the standardized excess is
    /// judged against Student's t. `ceiling`: a `κ` the swings of the comparison cannot exceed
    /// (from the primary's baseline: each deployment swinging at most as much as the primary
    /// did in all), whose normal test the t test may fall back on when the trials' estimate is
    /// above it (a large regression also inflates that estimate: the ratio of slow requests is
    /// not the same in every interval).
    Measured { ceiling: Option<f64> },
}

/// The outcome of [`spending_test`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendingTest {
    /// The canary's events crossed the boundary: its rate is above `r0` times the primary's.
    pub regression: bool,
    /// The planned horizon was reached without a crossing: no regression.
    pub complete: bool,
    /// Stage-wise p-value of "no regression": the alpha spent before the latest (or the
    /// deciding) interval plus the chance of at least the observed total there without an
    /// earlier crossing.
    pub p_value: f64,
    /// Alpha spent so far (at most `alpha`).
    pub spent: f64,
    /// Interval (1-based) at which the regression was decided.
    pub decided_at: Option<usize>,
    /// The canary's events expected under the null, over every usable interval so far.
    pub expected: f64,
    /// The over-dispersion the latest look allowed for (1: binomial; from the baseline's swings
    /// or estimated from the intervals themselves, [`dispersion`]).
    pub dispersion: f64,
    /// Boundary checks so far (at most [`LOOKS`] + 1).
    pub looks: usize,
    /// Events and requests summed over every usable trial.
    pub canary_events: u64,
    pub canary_requests: u64,
    pub primary_events: u64,
    pub primary_requests: u64,
}

impl SpendingTest {
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

/// The distribution of the canary's running total over the paths that have not crossed:
/// `mass[j]` is the probability of the state `lo + j`. The state is the total itself while
/// `h` is 1 (exact binomial increments), else the total minus its null mean, in units of `h`
/// (normal increments).
struct Lattice {
    lo: i64,
    mass: Vec<f64>,
    /// Events per cell; 0 while exact.
    h: f64,
}

impl Lattice {
    fn exact(&self) -> bool {
        self.h == 0.0
    }

    /// The state of a running total `s` (deflated for over-dispersion, so not always whole)
    /// whose null mean is `mean`.
    fn state(&self, s: f64, mean: f64) -> i64 {
        if self.exact() {
            s.round() as i64
        } else {
            ((s - mean) / self.h).round() as i64
        }
    }

    fn convolve(&mut self, kernel_lo: i64, kernel: &[f64]) {
        if kernel.is_empty() || self.mass.is_empty() {
            return;
        }
        let mut out = vec![0.0; self.mass.len() + kernel.len() - 1];
        for (i, &m) in self.mass.iter().enumerate() {
            if m == 0.0 {
                continue;
            }
            for (j, &k) in kernel.iter().enumerate() {
                out[i + j] += m * k;
            }
        }
        self.lo = self.lo.saturating_add(kernel_lo);
        self.mass = out;
        self.trim();
    }

    fn trim(&mut self) {
        let first = self.mass.iter().position(|&m| m > NEGLIGIBLE);
        let last = self.mass.iter().rposition(|&m| m > NEGLIGIBLE);
        match (first, last) {
            (Some(a), Some(b)) => {
                self.mass.truncate(b + 1);
                self.mass.drain(..a);
                self.lo = self.lo.saturating_add(i64::try_from(a).unwrap_or(0));
            }
            _ => self.mass.clear(),
        }
    }

    /// Probability of a state at or above `c`.
    fn tail(&self, c: i64) -> f64 {
        let from = usize::try_from(c.saturating_sub(self.lo).max(0)).unwrap_or(usize::MAX);
        self.mass.iter().skip(from).sum()
    }

    /// The smallest critical state whose tail is within `budget`, and that tail.
    fn critical(&self, budget: f64) -> (i64, f64) {
        let top = self
            .lo
            .saturating_add(i64::try_from(self.mass.len()).unwrap_or(i64::MAX));
        let mut c = top;
        let mut tail = 0.0;
        if budget <= 0.0 {
            return (c, tail);
        }
        for &m in self.mass.iter().rev() {
            if tail + m > budget {
                break;
            }
            tail += m;
            c -= 1;
        }
        (c, tail)
    }

    /// Drops the states at or above `c` (those paths crossed).
    fn absorb(&mut self, c: i64) {
        let keep = usize::try_from(c.saturating_sub(self.lo).max(0)).unwrap_or(usize::MAX);
        self.mass.truncate(keep);
        self.trim();
    }

    /// Switches from exact totals to centred states on a lattice of `h` events, or doubles
    /// `h`, whichever applies, so that the lattice stays within [`MAX_CELLS`].
    fn coarsen(&mut self, mean: f64) {
        let (lo, h) = (self.lo, self.h);
        let new_h = if self.exact() {
            (self.mass.len() as f64 / (MAX_CELLS / 4) as f64).max(1.0)
        } else {
            2.0 * h
        };
        let position = |j: usize| -> f64 {
            let state = lo as f64 + j as f64;
            if h == 0.0 {
                state - mean
            } else {
                state * h
            }
        };
        let cells: Vec<(i64, f64)> = self
            .mass
            .iter()
            .enumerate()
            .map(|(j, &m)| ((position(j) / new_h).round() as i64, m))
            .collect();
        let (Some(first), Some(last)) = (cells.first(), cells.last()) else {
            self.h = new_h;
            return;
        };
        let (a, b) = (first.0, last.0);
        let mut mass = vec![0.0; usize::try_from(b - a + 1).unwrap_or(1)];
        for (state, m) in cells {
            if let Ok(k) = usize::try_from(state - a) {
                if let Some(slot) = mass.get_mut(k) {
                    *slot += m;
                }
            }
        }
        self.lo = a;
        self.mass = mass;
        self.h = new_h;
    }
}

/// The binomial `(n, p)` probabilities over the values within [`SPREAD`] standard deviations
/// of the mean: `(first value, probabilities)`.
fn binomial_kernel(n: u64, p: f64) -> (i64, Vec<f64>) {
    if p <= 0.0 || n == 0 {
        return (0, vec![1.0]);
    }
    if p >= 1.0 {
        return (i64::try_from(n).unwrap_or(i64::MAX), vec![1.0]);
    }
    let nf = n as f64;
    let sd = (nf * p * (1.0 - p)).sqrt();
    let lo = (nf * p - SPREAD * sd - 2.0).floor().max(0.0) as u64;
    let hi = ((nf * p + SPREAD * sd + 2.0).ceil() as u64).min(n);
    let log_pmf = binomial_log_pmf(n, p);
    let kernel = (lo..=hi).map(|k| log_pmf(k).exp()).collect();
    (i64::try_from(lo).unwrap_or(0), kernel)
}

/// A centred normal with standard deviation `sd` on a lattice of `h`: `(first cell, masses)`.
fn normal_kernel(sd: f64, h: f64) -> (i64, Vec<f64>) {
    if sd.is_nan() || sd <= 0.0 || h.is_nan() || h <= 0.0 {
        return (0, vec![1.0]);
    }
    let w = (SPREAD * sd / h).ceil() as i64 + 1;
    let cdf = |x: f64| 1.0 - normal_sf(x / sd);
    let kernel = (-w..=w)
        .map(|j| {
            let x = j as f64 * h;
            (cdf(x + 0.5 * h) - cdf(x - 0.5 * h)).max(0.0)
        })
        .collect();
    (-w, kernel)
}

/// The excess variance of event counts over Poisson, from a baseline's intervals
/// `(events, requests)`: `κ` in `Var = μ·(1 + κ·μ)` (rates that move from interval to interval
/// by a factor of variance `κ`), by moments, never below 0. 0 with fewer than two intervals.
pub fn excess_variance(intervals: &[(f64, f64)]) -> f64 {
    let (events, requests) = intervals
        .iter()
        .fold((0.0, 0.0), |(e, n), i| (e + i.0, n + i.1));
    if intervals.len() < 2 || requests <= 0.0 || events <= 0.0 {
        return 0.0;
    }
    let rate = events / requests;
    let (mut excess, mut squares) = (0.0, 0.0);
    for &(e, n) in intervals {
        let m = rate * n;
        excess += (e - m).powi(2) - m * (1.0 - rate);
        squares += m * m;
    }
    if squares > 0.0 {
        (excess / squares).max(0.0)
    } else {
        0.0
    }
}

/// Prior degrees of freedom at no over-dispersion: with few intervals the estimate leans on
/// the binomial.
const PRIOR_DF: f64 = 2.0;

/// How much more the canary's shares vary from interval to interval than binomial sampling
/// explains (requests that are not independent: per-pod or per-minute differences between the
/// deployments), and how firmly that is known: `(φ, ν)`, Pearson's X² of the `trials` around
/// the common ratio that fits them best over its degrees of freedom, shrunk toward 1 by
/// [`PRIOR_DF`] pseudo-intervals, and `ν` = the degrees of freedom plus [`PRIOR_DF`]. A
/// constant regression moves the fitted ratio, not the estimate. `r0` is the starting guess.
/// With fewer than two intervals: `(1, PRIOR_DF)`.
///
/// A handful of intervals measure `φ` roughly (X²/df scatters by ±70% at 4 degrees of
/// freedom), so [`spending_test`] judges its statistic against Student's t with `ν` degrees of
/// freedom rather than the normal: taking `φ` as known let per-deployment swings through at
/// several times `alpha`. An estimate below 1 (intervals steadier than binomial sampling) is
/// kept for the t statistic, which [`spending_test`] never lets say more than the binomial
/// test itself.
pub fn dispersion(trials: &[Trial], r0: f64) -> (f64, f64) {
    let (events, canary) = trials.iter().fold((0.0, 0.0), |(e, c), t| {
        (e + t.events() as f64, c + t.canary_events as f64)
    });
    if trials.len() < 2 {
        return (1.0, PRIOR_DF);
    }
    let df = (trials.len() - 1) as f64;
    if canary <= 0.0 || canary >= events {
        // Every event on one side in every interval: a constant ratio (0 or unbounded) fits
        // them exactly, X² = 0.
        return (PRIOR_DF / (df + PRIOR_DF), df + PRIOR_DF);
    }
    // The ratio whose expected canary events match the observed ones (monotone in log r).
    let expected = |lr: f64| -> f64 {
        let r = lr.exp();
        trials.iter().map(|t| t.events() as f64 * t.share(r)).sum()
    };
    let (mut lo, mut hi) = (-30.0f64, 30.0f64);
    let mut lr = r0.max(1e-9).ln().clamp(lo, hi);
    for _ in 0..60 {
        if expected(lr) < canary {
            lo = lr;
        } else {
            hi = lr;
        }
        lr = 0.5 * (lo + hi);
    }
    let r = lr.exp();
    let pearson: f64 = trials
        .iter()
        .map(|t| {
            let (k, share) = (t.events() as f64, t.share(r));
            let var = k * share * (1.0 - share);
            if var > 0.0 {
                (t.canary_events as f64 - k * share).powi(2) / var
            } else {
                0.0
            }
        })
        .sum();
    ((pearson + PRIOR_DF) / (df + PRIOR_DF), df + PRIOR_DF)
}

/// Calendar time for [`spending_test`]: the fraction of `horizon` intervals elapsed at the end
/// of each trial, counted from the first usable one (before it, the canary served nothing and
/// the time is 0); an interval without a usable trial after it still counts.
pub fn calendar(trials: &[Trial], horizon: usize) -> Vec<f64> {
    let horizon = horizon.max(1) as f64;
    let start = trials
        .iter()
        .position(Trial::usable)
        .unwrap_or(trials.len());
    (0..trials.len())
        .map(|i| {
            if i < start {
                0.0
            } else {
                ((i - start + 1) as f64 / horizon).min(1.0)
            }
        })
        .collect()
}

/// Runs the test over `trials`, one per interval since the analysis began, in order; see the
/// module documentation. `times[i]` is the information time at the end of trial `i` (0 to 1,
/// not decreasing; fixed by what is known before the trial's events, e.g. [`calendar`]), 1
/// past its end. `r0` is the ratio of rates the null allows, `alpha` the false-alarm bound in
/// (0, 1), `gamma` the spending shape, `swings` what is known of the events' swings beyond
/// binomial sampling ([`Swings`]). Never panics.
pub fn spending_test(
    trials: &[Trial],
    r0: f64,
    alpha: f64,
    times: &[f64],
    gamma: f64,
    swings: Swings,
) -> SpendingTest {
    let alpha = if alpha.is_finite() {
        alpha.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let r0 = if r0.is_finite() && r0 > 0.0 { r0 } else { 1.0 };
    let mut out = SpendingTest {
        regression: false,
        complete: false,
        p_value: 1.0,
        spent: 0.0,
        decided_at: None,
        expected: 0.0,
        dispersion: 1.0,
        looks: 0,
        canary_events: 0,
        canary_requests: 0,
        primary_events: 0,
        primary_requests: 0,
    };
    let mut lattice = Lattice {
        lo: 0,
        mass: vec![1.0],
        h: 0.0,
    };
    let mut seen: Vec<Trial> = Vec::new();
    // The variance the baseline's swings add (or at most add): κ·μ² per interval.
    let kappa = match swings {
        Swings::Known(kappa)
        | Swings::Measured {
            ceiling: Some(kappa),
        } => kappa.max(0.0),
        Swings::Measured { ceiling: None } => 0.0,
    };
    let mut extra = 0.0f64;
    // The binomial variance of the canary's total under the null (the lattice's).
    let mut null_variance = 0.0f64;
    // Intervals are counted from the canary's first requests, as the calendar counts them.
    let start = trials
        .iter()
        .position(Trial::usable)
        .unwrap_or(trials.len());
    let mut time = 0.0f64;
    // The boundary is checked when the time enters a new 1/LOOKS slice, and once at time 1.
    let (mut last_slot, mut ended) = (-1i64, false);
    for (i, t) in trials.iter().enumerate().skip(start) {
        let look = i - start + 1;
        let now = times.get(i).copied().unwrap_or(1.0);
        time = time.max(if now.is_nan() { 0.0 } else { now.min(1.0) });
        let share = spent_share(time, gamma);
        if time >= 1.0 && !out.regression {
            out.complete = true;
        }
        if !t.usable() {
            continue;
        }
        out.canary_events = out.canary_events.saturating_add(t.canary_events);
        out.canary_requests = out.canary_requests.saturating_add(t.canary_requests);
        out.primary_events = out.primary_events.saturating_add(t.primary_events);
        out.primary_requests = out.primary_requests.saturating_add(t.primary_requests);
        let (k, theta) = (t.events(), t.share(r0));
        let mean = k as f64 * theta;
        if out.regression {
            out.expected += mean;
            continue;
        }
        if k == 0 || ended {
            // Nothing can have moved (the unspent alpha waits for the next events), or no
            // alpha is left.
            out.expected += mean;
            continue;
        }
        let sd = (mean * (1.0 - theta)).sqrt();
        // An increment wider than the lattice may hold: leave exact totals, or coarsen.
        let too_wide = |h: f64| 2.0 * SPREAD * sd / h.max(1.0) > MAX_CELLS as f64;
        if lattice.exact() && too_wide(1.0) {
            lattice.coarsen(out.expected);
        }
        while !lattice.exact() && too_wide(lattice.h) {
            lattice.coarsen(out.expected);
        }
        out.expected += mean;
        null_variance += mean * (1.0 - theta);
        extra += kappa * mean * mean;
        if lattice.exact() {
            let (lo, kernel) = binomial_kernel(k, theta);
            lattice.convolve(lo, &kernel);
        } else {
            let (lo, kernel) = normal_kernel(sd, lattice.h);
            lattice.convolve(lo, &kernel);
        }
        while lattice.mass.len() > MAX_CELLS {
            lattice.coarsen(out.expected);
        }
        seen.push(*t);
        let slot = (time * LOOKS as f64).floor() as i64;
        if slot <= last_slot && time < 1.0 {
            continue;
        }
        last_slot = slot;
        ended = time >= 1.0;
        out.looks += 1;
        let raw = out.canary_events as f64 - out.expected;
        // The dispersion the baseline's swings add (or at most add): each interval's variance
        // grows by κ·μ² (see [`excess_variance`]).
        let widened = 1.0 + extra / out.expected.max(f64::MIN_POSITIVE);
        let excess = match swings {
            Swings::Known(_) => {
                out.dispersion = widened;
                raw / widened.sqrt()
            }
            // Estimated from these intervals: the standardized excess is a t statistic, put on
            // the lattice's normal scale at the same tail probability, and never past the
            // binomial test's; under a ceiling, the normal test at the ceiling when it says
            // more.
            Swings::Measured { ceiling } => {
                let (phi, nu) = dispersion(&seen, r0);
                out.dispersion = phi;
                if null_variance > 0.0 {
                    let binomial = raw / null_variance.sqrt();
                    let mut z = t_as_normal(raw / (phi * null_variance).sqrt(), nu).min(binomial);
                    if ceiling.is_some() {
                        let at_most = raw / (widened * null_variance).sqrt();
                        if at_most > z {
                            z = at_most;
                            out.dispersion = widened;
                        }
                    }
                    z * null_variance.sqrt()
                } else {
                    raw
                }
            }
        };
        let observed = lattice.state(out.expected + excess, out.expected);
        let before = out.spent;
        out.p_value = (before + lattice.tail(observed)).min(1.0);
        let (c, tail) = lattice.critical(alpha * share - before);
        if observed >= c {
            out.regression = true;
            out.complete = false;
            out.decided_at = Some(look);
            out.spent = before + tail;
        } else {
            out.spent = before + tail;
            lattice.absorb(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::analysis::rng::SplitMix as Rng;

    const UNKNOWN: Swings = Swings::Measured { ceiling: None };

    fn binomial(rng: &mut Rng, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| rng.uniform() < p).count() as u64
    }

    /// Intervals of `traffic` requests, the canary's weight 10% more each interval up to 50%.
    fn release(
        rng: &mut Rng,
        traffic: u64,
        canary_rate: f64,
        primary_rate: f64,
        intervals: usize,
    ) -> Vec<Trial> {
        (0..intervals)
            .map(|i| {
                let weight = (0.1 * (i + 1) as f64).min(0.5);
                let nc = (traffic as f64 * weight) as u64;
                let np = traffic - nc;
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
    fn the_spending_shapes_start_at_zero_and_end_at_one() {
        for gamma in [-4.0, -1.0, 0.0, 1.0] {
            assert_eq!(spent_share(0.0, gamma), 0.0);
            assert!((spent_share(1.0, gamma) - 1.0).abs() < 1e-12);
            assert!((spent_share(7.0, gamma) - 1.0).abs() < 1e-12);
            let mid = spent_share(0.5, gamma);
            assert!(mid > 0.0 && mid < 1.0, "{gamma}: {mid}");
        }
        // O'Brien–Fleming-like shapes keep more for the end than Pocock-like ones.
        assert!(spent_share(0.5, -4.0) < spent_share(0.5, 1.0));
        assert_eq!(spent_share(f64::NAN, 1.0), 0.0);
    }

    #[test]
    fn one_look_is_the_exact_conditional_test() {
        // 10 canary of 12 events with a 1:1 split: P(X ≥ 10 | Bin(12, ½)) = 79/4096 ≈ 0.0193,
        // when the counts are known not to swing more than binomially (a steady baseline).
        let t = Trial {
            canary_events: 10,
            canary_requests: 500,
            primary_events: 2,
            primary_requests: 500,
        };
        // Nothing known about the swings, one interval cannot measure them: judged against
        // Student's t with the prior's 2 degrees of freedom, far from decisive.
        let unknown = spending_test(&[t], 1.0, 0.02, &[1.0], GAMMA, UNKNOWN);
        assert!(!unknown.regression && unknown.p_value > 0.05, "{unknown:?}");
        let at = |alpha: f64| spending_test(&[t], 1.0, alpha, &[1.0], GAMMA, Swings::Known(0.0));
        let r = at(0.02);
        assert!(r.regression && r.decided_at == Some(1), "{r:?}");
        assert!((r.p_value - 79.0 / 4096.0).abs() < 1e-12, "{r:?}");
        // The spent alpha is the rejection region's probability: P(X ≥ 10) (X ≥ 9 would be
        // 299/4096 > 0.02).
        assert!((r.spent - 79.0 / 4096.0).abs() < 1e-12, "{r:?}");
        let r = at(0.019);
        assert!(!r.regression && r.complete, "{r:?}");
        assert!((r.spent - 13.0 / 4096.0).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn good_releases_are_flagged_at_most_alpha_of_the_time_however_many_intervals() {
        // Rare events and plentiful ones, with a look after every interval: the share ever
        // flagged stays within alpha plus sampling error (binomial sd of 400 draws at 5% is 1.1
        // points).
        let alpha = 0.05;
        for (traffic, rate, intervals) in [(400u64, 0.01, 30usize), (4_000, 0.05, 12)] {
            let mut rng = Rng(7 + traffic);
            let flagged = (0..400)
                .filter(|_| {
                    let trials = release(&mut rng, traffic, rate, rate, intervals);
                    spending_test(
                        &trials,
                        1.0,
                        alpha,
                        &calendar(&trials, intervals),
                        GAMMA,
                        UNKNOWN,
                    )
                    .regression
                })
                .count();
            assert!(
                flagged <= 400 * 8 / 100,
                "{traffic} requests: {flagged} of 400 good releases flagged"
            );
            // And the boundary is not wasted: a test this close to exact flags some.
            assert!(flagged >= 400 / 100, "{traffic}: only {flagged} flagged");
        }
    }

    #[test]
    fn a_doubled_error_rate_is_found_and_the_decision_sticks() {
        let mut rng = Rng(11);
        let mut found = 0;
        for _ in 0..50 {
            let trials = release(&mut rng, 2000, 0.02, 0.01, 12);
            let t = spending_test(&trials, 1.0, 0.05, &calendar(&trials, 12), GAMMA, UNKNOWN);
            if t.regression {
                found += 1;
                assert!(t.p_value <= t.spent + 1e-12 && t.spent <= 0.05, "{t:?}");
                // More (good) data afterwards never takes the decision back.
                let mut more = trials.clone();
                more.extend(release(&mut rng, 2000, 0.01, 0.01, 10));
                let later = spending_test(&more, 1.0, 0.05, &calendar(&more, 12), GAMMA, UNKNOWN);
                assert!(later.regression && later.decided_at == t.decided_at);
            }
        }
        assert!(found >= 45, "found {found} of 50");
    }

    #[test]
    fn an_improvement_runs_its_course_as_a_pass() {
        let mut rng = Rng(5);
        let trials = release(&mut rng, 2000, 0.005, 0.02, 10);
        let early = spending_test(
            &trials[..4],
            1.0,
            0.05,
            &calendar(&trials[..4], 10),
            GAMMA,
            UNKNOWN,
        );
        assert!(!early.regression && !early.complete, "{early:?}");
        let t = spending_test(&trials, 1.0, 0.05, &calendar(&trials, 10), GAMMA, UNKNOWN);
        assert!(!t.regression && t.complete, "{t:?}");
        assert!(t.p_value > 0.5, "{t:?}");
    }

    #[test]
    fn unusable_and_empty_intervals_spend_time_not_alpha() {
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
            Trial {
                canary_events: 0,
                canary_requests: 100,
                primary_events: 0,
                primary_requests: 900,
            },
        ];
        // Time starts with the canary's first requests: the two unusable trials before them
        // are not part of the analysis.
        let t = spending_test(&bad, 1.0, 0.05, &calendar(&bad, 1), GAMMA, UNKNOWN);
        assert_eq!((t.canary_requests, t.primary_requests), (100, 900));
        assert!(!t.regression && t.complete && t.spent == 0.0, "{t:?}");
        let t = spending_test(&bad, 1.0, 0.05, &calendar(&bad, 2), GAMMA, UNKNOWN);
        assert!(!t.complete, "{t:?}");
        // After them, an interval without requests is still time.
        let mut later = bad.to_vec();
        later.push(bad[0]);
        let t = spending_test(&later, 1.0, 0.05, &calendar(&later, 2), GAMMA, UNKNOWN);
        assert!(t.complete && t.spent == 0.0, "{t:?}");
    }

    #[test]
    fn a_known_excess_variance_widens_the_boundary() {
        // 30 canary events where 15 were expected (a baseline's tiny share): a regression for
        // Poisson-like counts, not when intervals are known to swing (κ = 0.5: each interval's
        // variance 3 + 0.5·3²).
        let trials = vec![
            Trial {
                canary_events: 6,
                canary_requests: 300,
                primary_events: 1000,
                primary_requests: 100_000,
            };
            5
        ];
        let steady = spending_test(
            &trials,
            1.0,
            0.005,
            &calendar(&trials, 5),
            GAMMA,
            Swings::Known(0.0),
        );
        assert!(steady.regression && steady.dispersion == 1.0, "{steady:?}");
        let swinging = spending_test(
            &trials,
            1.0,
            0.005,
            &calendar(&trials, 5),
            GAMMA,
            Swings::Known(0.5),
        );
        assert!(!swinging.regression && swinging.complete, "{swinging:?}");
        assert!((swinging.dispersion - 2.5).abs() < 0.05, "{swinging:?}");
    }

    #[test]
    fn the_dispersion_of_the_intervals_themselves_is_measured_around_their_common_ratio() {
        // A constant ratio (the canary at twice the primary's rate) is not over-dispersion;
        // shares that swing are.
        let trial = |canary: u64| Trial {
            canary_events: canary,
            canary_requests: 100,
            primary_events: 30 - canary,
            primary_requests: 400,
        };
        let steady = vec![trial(10); 6];
        // X² = 0 over 5 degrees of freedom, with 2 pseudo-intervals at 1: (0 + 2)/(5 + 2).
        assert_eq!(dispersion(&steady, 1.0), (2.0 / 7.0, 7.0));
        let swinging: Vec<Trial> = (0..6)
            .map(|i| trial(if i % 2 == 0 { 1 } else { 19 }))
            .collect();
        let (phi, nu) = dispersion(&swinging, 1.0);
        assert!(phi > 5.0 && nu == 7.0, "{phi} {nu}");
        assert_eq!(dispersion(&steady[..1], 1.0), (1.0, PRIOR_DF));
        // Every event in the canary, every interval: no swing to measure, and as many degrees
        // of freedom as any other six intervals.
        let all_canary = vec![trial(30); 6];
        assert_eq!(dispersion(&all_canary, 1.0), (2.0 / 7.0, 7.0));
    }

    #[test]
    fn swings_of_each_deployment_measured_over_a_few_intervals_do_not_raise_false_alarms() {
        // Five one-minute steps, 10% to 50%, slow requests at 10% on both sides, but each
        // deployment's rate moves by its own ±22% (log-normal, κ = 0.05) every minute: the
        // canary's share scatters about four times more than binomial sampling says, and five
        // intervals measure that only roughly. Taking their dispersion as known flagged a
        // fifth of these good releases at alpha 5%.
        let alpha = 0.05;
        let s = 1.05f64.ln().sqrt();
        let mut rng = Rng(2026);
        let swing = |rng: &mut Rng| (s * rng.normal() - s * s / 2.0).exp();
        let flagged = (0..400)
            .filter(|_| {
                let trials: Vec<Trial> = (1..=5)
                    .map(|i| {
                        let nc = 100 * i;
                        let np = 1000 - nc;
                        let (fc, fp) = (swing(&mut rng), swing(&mut rng));
                        Trial {
                            canary_events: binomial(&mut rng, nc, 0.1 * fc),
                            canary_requests: nc,
                            primary_events: binomial(&mut rng, np, 0.1 * fp),
                            primary_requests: np,
                        }
                    })
                    .collect();
                spending_test(&trials, 1.0, alpha, &calendar(&trials, 5), GAMMA, UNKNOWN).regression
            })
            .count();
        assert!(
            flagged <= 400 * 8 / 100,
            "{flagged} of 400 good releases flagged at alpha 5%"
        );
    }

    #[test]
    fn hours_of_short_steps_are_checked_at_a_bounded_number_of_looks() {
        // 10,000 steps (two-second steps over five and a half hours): at most 257 looks, and a
        // doubled rate is still found; equal rates run their course.
        let step = |canary: u64| Trial {
            canary_events: canary,
            canary_requests: 50,
            primary_events: 2,
            primary_requests: 50,
        };
        let run = |canary: u64| {
            let steps = vec![step(canary); 10_000];
            spending_test(
                &steps,
                1.0,
                0.005,
                &calendar(&steps, 10_000),
                GAMMA,
                UNKNOWN,
            )
        };
        let t = run(4);
        assert!(t.regression && t.looks <= LOOKS + 1, "{t:?}");
        let t = run(2);
        assert!(!t.regression && t.complete, "{t:?}");
        assert_eq!(t.looks, LOOKS + 1, "{t:?}");
        assert_eq!(t.canary_events, 20_000);
        assert!((t.expected - 20_000.0).abs() < 1e-6, "{t:?}");
    }

    #[test]
    fn huge_counts_stay_on_a_bounded_lattice_and_still_decide() {
        // Millions of events: the coarse lattice; a 1% excess is found, equal rates are not.
        let trial = |canary: u64| Trial {
            canary_events: canary,
            canary_requests: 10_000_000,
            primary_events: 1_000_000,
            primary_requests: 10_000_000,
        };
        let many = vec![trial(1_010_000); 20];
        let t = spending_test(&many, 1.0, 0.01, &calendar(&many, 20), GAMMA, UNKNOWN);
        assert!(t.regression, "{t:?}");
        let many = vec![trial(1_000_000); 20];
        let t = spending_test(&many, 1.0, 0.01, &calendar(&many, 20), GAMMA, UNKNOWN);
        assert!(!t.regression && t.complete, "{t:?}");
    }
}
