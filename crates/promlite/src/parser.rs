//! A recursive-descent parser for the PromQL subset promlite evaluates, with Prometheus' operator
//! precedence and its parse-time type checks. Errors carry a `line:column` position (both
//! 1-based, the column counted in characters) in Prometheus' format:
//! `1:14: parse error: unexpected end of input`.

use std::fmt;

use regex::Regex;

use crate::storage::METRIC_NAME;
use crate::Error;

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Number(f64),
    String(String),
    Paren(Box<Expr>),
    /// Unary minus (on a scalar or an instant vector; number literals are folded).
    Neg(Box<Expr>),
    Binary(Box<BinaryExpr>),
    Aggregate(Box<AggregateExpr>),
    Call(Call),
    Vector(VectorSelector),
    Matrix(MatrixSelector),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Scalar,
    Vector,
    Matrix,
    String,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::String => "string",
        })
    }
}

impl Expr {
    /// The type the expression evaluates to.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::Paren(e) | Expr::Neg(e) => e.value_type(),
            Expr::Binary(b) => {
                if b.lhs.value_type() == ValueType::Scalar
                    && b.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Aggregate(_) => ValueType::Vector,
            Expr::Call(c) => c.func.info().ret,
            Expr::Vector(_) => ValueType::Vector,
            Expr::Matrix(_) => ValueType::Matrix,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Prometheus' precedence, higher binds tighter (`^` is handled apart, above all of these).
    fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 5,
            BinOp::Pow => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Gt => ">",
            BinOp::Lt => "<",
            BinOp::Ge => ">=",
            BinOp::Le => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }
}

