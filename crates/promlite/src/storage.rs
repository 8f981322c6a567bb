//! The in-memory time-series store: one sorted list of `(timestamp ms, value)` per label set.

use std::collections::BTreeMap;

/// A series' label set, `__name__` included.
pub type Labels = BTreeMap<String, String>;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Prometheus' staleness marker: a NaN with this exact bit pattern (`value.StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is a staleness marker (and not an ordinary NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// A sample of a series: timestamp in milliseconds since the Unix epoch, and value.
pub type Point = (i64, f64);

/// Every series, by label set, each with its samples in timestamp order.
#[derive(Debug, Default, Clone)]
pub struct Storage {
    series: BTreeMap<Labels, Vec<Point>>,
}

impl Storage {
    pub fn new() -> Storage {
        Storage::default()
    }

    /// Adds a sample. Samples may arrive in any order; a second sample at the same timestamp
    /// replaces the first.
    pub fn append(&mut self, labels: Labels, t_ms: i64, value: f64) {
        let points = self.series.entry(labels).or_default();
        match points.last() {
            Some(&(last, _)) if last < t_ms => points.push((t_ms, value)),
            None => points.push((t_ms, value)),
            Some(_) => match points.binary_search_by_key(&t_ms, |p| p.0) {
                Ok(i) => points[i].1 = value,
                Err(i) => points.insert(i, (t_ms, value)),
            },
        }
    }

    /// Marks `labels` stale at `t_ms` (as Prometheus does when a series or its target
    /// disappears): from then on, instant selectors do not return it until a new sample comes.
    pub fn append_stale(&mut self, labels: &Labels, t_ms: i64) {
        if self.series.contains_key(labels) {
            self.append(labels.clone(), t_ms, stale_nan());
        }
    }

    /// Drops every sample older than `t_ms`, and the series left empty.
    pub fn drop_before(&mut self, t_ms: i64) {
        self.series.retain(|_, points| {
            let keep_from = points.partition_point(|p| p.0 < t_ms);
            points.drain(..keep_from);
            !points.is_empty()
        });
    }

    /// Every series and its samples (staleness markers included).
    pub fn series(&self) -> impl Iterator<Item = (&Labels, &[Point])> {
        self.series.iter().map(|(l, p)| (l, p.as_slice()))
    }

    /// The number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// Builds a label set from pairs (a convenience for tests and callers).
pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_keep_timestamp_order_and_retention_drops_old_samples() {
        let mut s = Storage::new();
        let l = labels([("__name__", "x")]);
        s.append(l.clone(), 2000, 2.0);
        s.append(l.clone(), 1000, 1.0);
        s.append(l.clone(), 3000, 3.0);
        s.append(l.clone(), 2000, 20.0);
        let points: Vec<Point> = s.series().next().map(|(_, p)| p.to_vec()).unwrap();
        assert_eq!(points, vec![(1000, 1.0), (2000, 20.0), (3000, 3.0)]);
        s.drop_before(2500);
        assert_eq!(s.series().next().map(|(_, p)| p.len()), Some(1));
        s.drop_before(10_000);
        assert!(s.is_empty());
    }

    #[test]
    fn stale_markers_are_not_ordinary_nans() {
        assert!(is_stale(stale_nan()));
        assert!(!is_stale(f64::NAN));
        assert!(!is_stale("NaN".parse::<f64>().unwrap()));
        let mut s = Storage::new();
        s.append_stale(&labels([("__name__", "never")]), 1);
        assert!(s.is_empty(), "no marker for a series that never existed");
    }
}
