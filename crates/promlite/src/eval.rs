//! The evaluator: Prometheus' semantics for the subset [`crate::parser`] accepts.
//!
//! - Instant selectors return, per series, the latest sample in `(t - 5m, t]`, unless that
//!   sample is a staleness marker (see [`crate::storage::is_stale`]).
//! - Range selectors `x[r]` return the samples in `(t - r, t]` (left-open, as Prometheus 3),
//!   staleness markers left out.
//! - `rate`/`increase`/`delta` use Prometheus' extrapolation (`extrapolatedRate`), `irate` the
//!   last two samples; both handle counter resets.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use crate::parser::{
    parse, AggOp, AggregateExpr, BinOp, BinaryExpr, Call, Expr, Func, Grouping, Matching,
    MatrixSelector, ValueType, VectorSelector,
};
use crate::storage::{is_stale, Labels, Point, Storage, METRIC_NAME};
use crate::Error;

/// How far back an instant selector looks for a sample (Prometheus' default lookback delta).
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Prometheus' limit on the points of one series in a range query.
pub const MAX_POINTS: i64 = 11_000;

/// An element of an instant vector (its timestamp is the evaluation time).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: Labels,
    pub value: f64,
}

/// A series of a range vector or of a range query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: Labels,
    pub points: Vec<Point>,
}

/// The result of an expression at one evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    String(String),
}

/// Parses and evaluates `query` at `t_ms` (milliseconds since the Unix epoch).
pub fn eval_instant(storage: &Storage, query: &str, t_ms: i64) -> Result<Value, Error> {
    let expr = parse(query)?;
    Evaluator::new(storage).eval(&expr, t_ms)
}

