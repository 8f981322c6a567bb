//! Canary analysis: the canary against the baseline (the primary), metric by metric, the way
//! Kayenta judges a canary.
//!
//! [`stats`] holds the tests (Mann–Whitney U, two proportions) and [`judge`] turns them into a
//! classification per metric and a score with a verdict for the whole canary. Both are pure: no
//! I/O, no clock, no panics, and everything they return is serde data for JSON reports.

pub mod history;
pub mod judge;
pub mod rng;
pub mod sequential;
pub mod spending;
pub mod stats;

pub use history::{judge_history, HistoryOptions, Interval, Method, Observation};
pub use judge::{
    classify, judge, judge_verdicts, Classification, Direction, JudgeConfig, JudgeVerdict,
    Judgement, Measure, MetricConfig, MetricVerdict, Sample,
};
pub use stats::{mann_whitney_u, median, quantile, two_proportion_z, MannWhitney, TwoProportion};