/// `on(...)` or `ignoring(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matching {
    On(Vec<String>),
    Ignoring(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct BinaryExpr {
    pub op: BinOp,
    pub lhs: Expr,
    pub rhs: Expr,
    pub return_bool: bool,
    pub matching: Option<Matching>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    None,
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct AggregateExpr {
    pub op: AggOp,
    pub grouping: Grouping,
    pub expr: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Rate,
    Irate,
    Increase,
    Delta,
    HistogramQuantile,
    Vector,
    Scalar,
    Time,
    Abs,
    Ceil,
    Floor,
    Sqrt,
    Exp,
    Ln,
    Log2,
    Log10,
    ClampMin,
    ClampMax,
    Clamp,
    SumOverTime,
    AvgOverTime,
    MaxOverTime,
    MinOverTime,
    CountOverTime,
    LastOverTime,
}

pub struct FuncInfo {
    pub name: &'static str,
    pub func: Func,
    pub args: &'static [ValueType],
    pub ret: ValueType,
}

use ValueType::{Matrix as M, Scalar as S, Vector as V};

const FUNCS: &[FuncInfo] = &[
    f("rate", Func::Rate, &[M], V),
    f("irate", Func::Irate, &[M], V),
    f("increase", Func::Increase, &[M], V),
    f("delta", Func::Delta, &[M], V),
    f("histogram_quantile", Func::HistogramQuantile, &[S, V], V),
    f("vector", Func::Vector, &[S], V),
    f("scalar", Func::Scalar, &[V], S),
    f("time", Func::Time, &[], S),
    f("abs", Func::Abs, &[V], V),
    f("ceil", Func::Ceil, &[V], V),
    f("floor", Func::Floor, &[V], V),
    f("sqrt", Func::Sqrt, &[V], V),
    f("exp", Func::Exp, &[V], V),
    f("ln", Func::Ln, &[V], V),
    f("log2", Func::Log2, &[V], V),
    f("log10", Func::Log10, &[V], V),
    f("clamp_min", Func::ClampMin, &[V, S], V),
    f("clamp_max", Func::ClampMax, &[V, S], V),
    f("clamp", Func::Clamp, &[V, S, S], V),
    f("sum_over_time", Func::SumOverTime, &[M], V),
    f("avg_over_time", Func::AvgOverTime, &[M], V),
    f("max_over_time", Func::MaxOverTime, &[M], V),
    f("min_over_time", Func::MinOverTime, &[M], V),
    f("count_over_time", Func::CountOverTime, &[M], V),
    f("last_over_time", Func::LastOverTime, &[M], V),
];

const fn f(name: &'static str, func: Func, args: &'static [ValueType], ret: ValueType) -> FuncInfo {
    FuncInfo {
        name,
        func,
        args,
        ret,
    }
}

impl Func {
    pub fn info(self) -> &'static FuncInfo {
        // Every variant is in FUNCS (checked by a test); `Rate`'s entry is a harmless fallback.
        FUNCS.iter().find(|i| i.func == self).unwrap_or(&FUNCS[0])
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub func: Func,
    pub args: Vec<Expr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A label matcher. Regexes are anchored at both ends (`^(?s:...)$`) as in Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    format!(
                        "invalid regular expression {value:?}: {}",
                        one_line(&e.to_string())
                    )
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Whether a label value matches (a missing label is the empty string).
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (_, None) => false,
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone)]
pub struct VectorSelector {
    /// All matchers, the metric name included (as `__name__="..."`).
    pub matchers: Vec<Matcher>,
    pub offset_ms: i64,
}

#[derive(Debug, Clone)]
pub struct MatrixSelector {
    pub selector: VectorSelector,
    pub range_ms: i64,
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(f64),
    Duration(i64),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    Assign,
    EqlRegex,
    NeqRegex,
    Op(BinOp),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "identifier {s:?}"),
            Tok::Number(n) => write!(f, "number {n}"),
            Tok::Duration(_) => f.write_str("duration"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::LParen => f.write_str("\"(\""),
            Tok::RParen => f.write_str("\")\""),
            Tok::LBrace => f.write_str("\"{\""),
            Tok::RBrace => f.write_str("\"}\""),
            Tok::LBracket => f.write_str("\"[\""),
            Tok::RBracket => f.write_str("\"]\""),
            Tok::Comma => f.write_str("\",\""),
            Tok::Colon => f.write_str("\":\""),
            Tok::At => f.write_str("\"@\""),
            Tok::Assign => f.write_str("\"=\""),
            Tok::EqlRegex => f.write_str("\"=~\""),
            Tok::NeqRegex => f.write_str("\"!~\""),
            Tok::Op(op) if op.is_set() => write!(f, "{}", op.as_str()),
            Tok::Op(op) => write!(f, "\"{}\"", op.as_str()),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

struct Token {
    tok: Tok,
    /// Byte offset in the query.
    pos: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos: usize, msg: String| Err(Error::parse(src, pos, msg));
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' | b'`' => {
                let (s, end) = lex_string(src, i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    pos: start,
                });
                i = end;
                continue;
            }
            _ => {}
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let (tok, end) = lex_number(src, i)?;
            out.push(Token { tok, pos: start });
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &src[start..i];
            let tok = if word.eq_ignore_ascii_case("inf") {
                Tok::Number(f64::INFINITY)
            } else if word.eq_ignore_ascii_case("nan") {
                Tok::Number(f64::NAN)
            } else {
                match word {
                    "and" => Tok::Op(BinOp::And),
                    "or" => Tok::Op(BinOp::Or),
                    "unless" => Tok::Op(BinOp::Unless),
                    _ => Tok::Ident(word.to_string()),
                }
            };
            out.push(Token { tok, pos: start });
            continue;
        }
        let next = bytes.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            (b'=', Some(b'=')) => (Tok::Op(BinOp::Eq), 2),
            (b'=', Some(b'~')) => (Tok::EqlRegex, 2),
            (b'=', _) => (Tok::Assign, 1),
            (b'!', Some(b'=')) => (Tok::Op(BinOp::Ne), 2),
            (b'!', Some(b'~')) => (Tok::NeqRegex, 2),
            (b'>', Some(b'=')) => (Tok::Op(BinOp::Ge), 2),
            (b'>', _) => (Tok::Op(BinOp::Gt), 1),
            (b'<', Some(b'=')) => (Tok::Op(BinOp::Le), 2),
            (b'<', _) => (Tok::Op(BinOp::Lt), 1),
            (b'+', _) => (Tok::Op(BinOp::Add), 1),
            (b'-', _) => (Tok::Op(BinOp::Sub), 1),
            (b'*', _) => (Tok::Op(BinOp::Mul), 1),
            (b'/', _) => (Tok::Op(BinOp::Div), 1),
            (b'%', _) => (Tok::Op(BinOp::Mod), 1),
            (b'^', _) => (Tok::Op(BinOp::Pow), 1),
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'{', _) => (Tok::LBrace, 1),
            (b'}', _) => (Tok::RBrace, 1),
            (b'[', _) => (Tok::LBracket, 1),
            (b']', _) => (Tok::RBracket, 1),
            (b',', _) => (Tok::Comma, 1),
            (b':', _) => (Tok::Colon, 1),
            (b'@', _) => (Tok::At, 1),
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(i, format!("unexpected character: {ch:?}"));
            }
        };
        out.push(Token { tok, pos: start });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
    });
    Ok(out)
}

/// A quoted string starting at `start` (its quote); returns the value and the offset after it.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), Error> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices().peekable();
    let unterminated = || Error::parse(src, start, "unterminated quoted string".to_string());
    while let Some((off, c)) = chars.next() {
        let pos = start + 1 + off;
        if c == quote {
            return Ok((out, pos + 1));
        }
        if quote == '`' {
            out.push(c);
            continue;
        }
        match c {
            '\n' => return Err(unterminated()),
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return Err(unterminated());
                };
                let simple = match e {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    '\'' => Some('\''),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    continue;
                }
                let (digits, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    '0'..='7' => (2, 8),
                    _ => {
                        return Err(Error::parse(
                            src,
                            pos,
                            format!("unknown escape sequence \"\\{e}\""),
                        ))
                    }
                };
                let mut text = String::new();
                if radix == 8 {
                    text.push(e);
                }
                for _ in 0..digits {
                    match chars.next() {
                        Some((_, d)) if d.is_digit(radix) => text.push(d),
                        _ => {
                            return Err(Error::parse(
                                src,
                                pos,
                                "invalid escape sequence".to_string(),
                            ))
                        }
                    }
                }
                let code = u32::from_str_radix(&text, radix).ok();
                match code.and_then(char::from_u32) {
                    Some(ch) if e == 'x' || radix == 8 => {
                        // \x and octal escapes are bytes; promlite keeps them only when ASCII.
                        if (ch as u32) < 0x80 {
                            out.push(ch);
                        } else {
                            return Err(Error::parse(
                                src,
                                pos,
                                "non-ASCII byte escapes are not supported".to_string(),
                            ));
                        }
                    }
                    Some(ch) => out.push(ch),
                    None => {
                        return Err(Error::parse(
                            src,
                            pos,
                            "invalid escape sequence".to_string(),
                        ))
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(unterminated())
}

fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), Error> {
    let bytes = src.as_bytes();
    let mut i = start;
    let bad = |msg: &str| Err(Error::parse(src, start, msg.to_string()));
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        let Ok(n) = u64::from_str_radix(&src[digits_start..i], 16) else {
            return bad("bad number syntax");
        };
        if bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return bad("bad number syntax");
        }
        return Ok((Tok::Number(n as f64), i));
    }
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_end = i;
    // A duration: digits immediately followed by a unit.
    if int_end > start && bytes.get(i).is_some_and(|b| b"ywdhms".contains(b)) {
        let mut j = start;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        return match parse_duration(&src[start..j]) {
            Some(ms) => Ok((Tok::Duration(ms), j)),
            None => bad(&format!("bad duration syntax: {:?}", &src[start..j])),
        };
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    if bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
    {
        return bad("bad number or duration syntax");
    }
    match src[start..i].parse::<f64>() {
        Ok(n) => Ok((Tok::Number(n), i)),
        Err(_) => bad("bad number syntax"),
    }
}

/// A Prometheus duration (`1h30m`, `500ms`, `2m30s`, `1d`, `1w`, `1y`: units at most once each,
/// from the largest down) in milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total: i64 = 0;
    let mut next_unit = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return None;
        }
        let n: i64 = s[digits_start..i].parse().ok()?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let idx = UNITS.iter().position(|(u, _)| *u == unit)?;
        if idx < next_unit {
            return None;
        }
        next_unit = idx + 1;
        total = total.checked_add(n.checked_mul(UNITS[idx].1)?)?;
    }
    Some(total)
}