/// Parses and evaluates `query` at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`, as
/// Prometheus' `query_range` does: one series per label set, the points where it had a value.
pub fn eval_range(
    storage: &Storage,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<Series>, Error> {
    check_range(start_ms, end_ms, step_ms)?;
    let expr = parse(query)?;
    range_of(storage, &expr, start_ms, end_ms, step_ms)
}

/// [`eval_range`] for an expression already parsed.
pub fn eval_range_expr(
    storage: &Storage,
    expr: &Expr,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<Series>, Error> {
    check_range(start_ms, end_ms, step_ms)?;
    range_of(storage, expr, start_ms, end_ms, step_ms)
}

/// The range and step a range query may have.
fn check_range(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<(), Error> {
    if step_ms <= 0 {
        return Err(Error::BadData(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .to_string(),
        ));
    }
    if end_ms < start_ms {
        return Err(Error::BadData(
            "end timestamp must not be before start time".to_string(),
        ));
    }
    let too_many = match end_ms.checked_sub(start_ms) {
        Some(span) => span / step_ms > MAX_POINTS,
        None => true,
    };
    if too_many {
        return Err(Error::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                .to_string(),
        ));
    }
    Ok(())
}

fn range_of(
    storage: &Storage,
    expr: &Expr,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Vec<Series>, Error> {
    let t = expr.value_type();
    if !matches!(t, ValueType::Scalar | ValueType::Vector) {
        return Err(Error::BadData(format!(
            "invalid expression type \"{t}\" for range query, must be Scalar or instant Vector"
        )));
    }
    let ev = Evaluator::new(storage);
    let mut out: BTreeMap<Labels, Vec<Point>> = BTreeMap::new();
    let mut ts = start_ms;
    while ts <= end_ms {
        match ev.eval(expr, ts)? {
            Value::Scalar(v) => out.entry(Labels::new()).or_default().push((ts, v)),
            Value::Vector(samples) => {
                for s in samples {
                    out.entry(s.metric).or_default().push((ts, s.value));
                }
            }
            _ => return Err(Error::Execution("unexpected result type".to_string())),
        }
        match ts.checked_add(step_ms) {
            Some(next) => ts = next,
            None => break,
        }
    }
    Ok(out
        .into_iter()
        .map(|(metric, points)| Series { metric, points })
        .collect())
}

type Selected<'a> = Rc<Vec<(&'a Labels, &'a [Point])>>;

/// Evaluates expressions against one storage snapshot; remembers which series each selector
/// selects, so a range query matches labels once rather than at every step.
pub struct Evaluator<'a> {
    storage: &'a Storage,
    cache: RefCell<HashMap<usize, Selected<'a>>>,
}

impl<'a> Evaluator<'a> {
    pub fn new(storage: &'a Storage) -> Evaluator<'a> {
        Evaluator {
            storage,
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn select(&self, vs: &VectorSelector) -> Selected<'a> {
        let key = vs as *const VectorSelector as usize;
        if let Some(hit) = self.cache.borrow().get(&key) {
            return Rc::clone(hit);
        }
        let selected: Vec<(&'a Labels, &'a [Point])> = self
            .storage
            .series()
            .filter(|(labels, _)| {
                vs.matchers
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).map(String::as_str).unwrap_or("")))
            })
            .collect();
        let selected = Rc::new(selected);
        self.cache.borrow_mut().insert(key, Rc::clone(&selected));
        selected
    }

    /// Evaluates `expr` at `t` (ms).
    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, Error> {
        match expr {
            Expr::Number(n) => Ok(Value::Scalar(*n)),
            Expr::String(s) => Ok(Value::String(s.clone())),
            Expr::Paren(e) => self.eval(e, t),
            Expr::Neg(e) => match self.eval(e, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(samples) => unique(
                    samples
                        .into_iter()
                        .map(|s| Sample {
                            metric: drop_name(s.metric),
                            value: -s.value,
                        })
                        .collect(),
                ),
                _ => Err(type_error("unary minus")),
            },
            Expr::Vector(vs) => Ok(Value::Vector(self.instant(vs, t))),
            Expr::Matrix(ms) => Ok(Value::Matrix(
                self.range(ms, t)
                    .into_iter()
                    .map(|(labels, points)| Series {
                        metric: labels.clone(),
                        points,
                    })
                    .collect(),
            )),
            Expr::Binary(b) => self.binary(b, t),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Call(c) => self.call(c, t),
        }
    }

    fn instant(&self, vs: &VectorSelector, t: i64) -> Vec<Sample> {
        let t = t.saturating_sub(vs.offset_ms);
        let mut out = Vec::new();
        for (labels, points) in self.select(vs).iter() {
            let end = points.partition_point(|p| p.0 <= t);
            let Some(&(ts, v)) = end.checked_sub(1).and_then(|i| points.get(i)) else {
                continue;
            };
            if ts > t.saturating_sub(LOOKBACK_MS) && !is_stale(v) {
                out.push(Sample {
                    metric: (*labels).clone(),
                    value: v,
                });
            }
        }
        out
    }

    /// The non-stale samples in `(t - range, t]` of every selected series that has any.
    fn range(&self, ms: &MatrixSelector, t: i64) -> Vec<(&'a Labels, Vec<Point>)> {
        let (start_t, end_t) = window(ms, t);
        let mut out = Vec::new();
        for (labels, points) in self.select(&ms.selector).iter() {
            let lo = points.partition_point(|p| p.0 <= start_t);
            let hi = points.partition_point(|p| p.0 <= end_t);
            let window: Vec<Point> = points[lo..hi]
                .iter()
                .filter(|p| !is_stale(p.1))
                .copied()
                .collect();
            if !window.is_empty() {
                out.push((*labels, window));
            }
        }
        out
    }

    fn scalar_arg(&self, e: &Expr, t: i64) -> Result<f64, Error> {
        match self.eval(e, t)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(type_error("a scalar argument")),
        }
    }

    fn vector_arg(&self, e: &Expr, t: i64) -> Result<Vec<Sample>, Error> {
        match self.eval(e, t)? {
            Value::Vector(v) => Ok(v),
            _ => Err(type_error("an instant vector argument")),
        }
    }

    fn call(&self, c: &Call, t: i64) -> Result<Value, Error> {
        let arg = |i: usize| c.args.get(i).ok_or_else(|| type_error("an argument"));
        match c.func {
            Func::Time => Ok(Value::Scalar(t as f64 / 1000.0)),
            Func::Vector => Ok(Value::Vector(vec![Sample {
                metric: Labels::new(),
                value: self.scalar_arg(arg(0)?, t)?,
            }])),
            Func::Scalar => {
                let v = self.vector_arg(arg(0)?, t)?;
                Ok(Value::Scalar(if v.len() == 1 {
                    v[0].value
                } else {
                    f64::NAN
                }))
            }
            Func::Abs => self.map(arg(0)?, t, f64::abs),
            Func::Ceil => self.map(arg(0)?, t, f64::ceil),
            Func::Floor => self.map(arg(0)?, t, f64::floor),
            Func::Sqrt => self.map(arg(0)?, t, f64::sqrt),
            Func::Exp => self.map(arg(0)?, t, f64::exp),
            Func::Ln => self.map(arg(0)?, t, f64::ln),
            Func::Log2 => self.map(arg(0)?, t, f64::log2),
            Func::Log10 => self.map(arg(0)?, t, f64::log10),
            Func::ClampMin => {
                let min = self.scalar_arg(arg(1)?, t)?;
                self.map(arg(0)?, t, |v| go_max(v, min))
            }
            Func::ClampMax => {
                let max = self.scalar_arg(arg(1)?, t)?;
                self.map(arg(0)?, t, |v| go_min(v, max))
            }
            Func::Clamp => {
                let min = self.scalar_arg(arg(1)?, t)?;
                let max = self.scalar_arg(arg(2)?, t)?;
                if max < min {
                    return Ok(Value::Vector(Vec::new()));
                }
                self.map(arg(0)?, t, |v| go_max(min, go_min(max, v)))
            }
            Func::HistogramQuantile => {
                let q = self.scalar_arg(arg(0)?, t)?;
                let v = self.vector_arg(arg(1)?, t)?;
                Ok(Value::Vector(histogram_quantile(q, v)))
            }
            Func::Rate
            | Func::Irate
            | Func::Increase
            | Func::Delta
            | Func::SumOverTime
            | Func::AvgOverTime
            | Func::MaxOverTime
            | Func::MinOverTime
            | Func::CountOverTime
            | Func::LastOverTime => {
                let ms =
                    matrix_arg(arg(0)?).ok_or_else(|| type_error("a range vector selector"))?;
                let (start_t, end_t) = window(ms, t);
                let mut out = Vec::new();
                for (labels, points) in self.range(ms, t) {
                    let value = match c.func {
                        Func::Rate => extrapolated_rate(&points, start_t, end_t, true, true),
                        Func::Increase => extrapolated_rate(&points, start_t, end_t, true, false),
                        Func::Delta => extrapolated_rate(&points, start_t, end_t, false, false),
                        Func::Irate => instant_rate(&points),
                        Func::SumOverTime => Some(kahan_sum(points.iter().map(|p| p.1))),
                        Func::AvgOverTime => {
                            Some(kahan_sum(points.iter().map(|p| p.1)) / points.len() as f64)
                        }
                        Func::MaxOverTime => points.iter().map(|p| p.1).reduce(|acc, v| {
                            if v > acc || acc.is_nan() {
                                v
                            } else {
                                acc
                            }
                        }),
                        Func::MinOverTime => points.iter().map(|p| p.1).reduce(|acc, v| {
                            if v < acc || acc.is_nan() {
                                v
                            } else {
                                acc
                            }
                        }),
                        Func::CountOverTime => Some(points.len() as f64),
                        _ => points.last().map(|p| p.1),
                    };
                    if let Some(value) = value {
                        let metric = if c.func == Func::LastOverTime {
                            labels.clone()
                        } else {
                            drop_name(labels.clone())
                        };
                        out.push(Sample { metric, value });
                    }
                }
                unique(out)
            }
        }
    }

    /// Applies `f` to every element of an instant vector, dropping the metric name.
    fn map(&self, e: &Expr, t: i64, f: impl Fn(f64) -> f64) -> Result<Value, Error> {
        let v = self.vector_arg(e, t)?;
        unique(
            v.into_iter()
                .map(|s| Sample {
                    metric: drop_name(s.metric),
                    value: f(s.value),
                })
                .collect(),
        )
    }

    fn aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Value, Error> {
        let samples = self.vector_arg(&a.expr, t)?;
        struct Group {
            sum: f64,
            comp: f64,
            count: usize,
            min: f64,
            max: f64,
        }
        let mut groups: BTreeMap<Labels, Group> = BTreeMap::new();
        for s in samples {
            let key: Labels = match &a.grouping {
                Grouping::None => Labels::new(),
                Grouping::By(names) => s
                    .metric
                    .into_iter()
                    .filter(|(k, _)| names.contains(k))
                    .collect(),
                Grouping::Without(names) => s
                    .metric
                    .into_iter()
                    .filter(|(k, _)| k != METRIC_NAME && !names.contains(k))
                    .collect(),
            };
            let v = s.value;
            let g = groups.entry(key).or_insert(Group {
                sum: 0.0,
                comp: 0.0,
                count: 0,
                min: v,
                max: v,
            });
            (g.sum, g.comp) = kahan_inc(v, g.sum, g.comp);
            g.count += 1;
            if v > g.max || g.max.is_nan() {
                g.max = v;
            }
            if v < g.min || g.min.is_nan() {
                g.min = v;
            }
        }
        Ok(Value::Vector(
            groups
                .into_iter()
                .map(|(metric, g)| {
                    let sum = if g.sum.is_infinite() {
                        g.sum
                    } else {
                        g.sum + g.comp
                    };
                    let value = match a.op {
                        AggOp::Sum => sum,
                        AggOp::Avg => sum / g.count as f64,
                        AggOp::Count => g.count as f64,
                        AggOp::Min => g.min,
                        AggOp::Max => g.max,
                    };
                    Sample { metric, value }
                })
                .collect(),
        ))
    }

    fn binary(&self, b: &BinaryExpr, t: i64) -> Result<Value, Error> {
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let op = b.op;
        match (lhs, rhs) {
            (Value::Scalar(l), Value::Scalar(r)) => {
                let (v, keep) = elem_binop(op, l, r);
                Ok(Value::Scalar(if op.is_comparison() {
                    bool_value(keep)
                } else {
                    v
                }))
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                unique(vector_scalar(op, v, s, false, b.return_bool))
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                unique(vector_scalar(op, v, s, true, b.return_bool))
            }
            (Value::Vector(l), Value::Vector(r)) => match op {
                BinOp::And | BinOp::Or | BinOp::Unless => {
                    Ok(Value::Vector(set_op(op, l, r, b.matching.as_ref())))
                }
                _ => unique(vector_vector(op, l, r, b.matching.as_ref(), b.return_bool)?),
            },
            _ => Err(type_error("binary expression operands")),
        }
    }
}