// ---------------------------------------------------------------------------------------------
// Parser

/// Parses a PromQL expression.
pub fn parse(src: &str) -> Result<Expr, Error> {
    let tokens = lex(src)?;
    let mut p = Parser {
        src,
        tokens,
        idx: 0,
        depth: 0,
    };
    if p.peek() == &Tok::Eof {
        return Err(p.error_at(0, "no expression found in input"));
    }
    let expr = p.expr(0)?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected(""));
    }
    Ok(expr)
}

/// How deeply expressions may nest (parentheses, unary minus, `^`, function arguments):
/// parsing and evaluation recurse, and must not overflow a thread's stack on hostile input.
pub const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    idx: usize,
    depth: usize,
}

const AGGREGATIONS: &[(&str, Option<AggOp>)] = &[
    ("sum", Some(AggOp::Sum)),
    ("avg", Some(AggOp::Avg)),
    ("min", Some(AggOp::Min)),
    ("max", Some(AggOp::Max)),
    ("count", Some(AggOp::Count)),
    ("stddev", None),
    ("stdvar", None),
    ("topk", None),
    ("bottomk", None),
    ("quantile", None),
    ("count_values", None),
    ("group", None),
    ("limitk", None),
    ("limit_ratio", None),
];

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
];

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.idx.min(self.tokens.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.tokens[self.idx.min(self.tokens.len() - 1)].pos
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        // May step past the final Eof (peek() stays on it), so that `idx -= 1` always undoes.
        if self.idx < self.tokens.len() {
            self.idx += 1;
        }
        tok
    }

    fn error_at(&self, pos: usize, msg: &str) -> Error {
        Error::parse(self.src, pos, msg.to_string())
    }

    fn unexpected(&self, context: &str) -> Error {
        let msg = if context.is_empty() {
            format!("unexpected {}", self.peek())
        } else {
            format!("unexpected {} {context}", self.peek())
        };
        self.error_at(self.pos(), &msg)
    }

    fn expect(&mut self, tok: Tok, context: &str) -> Result<(), Error> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(context))
        }
    }

    fn peek_ident(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    /// Binary operators at or above `min_prec` (all but `^`, which `unary` handles).
    fn expr(&mut self, min_prec: u8) -> Result<Expr, Error> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Op(op) if *op != BinOp::Pow && op.precedence() >= min_prec => *op,
                _ => return Ok(lhs),
            };
            let op_pos = self.pos();
            self.next();
            let (return_bool, matching) = self.bin_modifiers(op)?;
            let rhs = self.expr(op.precedence() + 1)?;
            lhs = self.binary(op, op_pos, lhs, rhs, return_bool, matching)?;
        }
    }

    fn bin_modifiers(&mut self, op: BinOp) -> Result<(bool, Option<Matching>), Error> {
        let mut return_bool = false;
        if self.peek_ident("bool") {
            if !op.is_comparison() {
                return Err(self.error_at(
                    self.pos(),
                    "bool modifier can only be used on comparison operators",
                ));
            }
            self.next();
            return_bool = true;
        }
        let mut matching = None;
        if self.peek_ident("on") || self.peek_ident("ignoring") {
            let on = self.peek_ident("on");
            self.next();
            let labels = self.label_list()?;
            matching = Some(if on {
                Matching::On(labels)
            } else {
                Matching::Ignoring(labels)
            });
        }
        if self.peek_ident("group_left") || self.peek_ident("group_right") {
            return Err(self.error_at(
                self.pos(),
                "group_left/group_right (many-to-one matching) is not supported by promlite",
            ));
        }
        Ok((return_bool, matching))
    }

    fn binary(
        &self,
        op: BinOp,
        pos: usize,
        lhs: Expr,
        rhs: Expr,
        return_bool: bool,
        matching: Option<Matching>,
    ) -> Result<Expr, Error> {
        let (lt, rt) = (lhs.value_type(), rhs.value_type());
        let operand_ok = |t: ValueType| matches!(t, ValueType::Scalar | ValueType::Vector);
        if !operand_ok(lt) || !operand_ok(rt) {
            return Err(self.error_at(
                pos,
                "binary expression must contain only scalar and instant vector types",
            ));
        }
        if op.is_set() && (lt == ValueType::Scalar || rt == ValueType::Scalar) {
            return Err(self.error_at(
                pos,
                &format!(
                    "set operator \"{}\" not allowed in binary scalar expression",
                    op.as_str()
                ),
            ));
        }
        if op.is_comparison() && !return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar
        {
            return Err(self.error_at(pos, "comparisons between scalars must use BOOL modifier"));
        }
        if matching.is_some() && (lt != ValueType::Vector || rt != ValueType::Vector) {
            return Err(self.error_at(pos, "vector matching only allowed between instant vectors"));
        }
        Ok(Expr::Binary(Box::new(BinaryExpr {
            op,
            lhs,
            rhs,
            return_bool,
            matching,
        })))
    }

    /// Unary minus/plus, and `^` (which binds tighter than unary minus, right-associative).
    fn unary(&mut self) -> Result<Expr, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_at(
                self.pos(),
                &format!("expression nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        let result = self.unary_inner();
        self.depth -= 1;
        result
    }

    fn unary_inner(&mut self) -> Result<Expr, Error> {
        match self.peek() {
            Tok::Op(BinOp::Sub) | Tok::Op(BinOp::Add) => {
                let neg = *self.peek() == Tok::Op(BinOp::Sub);
                let pos = self.pos();
                self.next();
                let inner = self.unary()?;
                if !matches!(inner.value_type(), ValueType::Scalar | ValueType::Vector) {
                    return Err(self.error_at(
                        pos,
                        "unary expression only allowed on expressions of type scalar or instant vector",
                    ));
                }
                Ok(match (neg, inner) {
                    (false, e) => e,
                    (true, Expr::Number(n)) => Expr::Number(-n),
                    (true, e) => Expr::Neg(Box::new(e)),
                })
            }
            _ => {
                let base = self.postfix()?;
                if *self.peek() == Tok::Op(BinOp::Pow) {
                    let pos = self.pos();
                    self.next();
                    let (return_bool, matching) = self.bin_modifiers(BinOp::Pow)?;
                    let rhs = self.unary()?;
                    return self.binary(BinOp::Pow, pos, base, rhs, return_bool, matching);
                }
                Ok(base)
            }
        }
    }

    /// A primary expression and its `[range]` and `offset`.
    fn postfix(&mut self) -> Result<Expr, Error> {
        let mut expr = self.primary()?;
        if *self.peek() == Tok::LBracket {
            let pos = self.pos();
            let Expr::Vector(selector) = expr else {
                return Err(self.error_at(pos, "ranges only allowed for vector selectors"));
            };
            self.next();
            let range_pos = self.pos();
            let range_ms = match self.next() {
                Tok::Duration(ms) => ms,
                _ => {
                    self.idx -= 1;
                    return Err(self.unexpected("in range selector, expected a duration"));
                }
            };
            if range_ms <= 0 {
                return Err(self.error_at(range_pos, "range must be greater than 0"));
            }
            if *self.peek() == Tok::Colon {
                return Err(self.error_at(self.pos(), "subqueries are not supported by promlite"));
            }
            self.expect(Tok::RBracket, "in range selector, expected \"]\"")?;
            expr = Expr::Matrix(MatrixSelector { selector, range_ms });
        }
        if self.peek_ident("offset") {
            let pos = self.pos();
            self.next();
            let sign = match self.peek() {
                Tok::Op(BinOp::Sub) => {
                    self.next();
                    -1
                }
                Tok::Op(BinOp::Add) => {
                    self.next();
                    1
                }
                _ => 1,
            };
            let offset = match self.next() {
                Tok::Duration(ms) => ms * sign,
                _ => {
                    self.idx -= 1;
                    return Err(self.unexpected("after offset, expected a duration"));
                }
            };
            match &mut expr {
                Expr::Vector(vs) => vs.offset_ms = offset,
                Expr::Matrix(ms) => ms.selector.offset_ms = offset,
                _ => {
                    return Err(self.error_at(
                        pos,
                        "offset modifier must be preceded by an instant vector selector or range vector selector",
                    ))
                }
            }
        }
        if *self.peek() == Tok::At {
            return Err(self.error_at(self.pos(), "the @ modifier is not supported by promlite"));
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Number(n) => {
                self.next();
                Ok(Expr::Number(n))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Expr::String(s))
            }
            Tok::LParen => {
                self.next();
                let inner = self.expr(0)?;
                self.expect(Tok::RParen, "in parenthesized expression, expected \")\"")?;
                Ok(Expr::Paren(Box::new(inner)))
            }
            Tok::LBrace => {
                let matchers = self.matchers()?;
                self.selector(pos, None, matchers)
            }
            Tok::Ident(word) => {
                if let Some((_, agg)) = AGGREGATIONS.iter().find(|(name, _)| *name == word) {
                    let Some(op) = agg else {
                        return Err(self.error_at(
                            pos,
                            &format!("aggregation \"{word}\" is not supported by promlite"),
                        ));
                    };
                    self.next();
                    return self.aggregation(*op, pos);
                }
                if KEYWORDS.contains(&word.as_str()) {
                    return Err(self.unexpected(""));
                }
                self.next();
                if *self.peek() == Tok::LParen {
                    return self.call(&word, pos);
                }
                let matchers = if *self.peek() == Tok::LBrace {
                    self.matchers()?
                } else {
                    Vec::new()
                };
                self.selector(pos, Some(word), matchers)
            }
            Tok::Eof => Err(self.unexpected("")),
            _ => Err(self.unexpected("")),
        }
    }

    fn selector(
        &self,
        pos: usize,
        name: Option<String>,
        mut matchers: Vec<Matcher>,
    ) -> Result<Expr, Error> {
        if let Some(name) = name {
            if matchers.iter().any(|m| m.name == METRIC_NAME) {
                return Err(self.error_at(pos, "metric name must not be set twice"));
            }
            matchers.insert(
                0,
                Matcher::new(METRIC_NAME, MatchOp::Equal, &name)
                    .map_err(|e| self.error_at(pos, &e))?,
            );
        }
        if matchers.iter().all(|m| m.matches("")) {
            return Err(self.error_at(
                pos,
                "vector selector must contain at least one non-empty matcher",
            ));
        }
        Ok(Expr::Vector(VectorSelector {
            matchers,
            offset_ms: 0,
        }))
    }

    /// `{name op "value", ...}` (a trailing comma allowed).
    fn matchers(&mut self) -> Result<Vec<Matcher>, Error> {
        self.expect(Tok::LBrace, "")?;
        let mut out = Vec::new();
        loop {
            if *self.peek() == Tok::RBrace {
                self.next();
                return Ok(out);
            }
            let pos = self.pos();
            let name = match self.next() {
                Tok::Ident(name) => name,
                // `and`, `or` and `unless` are label names inside braces.
                Tok::Op(op) if op.is_set() => op.as_str().to_string(),
                _ => {
                    self.idx -= 1;
                    return Err(self.unexpected("in label matching, expected label name"));
                }
            };
            let op = match self.next() {
                Tok::Assign => MatchOp::Equal,
                Tok::Op(BinOp::Ne) => MatchOp::NotEqual,
                Tok::EqlRegex => MatchOp::Regex,
                Tok::NeqRegex => MatchOp::NotRegex,
                _ => {
                    self.idx -= 1;
                    return Err(self.unexpected(
                        "in label matching, expected one of \"=\", \"!=\", \"=~\" or \"!~\"",
                    ));
                }
            };
            let value = match self.next() {
                Tok::Str(s) => s,
                _ => {
                    self.idx -= 1;
                    return Err(self.unexpected("in label matching, expected string"));
                }
            };
            out.push(Matcher::new(&name, op, &value).map_err(|e| self.error_at(pos, &e))?);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RBrace => {}
                _ => return Err(self.unexpected("in label matching, expected \",\" or \"}\"")),
            }
        }
    }

    /// `(a, b,)`
    fn label_list(&mut self) -> Result<Vec<String>, Error> {
        self.expect(Tok::LParen, "in grouping, expected \"(\"")?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                Tok::RParen => return Ok(out),
                tok @ (Tok::Ident(_) | Tok::Op(BinOp::And | BinOp::Or | BinOp::Unless)) => {
                    out.push(match tok {
                        Tok::Ident(name) => name,
                        Tok::Op(op) => op.as_str().to_string(),
                        _ => String::new(),
                    });
                    match self.peek() {
                        Tok::Comma => {
                            self.next();
                        }
                        Tok::RParen => {}
                        _ => return Err(self.unexpected("in grouping, expected \",\" or \")\"")),
                    }
                }
                _ => {
                    self.idx -= 1;
                    return Err(self.unexpected("in grouping, expected label"));
                }
            }
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, Error> {
        if self.peek_ident("by") {
            self.next();
            Ok(Some(Grouping::By(self.label_list()?)))
        } else if self.peek_ident("without") {
            self.next();
            Ok(Some(Grouping::Without(self.label_list()?)))
        } else {
            Ok(None)
        }
    }

    fn aggregation(&mut self, op: AggOp, pos: usize) -> Result<Expr, Error> {
        let mut grouping = self.grouping()?;
        if *self.peek() != Tok::LParen {
            return Err(self.unexpected("in aggregation, expected \"(\""));
        }
        let args = self.args()?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        if args.len() != 1 {
            return Err(self.error_at(
                pos,
                &format!(
                    "wrong number of arguments for aggregate expression provided, expected 1, got {}",
                    args.len()
                ),
            ));
        }
        let Some(expr) = args.into_iter().next() else {
            return Err(self.error_at(pos, "aggregation without an argument"));
        };
        let t = expr.value_type();
        if t != ValueType::Vector {
            return Err(self.error_at(
                pos,
                &format!("expected type instant vector in aggregation expression, got {t}"),
            ));
        }
        Ok(Expr::Aggregate(Box::new(AggregateExpr {
            op,
            grouping: grouping.unwrap_or(Grouping::None),
            expr,
        })))
    }

    /// `(expr, expr, ...)`
    fn args(&mut self) -> Result<Vec<Expr>, Error> {
        self.expect(Tok::LParen, "")?;
        let mut out = Vec::new();
        loop {
            if *self.peek() == Tok::RParen {
                self.next();
                return Ok(out);
            }
            out.push(self.expr(0)?);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {}
                _ => return Err(self.unexpected("in argument list, expected \",\" or \")\"")),
            }
        }
    }

    fn call(&mut self, name: &str, pos: usize) -> Result<Expr, Error> {
        let Some(info) = FUNCS.iter().find(|i| i.name == name) else {
            return Err(self.error_at(
                pos,
                &format!("unknown function with name \"{name}\" (or not supported by promlite)"),
            ));
        };
        let args = self.args()?;
        if args.len() != info.args.len() {
            return Err(self.error_at(
                pos,
                &format!(
                    "expected {} argument(s) in call to \"{name}\", got {}",
                    info.args.len(),
                    args.len()
                ),
            ));
        }
        for (arg, want) in args.iter().zip(info.args) {
            let got = arg.value_type();
            if got != *want {
                return Err(self.error_at(
                    pos,
                    &format!("expected type {want} in call to function \"{name}\", got {got}"),
                ));
            }
        }
        Ok(Expr::Call(Call {
            func: info.func,
            args,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Expr {
        match parse(q) {
            Ok(e) => e,
            Err(e) => panic!("{q}: {e}"),
        }
    }

    fn err(q: &str) -> String {
        match parse(q) {
            Ok(e) => panic!("{q} parsed: {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A compact, fully parenthesized rendering to check the tree's shape.
    fn show(e: &Expr) -> String {
        match e {
            Expr::Number(n) => format!("{n}"),
            Expr::String(s) => format!("{s:?}"),
            Expr::Paren(e) => show(e),
            Expr::Neg(e) => format!("(-{})", show(e)),
            Expr::Binary(b) => format!("({} {} {})", show(&b.lhs), b.op.as_str(), show(&b.rhs)),
            Expr::Aggregate(a) => format!("{:?}<{:?}>({})", a.op, a.grouping, show(&a.expr)),
            Expr::Call(c) => format!(
                "{}({})",
                c.func.info().name,
                c.args.iter().map(show).collect::<Vec<_>>().join(",")
            ),
            Expr::Vector(v) => sel(v),
            Expr::Matrix(m) => format!("{}[{}]", sel(&m.selector), m.range_ms),
        }
    }

    fn sel(v: &VectorSelector) -> String {
        let ms: Vec<String> = v
            .matchers
            .iter()
            .map(|m| format!("{}{:?}{}", m.name, m.op, m.value))
            .collect();
        format!("{{{}}}", ms.join(","))
    }

    #[test]
    fn every_function_has_an_entry() {
        for info in FUNCS {
            assert_eq!(info.func.info().name, info.name);
        }
    }

    #[test]
    fn precedence_follows_prometheus() {
        assert_eq!(show(&p("1 + 2 * 3")), "(1 + (2 * 3))");
        assert_eq!(show(&p("1 * 2 + 3")), "((1 * 2) + 3)");
        assert_eq!(show(&p("1 - 2 - 3")), "((1 - 2) - 3)");
        assert_eq!(show(&p("2 ^ 3 ^ 2")), "(2 ^ (3 ^ 2))");
        assert_eq!(show(&p("-2 ^ 2")), "(-(2 ^ 2))");
        assert_eq!(show(&p("2 ^ -1")), "(2 ^ -1)");
        assert_eq!(
            show(&p("a + b > c * 2")),
            "(({__name__Equala} + {__name__Equalb}) > ({__name__Equalc} * 2))"
        );
        assert_eq!(
            show(&p("a or b and c unless d")),
            "({__name__Equala} or (({__name__Equalb} and {__name__Equalc}) unless {__name__Equald}))"
        );
        assert_eq!(show(&p("(1 + 2) * 3")), "((1 + 2) * 3)");
        assert_eq!(show(&p("-x")), "(-{__name__Equalx})");
        assert_eq!(show(&p("1 % 2 / 3")), "((1 % 2) / 3)");
    }

    #[test]
    fn numbers() {
        for (q, want) in [
            ("1e3", 1000.0),
            ("0.99", 0.99),
            (".5", 0.5),
            ("0x1f", 31.0),
            ("1.5e-3", 0.0015),
            ("-7", -7.0),
            ("+Inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
        ] {
            match p(q) {
                Expr::Number(n) => assert_eq!(n, want, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(matches!(p("NaN"), Expr::Number(n) if n.is_nan()));
    }

    #[test]
    fn both_aggregation_forms_and_grouping() {
        let a = show(&p("sum by (le) (x)"));
        let b = show(&p("sum(x) by (le)"));
        assert_eq!(a, b);
        assert_eq!(a, "Sum<By([\"le\"])>({__name__Equalx})");
        assert_eq!(
            show(&p("avg without (pod, instance,) (x)")),
            "Avg<Without([\"pod\", \"instance\"])>({__name__Equalx})"
        );
        assert_eq!(
            show(&p("count(x) without ()")),
            "Count<Without([])>({__name__Equalx})"
        );
        assert_eq!(show(&p("max(x)")), "Max<None>({__name__Equalx})");
    }

    #[test]
    fn trailing_commas_whitespace_and_newlines() {
        let q = "sum(\n\trate(\n\t\tx{\n\t\t\ta=\"1\",\n\t\t\tb=~\"2.*\",\n\t\t}[1m]\n\t)\n)";
        assert_eq!(
            show(&p(q)),
            "Sum<None>(rate({__name__Equalx,aEqual1,bRegex2.*}[60000]))"
        );
        assert_eq!(show(&p("{a!=\"\", b!~'x',}")), "{aNotEqual,bNotRegexx}");
        assert_eq!(
            show(&p("x{and=\"1\",by=\"2\"}")),
            "{__name__Equalx,andEqual1,byEqual2}"
        );
        assert_eq!(
            show(&p("sum by (or, on) (x)")),
            "Sum<By([\"or\", \"on\"])>({__name__Equalx})"
        );
        assert_eq!(show(&p("x # a comment\n + 1")), "({__name__Equalx} + 1)");
    }

    #[test]
    fn durations() {
        for (d, ms) in [
            ("30s", 30_000),
            ("1m", 60_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2m30s", 150_000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            ("1m500ms", 60_500),
        ] {
            assert_eq!(parse_duration(d), Some(ms), "{d}");
            match p(&format!("x[{d}]")) {
                Expr::Matrix(m) => assert_eq!(m.range_ms, ms),
                other => panic!("{other:?}"),
            }
        }
        for bad in ["", "1", "m", "1x", "30s1m", "1m1m", "1.5m", "-1m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        match p("x offset 5m") {
            Expr::Vector(v) => assert_eq!(v.offset_ms, 300_000),
            other => panic!("{other:?}"),
        }
        match p("x[1m] offset -1m") {
            Expr::Matrix(m) => assert_eq!(m.selector.offset_ms, -60_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn string_escapes() {
        match p(r#"{a="q\"b\\c\nd\x41\u00e9", b=`raw\n`}"#) {
            Expr::Vector(v) => {
                assert_eq!(v.matchers[0].value, "q\"b\\c\nd\u{41}\u{e9}");
                assert_eq!(v.matchers[1].value, "raw\\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn regexes_are_fully_anchored() {
        let m = Matcher::new("pod", MatchOp::Regex, "podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)").unwrap();
        assert!(m.matches("podinfo-7d9f8-x2x4b"));
        assert!(!m.matches("podinfo-primary-7d9f8-x2x4b"));
        assert!(!m.matches("xpodinfo-7d9f8-x2x4b"));
        assert!(!m.matches("podinfo-7d9f8-x2x4b-"));
        let alt = Matcher::new("a", MatchOp::Regex, "a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab"));
        let nre = Matcher::new("s", MatchOp::NotRegex, "5.*").unwrap();
        assert!(nre.matches("200") && !nre.matches("503") && nre.matches(""));
        let dot = Matcher::new("s", MatchOp::Regex, "a.b").unwrap();
        assert!(
            dot.matches("a\nb"),
            "(?s): . matches a newline, as in Prometheus"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(matches!(p(&ok), Expr::Paren(_)));
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(err(&deep).contains("nested more than 128 levels"));
        assert!(err(&"-".repeat(100_000)).contains("nested more than"));
        assert!(err(&"2^".repeat(100_000)).contains("nested more than"));
        let calls = format!("{}x{}", "abs(".repeat(100_000), ")".repeat(100_000));
        assert!(err(&calls).contains("nested more than"));
    }

    #[test]
    fn errors_carry_positions() {
        assert_eq!(err(""), "1:1: parse error: no expression found in input");
        assert_eq!(
            err("sum(x"),
            "1:6: parse error: unexpected end of input in argument list, expected \",\" or \")\""
        );
        assert_eq!(
            err("x{a=\"1\"} +"),
            "1:11: parse error: unexpected end of input"
        );
        assert_eq!(
            err("rate(x)"),
            "1:1: parse error: expected type range vector in call to function \"rate\", got instant vector"
        );
        assert_eq!(
            err("x[5m] + 1"),
            "1:7: parse error: binary expression must contain only scalar and instant vector types"
        );
        assert_eq!(
            err("1 > 2"),
            "1:3: parse error: comparisons between scalars must use BOOL modifier"
        );
        assert_eq!(
            err("1 and x"),
            "1:3: parse error: set operator \"and\" not allowed in binary scalar expression"
        );
        assert_eq!(
            err("{a=\"\"}"),
            "1:1: parse error: vector selector must contain at least one non-empty matcher"
        );
        assert_eq!(
            err("x[5x]"),
            "1:3: parse error: bad number or duration syntax"
        );
        assert_eq!(
            err("x[1m1m]"),
            "1:3: parse error: bad duration syntax: \"1m1m\""
        );
        assert_eq!(
            err("foo(x)"),
            "1:1: parse error: unknown function with name \"foo\" (or not supported by promlite)"
        );
        assert_eq!(err("x $"), "1:3: parse error: unexpected character: '$'");
        assert_eq!(
            err("x{a=\"1}"),
            "1:5: parse error: unterminated quoted string"
        );
        assert_eq!(
            err("sum(\n  rate(x[1m])\n) by (le"),
            "3:9: parse error: unexpected end of input in grouping, expected \",\" or \")\""
        );
        assert_eq!(
            err("x{a"),
            "1:4: parse error: unexpected end of input in label matching, expected one of \"=\", \"!=\", \"=~\" or \"!~\""
        );
        assert_eq!(
            err("x{a="),
            "1:5: parse error: unexpected end of input in label matching, expected string"
        );
        assert_eq!(
            err("x["),
            "1:3: parse error: unexpected end of input in range selector, expected a duration"
        );
        assert_eq!(
            err("x offset"),
            "1:9: parse error: unexpected end of input after offset, expected a duration"
        );
        assert_eq!(
            err("sum by (a"),
            "1:10: parse error: unexpected end of input in grouping, expected \",\" or \")\""
        );
        assert!(err("x{a=~\"(\"}").starts_with("1:3: parse error: invalid regular expression"));
        assert!(err("x[5m:1m]").contains("subqueries are not supported"));
        assert!(err("topk(3, x)").contains("not supported"));
        assert!(err("(x)[5m]").contains("ranges only allowed for vector selectors"));
        assert!(err("x y").starts_with("1:3: parse error: unexpected identifier \"y\""));
        assert!(
            err("1 + bool 2").contains("bool modifier can only be used on comparison operators")
        );
        assert!(err("abs(1)")
            .contains("expected type instant vector in call to function \"abs\", got scalar"));
        assert!(err("sum(1)")
            .contains("expected type instant vector in aggregation expression, got scalar"));
        assert!(err("vector(1, 2)").contains("expected 1 argument(s)"));
    }
}