fn type_error(what: &str) -> Error {
    Error::Execution(format!("unexpected value type for {what}"))
}

/// A range selector's window `(start, end]` at `t`.
fn window(ms: &MatrixSelector, t: i64) -> (i64, i64) {
    let end = t.saturating_sub(ms.selector.offset_ms);
    (end.saturating_sub(ms.range_ms), end)
}

fn matrix_arg(e: &Expr) -> Option<&MatrixSelector> {
    match e {
        Expr::Matrix(ms) => Some(ms),
        Expr::Paren(inner) => matrix_arg(inner),
        _ => None,
    }
}

fn drop_name(mut labels: Labels) -> Labels {
    labels.remove(METRIC_NAME);
    labels
}

/// Prometheus refuses a vector with two elements of the same label set (after e.g. a function
/// dropped the metric names of `{__name__=~"a|b"}`).
fn unique(samples: Vec<Sample>) -> Result<Value, Error> {
    let mut seen = HashSet::with_capacity(samples.len());
    for s in &samples {
        if !seen.insert(&s.metric) {
            return Err(Error::Execution(
                "vector cannot contain metrics with the same labelset".to_string(),
            ));
        }
    }
    Ok(Value::Vector(samples))
}

/// Go's `math.Max`: NaN if either is NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Neumaier's compensated summation step, as Prometheus' `kahanSumInc`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn kahan_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The value of `l op r` and, for comparisons, whether the element is kept.
fn elem_binop(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (f64::NAN, false),
    }
}

fn vector_scalar(op: BinOp, v: Vec<Sample>, s: f64, swap: bool, return_bool: bool) -> Vec<Sample> {
    let drop = !op.is_comparison() || return_bool;
    let mut out = Vec::with_capacity(v.len());
    for sample in v {
        let (l, r) = if swap {
            (s, sample.value)
        } else {
            (sample.value, s)
        };
        let (mut value, keep) = elem_binop(op, l, r);
        if op.is_comparison() {
            // A filter keeps the vector's value, on whichever side it is.
            value = sample.value;
        }
        let value = match (return_bool, keep) {
            (true, k) => bool_value(k),
            (false, true) => value,
            (false, false) => continue,
        };
        let metric = if drop {
            drop_name(sample.metric)
        } else {
            sample.metric
        };
        out.push(Sample { metric, value });
    }
    out
}

/// The label values two elements must share to match.
fn signature(labels: &Labels, matching: Option<&Matching>) -> String {
    let mut sig = String::new();
    match matching {
        Some(Matching::On(names)) => {
            let mut names: Vec<&String> = names.iter().collect();
            names.sort();
            names.dedup();
            for n in names {
                sig.push_str(n);
                sig.push('\u{fe}');
                sig.push_str(labels.get(n).map(String::as_str).unwrap_or(""));
                sig.push('\u{ff}');
            }
        }
        other => {
            let ignored: &[String] = match other {
                Some(Matching::Ignoring(names)) => names,
                _ => &[],
            };
            for (k, v) in labels {
                if k == METRIC_NAME || ignored.contains(k) {
                    continue;
                }
                sig.push_str(k);
                sig.push('\u{fe}');
                sig.push_str(v);
                sig.push('\u{ff}');
            }
        }
    }
    sig
}

fn show_labels(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn vector_vector(
    op: BinOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    matching: Option<&Matching>,
    return_bool: bool,
) -> Result<Vec<Sample>, Error> {
    let mut right: HashMap<String, &Sample> = HashMap::with_capacity(rhs.len());
    for r in &rhs {
        let sig = signature(&r.metric, matching);
        if let Some(prev) = right.insert(sig, r) {
            return Err(Error::Execution(format!(
                "found duplicate series for the match group on the right hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                show_labels(&prev.metric),
                show_labels(&r.metric)
            )));
        }
    }
    let mut matched: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for l in lhs {
        let sig = signature(&l.metric, matching);
        let Some(r) = right.get(&sig) else {
            continue;
        };
        let (value, keep) = elem_binop(op, l.value, r.value);
        let value = match (return_bool, keep) {
            (true, k) => bool_value(k),
            (false, true) => value,
            (false, false) => continue,
        };
        if !matched.insert(sig) {
            return Err(Error::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    .to_string(),
            ));
        }
        let mut metric = l.metric;
        if !op.is_comparison() || return_bool {
            metric.remove(METRIC_NAME);
        }
        match matching {
            Some(Matching::On(names)) => metric.retain(|k, _| names.contains(k)),
            Some(Matching::Ignoring(names)) => metric.retain(|k, _| !names.contains(k)),
            None => {}
        }
        out.push(Sample { metric, value });
    }
    Ok(out)
}

fn set_op(
    op: BinOp,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    matching: Option<&Matching>,
) -> Vec<Sample> {
    match op {
        BinOp::And => {
            let right: HashSet<String> =
                rhs.iter().map(|r| signature(&r.metric, matching)).collect();
            lhs.into_iter()
                .filter(|l| right.contains(&signature(&l.metric, matching)))
                .collect()
        }
        BinOp::Unless => {
            let right: HashSet<String> =
                rhs.iter().map(|r| signature(&r.metric, matching)).collect();
            lhs.into_iter()
                .filter(|l| !right.contains(&signature(&l.metric, matching)))
                .collect()
        }
        _ => {
            let left: HashSet<String> =
                lhs.iter().map(|l| signature(&l.metric, matching)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|r| !left.contains(&signature(&r.metric, matching))),
            );
            out
        }
    }
}

/// Prometheus' `extrapolatedRate`: the increase between the first and last sample in the window
/// (counter resets added back), extrapolated towards the window's ends: all the way to an end
/// when the first/last sample is within 1.1 average sample intervals of it, else by half an
/// average interval; for counters never below zero. `None` with fewer than two samples.
pub fn extrapolated_rate(
    points: &[Point],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut prev = first_v;
        for &(_, v) in &points[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    // In f64: the window's ends may be far away (a huge range or offset saturates them).
    let mut to_start = (first_t as f64 - range_start as f64) / 1000.0;
    let mut to_end = (range_end as f64 - last_t as f64) / 1000.0;
    let sampled = (last_t as f64 - first_t as f64) / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= (range_end as f64 - range_start as f64) / 1000.0;
    }
    Some(result * factor)
}

/// `irate`: the per-second increase between the last two samples (a reset counts from zero).
fn instant_rate(points: &[Point]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev_t, prev_v) = points[points.len() - 2];
    let (last_t, last_v) = points[points.len() - 1];
    let increase = if last_v < prev_v {
        last_v
    } else {
        last_v - prev_v
    };
    if last_t == prev_t {
        return None;
    }
    Some(increase / ((last_t as f64 - prev_t as f64) / 1000.0))
}

/// `histogram_quantile` over classic buckets: the elements are grouped by their labels without
/// `le` (and the metric name), and each group's quantile interpolated linearly in its bucket.
fn histogram_quantile(q: f64, samples: Vec<Sample>) -> Vec<Sample> {
    let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        let Some(le) = s
            .metric
            .get("le")
            .and_then(|le| le.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let mut key = s.metric;
        key.remove("le");
        key.remove(METRIC_NAME);
        groups.entry(key).or_default().push((le, s.value));
    }
    groups
        .into_iter()
        .map(|(metric, buckets)| Sample {
            metric,
            value: bucket_quantile(q, buckets),
        })
        .collect()
}

/// Prometheus' `bucketQuantile` for `(upper bound, cumulative count)` buckets.
pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    match buckets.last() {
        Some(&(le, _)) if le == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Buckets of the same bound (from several series) are added up.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for (le, count) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == le => last.1 += count,
            _ => merged.push((le, count)),
        }
    }
    // Cumulative counts that go down (scrapes of buckets are not atomic) are evened out.
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 < max {
            b.1 = max;
        } else {
            max = b.1;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let n = merged.len();
    let observations = merged[n - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..n - 1].partition_point(|b| b.1 < rank);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::labels;

    const S: i64 = 1000;

    fn vector(storage: &Storage, q: &str, t: i64) -> Vec<Sample> {
        match eval_instant(storage, q, t) {
            Ok(Value::Vector(v)) => v,
            other => panic!("{q}: {other:?}"),
        }
    }

    /// The value of a one-element vector.
    fn one(storage: &Storage, q: &str, t: i64) -> f64 {
        let v = vector(storage, q, t);
        assert_eq!(v.len(), 1, "{q}: {v:?}");
        v[0].value
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn counter(storage: &mut Storage, l: &[(&str, &str)], points: &[(i64, f64)]) {
        for &(t, v) in points {
            storage.append(labels(l.iter().copied()), t, v);
        }
    }

    #[test]
    fn rate_extrapolates_to_the_window_ends() {
        let mut s = Storage::new();
        // Every 10 s, +10 per scrape, from 10 at t=10 s to 60 at t=60 s.
        let pts: Vec<(i64, f64)> = (1..=6).map(|i| (i * 10 * S, i as f64 * 10.0)).collect();
        counter(&mut s, &[("__name__", "c")], &pts);
        // Window (0, 60 s]: first sample 10 s after the start (< 1.1 * 10 s), so extrapolated
        // to the start, but not below zero: zero point is 10 s before the first sample too:
        // increase 50 over 50 s sampled, extrapolated to 60 s -> 60; rate 1/s.
        assert!(close(one(&s, "increase(c[1m])", 60 * S), 60.0));
        assert!(close(one(&s, "rate(c[1m])", 60 * S), 1.0));
        // Window (5 s, 65 s]: 5 s to both ends, both within the threshold: 50 * 60/50 = 60.
        assert!(close(one(&s, "increase(c[1m])", 65 * S), 60.0));
        // A window the series does not cover: (30 s, 90 s] holds 40, 50, 60 (t=40..60).
        // Sampled 20 s, average 10 s; start gap 10 s < 11 s -> extrapolated fully; end gap 30 s
        // >= 11 s -> only half an interval (5 s). Increase 20 * (20 + 10 + 5) / 20 = 35.
        assert!(close(one(&s, "increase(c[1m])", 90 * S), 35.0));
        assert!(close(one(&s, "rate(c[1m])", 90 * S), 35.0 / 60.0));
        // The zero point limits extrapolation at the start (a counter that starts low).
        let mut z = Storage::new();
        counter(
            &mut z,
            &[("__name__", "z")],
            &[(20 * S, 1.0), (30 * S, 11.0)],
        );
        // Window (0, 30 s]: start gap 20 s >= 11 s -> 5 s; zero point 10 * 1/10 = 1 s before
        // the first sample < 5 s -> 1 s. End gap 0. Increase 10 * (10 + 1) / 10 = 11.
        assert!(close(one(&z, "increase(z[30s])", 30 * S), 11.0));
        // One sample is not enough.
        assert!(vector(&z, "rate(z[5s])", 30 * S).is_empty());
        // The left end is open: (20 s, 30 s] holds only the sample at 30 s.
        assert!(vector(&z, "rate(z[10s])", 30 * S).is_empty());
    }

    #[test]
    fn rate_handles_counter_resets() {
        let mut s = Storage::new();
        // 10, 20, 30, reset to 5, 15 at 10 s intervals.
        counter(
            &mut s,
            &[("__name__", "c"), ("job", "a")],
            &[
                (10 * S, 10.0),
                (20 * S, 20.0),
                (30 * S, 30.0),
                (40 * S, 5.0),
                (50 * S, 15.0),
            ],
        );
        // last - first = 5; plus 30 at the reset = 35 over the sampled 40 s. Window (0, 50 s]:
        // start gap 10 s < 11 s; zero point: 40 * 10/35 = 11.43 s > 10 s, so 10 s; end gap 0.
        // 35 * 50/40 = 43.75.
        assert!(close(one(&s, "increase(c[50s])", 50 * S), 43.75));
        assert!(close(one(&s, "rate(c[50s])", 50 * S), 43.75 / 50.0));
        // irate after the reset: 5 -> 15 is +10 in 10 s; at the reset itself, 5 from zero.
        assert!(close(one(&s, "irate(c[1m])", 50 * S), 1.0));
        assert!(close(one(&s, "irate(c[1m])", 40 * S), 0.5));
        // delta is not a counter function: last - first, extrapolated: 5 * 50/40.
        assert!(close(one(&s, "delta(c[50s])", 50 * S), 6.25));
        // Functions drop the metric name, keep the other labels.
        let v = vector(&s, "rate(c[50s])", 50 * S);
        assert_eq!(v[0].metric, labels([("job", "a")]));
    }

    #[test]
    fn over_time_functions() {
        let mut s = Storage::new();
        counter(
            &mut s,
            &[("__name__", "g")],
            &[
                (10 * S, 3.0),
                (20 * S, 1.0),
                (30 * S, 8.0),
                (40 * S, f64::NAN),
            ],
        );
        assert_eq!(one(&s, "sum_over_time(g[30s])", 30 * S), 12.0);
        assert_eq!(one(&s, "avg_over_time(g[30s])", 30 * S), 4.0);
        assert_eq!(one(&s, "max_over_time(g[30s])", 30 * S), 8.0);
        assert_eq!(one(&s, "min_over_time(g[30s])", 30 * S), 1.0);
        assert_eq!(one(&s, "count_over_time(g[30s])", 30 * S), 3.0);
        assert_eq!(
            one(&s, "max_over_time(g[1m])", 40 * S),
            8.0,
            "NaN only if all NaN"
        );
        assert_eq!(
            vector(&s, "last_over_time(g[30s])", 30 * S)[0].metric,
            labels([("__name__", "g")])
        );
    }

    fn bucket_storage() -> Storage {
        let mut s = Storage::new();
        // Cumulative bucket counts for one pod at t=10 s.
        for (le, count) in [("0.1", 50.0), ("0.5", 90.0), ("1", 100.0), ("+Inf", 100.0)] {
            s.append(
                labels([("__name__", "h_bucket"), ("le", le), ("pod", "a")]),
                10 * S,
                count,
            );
        }
        // A second pod whose +Inf bucket holds observations above the last bound.
        for (le, count) in [("0.1", 0.0), ("0.5", 0.0), ("1", 10.0), ("+Inf", 20.0)] {
            s.append(
                labels([("__name__", "h_bucket"), ("le", le), ("pod", "b")]),
                10 * S,
                count,
            );
        }
        s
    }

    #[test]
    fn histogram_quantile_interpolates_in_buckets() {
        let s = bucket_storage();
        let v = vector(&s, "histogram_quantile(0.5, h_bucket)", 10 * S);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].metric,
            labels([("pod", "a")]),
            "le and the name are dropped"
        );
        // Pod a: rank 50 falls in the first bucket (count 50): 0 + 0.1 * 50/50 = 0.1.
        assert!(close(v[0].value, 0.1));
        // Pod b: rank 10 in bucket le=1 (count 10, previous 0): 0.5 + 0.5 * 10/10 = 1.
        assert!(close(v[1].value, 1.0));
        // A quantile in the first bucket: rank 25 of 50 -> 0.05.
        let a = one(&s, "histogram_quantile(0.25, h_bucket{pod=\"a\"})", 10 * S);
        assert!(close(a, 0.05));
        // Pod a, 0.9: rank 90 is exactly the le=0.5 bucket's count: 0.1 + 0.4 * 40/40 = 0.5.
        assert!(close(
            one(&s, "histogram_quantile(0.9, h_bucket{pod=\"a\"})", 10 * S),
            0.5
        ));
        // Pod a, 0.95: rank 95 in le=1 (count 100, previous 90): 0.5 + 0.5 * 5/10 = 0.75.
        assert!(close(
            one(&s, "histogram_quantile(0.95, h_bucket{pod=\"a\"})", 10 * S),
            0.75
        ));
        // Pod b, 0.99: rank 19.8 is in the +Inf bucket: the largest finite bound, 1.
        assert_eq!(
            one(&s, "histogram_quantile(0.99, h_bucket{pod=\"b\"})", 10 * S),
            1.0
        );
        // Summed by le: buckets 50, 90, 110, 120; 0.99 -> rank 118.8 in +Inf -> 1.
        // 0.8 -> rank 96 in le=1 (110, previous 90): 0.5 + 0.5 * 6/20 = 0.65.
        let q = "histogram_quantile(0.8, sum(h_bucket) by (le))";
        let v = vector(&s, q, 10 * S);
        assert_eq!(v[0].metric, Labels::new());
        assert!(close(v[0].value, 0.65));
        // φ out of range and invalid histograms.
        assert_eq!(
            one(&s, "histogram_quantile(1.5, h_bucket{pod=\"a\"})", 10 * S),
            f64::INFINITY
        );
        assert_eq!(
            one(&s, "histogram_quantile(-1, h_bucket{pod=\"a\"})", 10 * S),
            f64::NEG_INFINITY
        );
        assert!(one(
            &s,
            "histogram_quantile(0.5, h_bucket{pod=\"a\",le!=\"+Inf\"})",
            10 * S
        )
        .is_nan());
        assert!(bucket_quantile(0.5, vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert!(bucket_quantile(0.5, vec![(f64::INFINITY, 3.0)]).is_nan());
        // Non-monotonic counts are evened out: (1, 10), (2, 8) -> (2, 10).
        assert!(close(
            bucket_quantile(0.5, vec![(1.0, 10.0), (2.0, 8.0), (f64::INFINITY, 10.0)]),
            0.5
        ));
        // Nothing to compute: no element at all.
        assert!(vector(&s, "histogram_quantile(0.5, nothing)", 10 * S).is_empty());
    }

    fn pods() -> Storage {
        let mut s = Storage::new();
        for (pod, status, v) in [
            ("podinfo-7d9f8-x2x4b", "200", 90.0),
            ("podinfo-7d9f8-x2x4b", "500", 10.0),
            ("podinfo-primary-7d9f8-x2x4b", "200", 1000.0),
            ("podinfo-primary-7d9f8-x2x4b", "503", 1000.0),
        ] {
            s.append(
                labels([
                    ("__name__", "req"),
                    ("kubernetes_namespace", "prod"),
                    ("kubernetes_pod_name", pod),
                    ("status", status),
                ]),
                10 * S,
                v,
            );
        }
        s
    }

    #[test]
    fn regex_matchers_are_anchored() {
        let s = pods();
        let q = r#"sum(req{kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"})"#;
        assert_eq!(
            one(&s, q, 10 * S),
            100.0,
            "the primary's pod does not match"
        );
        let q = r#"sum(req{kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*",})"#;
        assert_eq!(one(&s, q, 10 * S), 90.0);
        assert_eq!(one(&s, r#"count(req{status=~"5.."})"#, 10 * S), 2.0);
        assert!(
            vector(&s, r#"req{status=~"5"}"#, 10 * S).is_empty(),
            "anchored: 5 is not 500"
        );
        assert!(vector(&s, r#"count(req{status=~"5"})"#, 10 * S).is_empty());
    }

    #[test]
    fn empty_matching_matchers_match_missing_labels() {
        let mut s = Storage::new();
        s.append(labels([("__name__", "x"), ("canary", "true")]), S, 1.0);
        s.append(labels([("__name__", "x")]), S, 2.0);
        assert_eq!(one(&s, r#"x{canary!=""}"#, S), 1.0);
        assert_eq!(one(&s, r#"x{canary=""}"#, S), 2.0);
        assert_eq!(one(&s, r#"x{canary=~"|false"}"#, S), 2.0);
        assert_eq!(vector(&s, r#"x{canary=~".*"}"#, S).len(), 2);
        assert_eq!(one(&s, r#"{__name__="x",canary=~"t.*"}"#, S), 1.0);
    }

    #[test]
    fn aggregations_by_and_without() {
        let s = pods();
        let by = vector(&s, "sum by (kubernetes_pod_name) (req)", 10 * S);
        assert_eq!(by.len(), 2);
        assert_eq!(
            by[0].metric,
            labels([("kubernetes_pod_name", "podinfo-7d9f8-x2x4b")])
        );
        assert_eq!(by[0].value, 100.0);
        assert_eq!(by[1].value, 2000.0);
        let suffix = vector(&s, "sum(req) by (kubernetes_pod_name)", 10 * S);
        assert_eq!(by, suffix);
        let without = vector(&s, "sum without (status) (req)", 10 * S);
        assert_eq!(without.len(), 2);
        assert_eq!(
            without[0].metric,
            labels([
                ("kubernetes_namespace", "prod"),
                ("kubernetes_pod_name", "podinfo-7d9f8-x2x4b")
            ]),
            "without drops the metric name"
        );
        assert_eq!(one(&s, "avg(req)", 10 * S), 2100.0 / 4.0);
        assert_eq!(one(&s, "min(req)", 10 * S), 10.0);
        assert_eq!(one(&s, "max(req)", 10 * S), 1000.0);
        assert_eq!(one(&s, "count(req)", 10 * S), 4.0);
        assert_eq!(vector(&s, "count by (status) (req)", 10 * S).len(), 3);
        assert!(
            vector(&s, "sum(nothing)", 10 * S).is_empty(),
            "no group, no element"
        );
    }

    #[test]
    fn vector_vector_matching() {
        let mut s = Storage::new();
        for (pod, ok, all) in [("a", 9.0, 10.0), ("b", 3.0, 4.0), ("c", 1.0, 0.0)] {
            s.append(labels([("__name__", "ok"), ("pod", pod)]), S, ok);
            s.append(labels([("__name__", "all"), ("pod", pod)]), S, all);
        }
        s.append(labels([("__name__", "all"), ("pod", "d")]), S, 1.0);
        let v = vector(&s, "ok / all", S);
        assert_eq!(v.len(), 3, "d has no match");
        assert_eq!(v[0].metric, labels([("pod", "a")]));
        assert_eq!(v[0].value, 0.9);
        assert_eq!(v[1].value, 0.75);
        assert_eq!(v[2].value, f64::INFINITY, "1/0");
        assert!(one(&s, "(ok - 1) / all{pod=\"c\"}", S).is_nan(), "0/0");
        // on() and ignoring() and the labels they leave.
        let mut t = Storage::new();
        t.append(
            labels([("__name__", "x"), ("pod", "a"), ("code", "200")]),
            S,
            6.0,
        );
        t.append(labels([("__name__", "y"), ("pod", "a")]), S, 3.0);
        let on = vector(&t, "x / on(pod) y", S);
        assert_eq!(
            on,
            vec![Sample {
                metric: labels([("pod", "a")]),
                value: 2.0
            }]
        );
        let ign = vector(&t, "x / ignoring(code) y", S);
        assert_eq!(ign, on);
        assert!(vector(&t, "x / y", S).is_empty(), "code differs");
        // Comparisons filter, and keep the name; bool gives 0/1 without it.
        assert_eq!(vector(&s, "ok > 2", S).len(), 2);
        assert_eq!(
            vector(&s, "ok > 2", S)[0].metric,
            labels([("__name__", "ok"), ("pod", "a")])
        );
        assert_eq!(
            vector(&s, "2 < ok", S)[0].value,
            9.0,
            "the vector's value, not the scalar"
        );
        let b = vector(&s, "ok > bool 2", S);
        assert_eq!(
            b.iter().map(|x| x.value).collect::<Vec<_>>(),
            vec![1.0, 1.0, 0.0]
        );
        assert_eq!(b[0].metric, labels([("pod", "a")]));
        assert_eq!(vector(&s, "ok >= all", S).len(), 1);
        assert_eq!(vector(&s, "ok != bool all", S).len(), 3);
        // Set operators.
        assert_eq!(vector(&s, "all and ok", S).len(), 3);
        assert_eq!(
            vector(&s, "all unless ok", S)[0].metric,
            labels([("__name__", "all"), ("pod", "d")])
        );
        assert_eq!(vector(&s, "ok or all", S).len(), 4);
        assert_eq!(vector(&s, "ok or on() vector(1)", S).len(), 3);
        assert_eq!(vector(&s, "nothing or vector(7)", S)[0].value, 7.0);
        // Many-to-many is an error.
        let mut m = Storage::new();
        m.append(
            labels([("__name__", "x"), ("pod", "a"), ("c", "1")]),
            S,
            1.0,
        );
        m.append(
            labels([("__name__", "x"), ("pod", "a"), ("c", "2")]),
            S,
            1.0,
        );
        m.append(labels([("__name__", "y"), ("pod", "a")]), S, 1.0);
        assert!(matches!(
            eval_instant(&m, "y / on(pod) x", S),
            Err(Error::Execution(_))
        ));
        assert!(matches!(
            eval_instant(&m, "x / on(pod) y", S),
            Err(Error::Execution(_))
        ));
        assert_eq!(
            vector(&m, "abs({__name__=~\"x|y\", c=\"\"} )", S),
            vec![Sample {
                metric: labels([("pod", "a")]),
                value: 1.0
            }]
        );
        let mut d = Storage::new();
        d.append(labels([("__name__", "p"), ("i", "1")]), S, 1.0);
        d.append(labels([("__name__", "q"), ("i", "1")]), S, 1.0);
        assert!(matches!(
            eval_instant(&d, "abs({i=\"1\"})", S),
            Err(Error::Execution(_))
        ));
    }

    #[test]
    fn scalars_functions_and_arithmetic() {
        let s = pods();
        let scalar = |q: &str, t: i64| match eval_instant(&s, q, t) {
            Ok(Value::Scalar(v)) => v,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(scalar("1 + 2 * 3 - 4 / 2", 0), 5.0);
        assert_eq!(scalar("2 ^ 3 ^ 2", 0), 512.0);
        assert_eq!(scalar("-2 ^ 2", 0), -4.0);
        assert_eq!(scalar("7 % 4", 0), 3.0);
        assert_eq!(scalar("1 / 0", 0), f64::INFINITY);
        assert_eq!(scalar("-1 / 0", 0), f64::NEG_INFINITY);
        assert!(scalar("0 / 0", 0).is_nan());
        assert!(scalar("5 % 0", 0).is_nan());
        assert_eq!(scalar("1 > bool 0", 0), 1.0);
        assert_eq!(scalar("time()", 12_345), 12.345);
        assert_eq!(scalar("scalar(vector(3))", 0), 3.0);
        assert!(
            scalar("scalar(req)", 10 * S).is_nan(),
            "more than one element"
        );
        assert_eq!(scalar("1e3 * 0.99", 0), 990.0);
        assert_eq!(one(&s, "vector(1)", 0), 1.0);
        assert_eq!(one(&s, "abs(-vector(2))", 0), 2.0);
        assert_eq!(one(&s, "clamp_min(vector(1), 5)", 0), 5.0);
        assert_eq!(one(&s, "clamp_max(vector(10), 5)", 0), 5.0);
        assert!(one(&s, "clamp_max(vector(NaN), 5)", 0).is_nan());
        assert_eq!(one(&s, "clamp(vector(10), 0, 3)", 0), 3.0);
        let v = vector(&s, "req{status=\"500\"} * 2", 10 * S);
        assert_eq!(v[0].value, 20.0);
        assert!(
            !v[0].metric.contains_key("__name__"),
            "arithmetic drops the name"
        );
        assert_eq!(vector(&s, "-req", 10 * S).len(), 4);
        match eval_instant(&s, "req[1m]", 10 * S) {
            Ok(Value::Matrix(m)) => {
                assert_eq!(m.len(), 4);
                assert_eq!(m[0].points, vec![(10 * S, 90.0)]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            eval_instant(&s, "\"hi\"", 0),
            Ok(Value::String("hi".into()))
        );
    }

    #[test]
    fn lookback_and_staleness() {
        let mut s = Storage::new();
        let l = labels([("__name__", "up"), ("instance", "a")]);
        s.append(l.clone(), 10 * S, 1.0);
        s.append(l.clone(), 20 * S, 1.0);
        assert_eq!(vector(&s, "up", 20 * S).len(), 1);
        assert_eq!(
            vector(&s, "up", 20 * S + 299 * S).len(),
            1,
            "within the 5 min lookback"
        );
        assert!(
            vector(&s, "up", 20 * S + 300 * S).is_empty(),
            "lookback is left-open"
        );
        assert!(
            vector(&s, "up", 5 * S).is_empty(),
            "nothing before the first sample"
        );
        // The target goes away: a staleness marker at the next scrape.
        s.append_stale(&l, 30 * S);
        assert_eq!(vector(&s, "up", 29 * S).len(), 1);
        assert!(vector(&s, "up", 30 * S).is_empty());
        assert!(vector(&s, "up", 60 * S).is_empty());
        // Range functions ignore markers but see the samples before them.
        assert_eq!(one(&s, "count_over_time(up[1m])", 60 * S), 2.0);
        // The series comes back.
        s.append(l.clone(), 70 * S, 1.0);
        assert_eq!(vector(&s, "up", 70 * S).len(), 1);
        // Offset looks back in time.
        assert_eq!(vector(&s, "up offset 40s", 60 * S).len(), 1);
    }

    /// Random token soup: parsing and evaluating must return, never panic.
    #[test]
    fn arbitrary_queries_do_not_panic() {
        const PIECES: &[&str] = &[
            "sum",
            "rate",
            "(",
            ")",
            "{",
            "}",
            "[",
            "]",
            "5m",
            "1s",
            "x",
            "c",
            "le",
            "=",
            "=~",
            "!=",
            "!~",
            "\"a\"",
            "'.*'",
            ",",
            "by",
            "without",
            "on",
            "ignoring",
            "bool",
            "+",
            "-",
            "*",
            "/",
            "%",
            "^",
            "==",
            ">",
            "<=",
            "and",
            "or",
            "unless",
            "1",
            "0",
            "NaN",
            "Inf",
            "1e3",
            "histogram_quantile",
            "0.5",
            "vector",
            "scalar",
            "time",
            "offset",
            "irate",
            "increase",
            "clamp_min",
            "count_over_time",
            ":",
            "@",
            "\\",
            "\"",
            "#",
            " ",
            "\n",
            "é",
            "0x",
            "topk",
            "abs",
        ];
        let mut s = Storage::new();
        for i in 0..5 {
            s.append(labels([("__name__", "c"), ("le", "1")]), i * S, i as f64);
            s.append(
                labels([("__name__", "x"), ("le", "+Inf")]),
                i * S,
                2.0 * i as f64,
            );
        }
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let len = 1 + next() % 12;
            let q: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(if next() % 2 == 0 { " " } else { "" });
            if parse(&q).is_ok() {
                parsed += 1;
            }
            let _ = eval_instant(&s, &q, 4 * S);
            let _ = eval_range(&s, &q, 0, 4 * S, S);
        }
        assert!(
            parsed > 100,
            "the soup should contain valid queries too: {parsed}"
        );
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut s = Storage::new();
        s.append(labels([("__name__", "c")]), 0, 1.0);
        s.append(labels([("__name__", "c")]), 1000, 2.0);
        for q in [
            "rate(c[100000000y])",
            "rate(c[100000000y] offset 100000000y)",
            "rate(c[100000000y] offset -100000000y)",
            "c offset -100000000y",
            "irate(c[100000000y])",
        ] {
            for t in [i64::MIN, 0, i64::MAX] {
                assert!(eval_instant(&s, q, t).is_ok(), "{q} at {t}");
            }
        }
        assert!(eval_range(&s, "c", i64::MAX - 10, i64::MAX, 3).is_ok());
        assert!(eval_range(&s, "c", i64::MIN, i64::MAX, 1).is_err());
    }

    #[test]
    fn range_queries() {
        let mut s = Storage::new();
        for i in 0..=10 {
            s.append(
                labels([("__name__", "c"), ("pod", "a")]),
                i * 10 * S,
                i as f64 * 10.0,
            );
        }
        let m = eval_range(&s, "rate(c[30s])", 30 * S, 100 * S, 10 * S).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].metric, labels([("pod", "a")]));
        assert_eq!(m[0].points.len(), 8);
        assert!(
            m[0].points.iter().all(|p| close(p.1, 1.0)),
            "{:?}",
            m[0].points
        );
        let sc = eval_range(&s, "time()", 0, 2 * S, S).unwrap();
        assert_eq!(sc[0].metric, Labels::new());
        assert_eq!(sc[0].points, vec![(0, 0.0), (S, 1.0), (2 * S, 2.0)]);
        assert!(matches!(
            eval_range(&s, "c[1m]", 0, S, S),
            Err(Error::BadData(_))
        ));
        assert!(matches!(
            eval_range(&s, "c", 0, 11_001 * S, S),
            Err(Error::BadData(_))
        ));
        assert!(eval_range(&s, "c", 0, 11_000 * S, S).is_ok());
        assert!(matches!(
            eval_range(&s, "c", 0, S, 0),
            Err(Error::BadData(_))
        ));
        assert!(matches!(
            eval_range(&s, "c", S, 0, S),
            Err(Error::BadData(_))
        ));
    }
}
