//! A fuzz target for the two readers of untrusted text: the spec reader (`spec::load_str`, and
//! the plan of every Canary it accepts) and `simulate`'s timeline reader (`Timeline::parse`, and
//! a short simulation of every timeline it accepts).
//!
//! Inputs are arbitrary bytes, and the shipped `examples/` (the corpus) mutated with YAML in
//! mind: lines dropped, repeated, swapped, re-indented or cut short, values replaced by hostile
//! ones (huge and negative numbers, `.inf`, aliases, placeholders, a BOM, binary). For each:
//! no panic, an answer within [`PER_INPUT`], and every error an `Invalid` spec error whose
//! diagnostics name the file and a line of it.
//!
//! It runs for a time, not a number of cases: `AVIARY_FUZZ_SECS` seconds for each of its four
//! phases (default 2, so `cargo test` stays quick; `.ci/run` gives it longer). The two targets
//! run side by side, so the wall time is twice that. `AVIARY_FUZZ_SEED` replays a run; the seed
//! is printed either way, and proptest shrinks a failing input before reporting it.
//!
//! (cargo-fuzz needs `cargo install cargo-fuzz` and a nightly build of the whole dependency tree
//! with sanitizers on every CI run, minutes on CI's two cores before the first input; this uses
//! the test build CI makes anyway.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

use aviary_core::engine::Config;
use aviary_core::simulate::Timeline;
use aviary_core::spec::{self, Provider, SpecError};

/// The most one input may take (read, decode, plan or simulate). Real inputs take milliseconds;
/// this is far from any slow machine and far below an exponential blow-up.
const PER_INPUT: Duration = Duration::from_secs(10);

/// Messages of diagnostics that are about a whole file and so have no line.
const WHOLE_FILE: [&str; 3] = [
    "the YAML parser failed on this file",
    "the timeline is empty",
    "nested more than",
];

/// Values a mutation puts in place of a scalar: each is a way a spec has gone wrong before.
const HOSTILE: &[&str] = &[
    "",
    "~",
    "0",
    "-1",
    "1000000",
    "1000001",
    "2147483647",
    "2147483648",
    "99999999999999999999999",
    "1e309",
    ".inf",
    "-.inf",
    ".nan",
    "0s",
    "-1s",
    "1ns",
    "99999999h",
    "2562047h",
    "yes",
    "\"10\"",
    "[]",
    "{}",
    "[1, 2, 3]",
    "{{ nosuch }}",
    "\"{{ variables.x }}\"",
    "\"{{ namespace\"",
    "*anchor",
    "&anchor x",
    "<<: *anchor",
    "!!binary aGVsbG8=",
    "\"\\u0000\"",
    "\u{feff}x",
    "'unterminated",
    "x: y: z",
    "- a\n- b",
    "|\n  block",
];

/// The corpus: every YAML file of `examples/`, with its path.
fn corpus() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    out.push((p, text));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"),
        &mut out,
    );
    assert!(
        out.len() >= 10,
        "the corpus is examples/: found {}",
        out.len()
    );
    out
}

/// Timelines and the Canary each drives: `examples/X/timelines/*.yaml` with `examples/X`'s
/// `overlays/prod/canary.yaml`.
fn timeline_corpus(files: &[(PathBuf, String)]) -> Vec<(Config, String)> {
    let mut out = Vec::new();
    for (path, text) in files {
        if path.parent().and_then(Path::file_name) != Some(std::ffi::OsStr::new("timelines")) {
            continue;
        }
        let Some(example) = path.parent().and_then(Path::parent) else {
            continue;
        };
        let canary = example.join("overlays/prod/canary.yaml");
        let Some((_, spec_text)) = files.iter().find(|(p, _)| *p == canary) else {
            continue;
        };
        let Ok(docs) = spec::load_str("canary.yaml", spec_text) else {
            continue;
        };
        if let Some(c) = docs.canaries.first() {
            out.push((Config::from_canary(c, &Provider::Istio), text.clone()));
        }
    }
    assert!(
        out.len() >= 5,
        "timelines in examples/: found {}",
        out.len()
    );
    out
}

/// One edit of a YAML text, by line; the numbers are taken modulo what they index.
#[derive(Debug, Clone)]
enum Mutation {
    DropLine(usize),
    RepeatLine(usize),
    SwapLines(usize, usize),
    Indent(usize, usize),
    Dedent(usize),
    /// Replace what follows `key: ` on a line with a hostile value.
    ReplaceValue(usize, usize),
    /// Put a line of another corpus file here.
    Splice(usize, usize, usize),
    TruncateAt(usize),
    InsertByte(usize, u8),
    Bom,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = any::<usize>();
    prop_oneof![
        n.prop_map(Mutation::DropLine),
        n.prop_map(Mutation::RepeatLine),
        (n, n).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (n, 1..5usize).prop_map(|(a, b)| Mutation::Indent(a, b)),
        n.prop_map(Mutation::Dedent),
        (n, n).prop_map(|(a, b)| Mutation::ReplaceValue(a, b)),
        (n, n, n).prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
        n.prop_map(Mutation::TruncateAt),
        (n, any::<u8>()).prop_map(|(a, b)| Mutation::InsertByte(a, b)),
        Just(Mutation::Bom),
    ]
}

fn apply(text: &str, edits: &[Mutation], corpus: &[(PathBuf, String)]) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut bom = false;
    let mut tail: Vec<(usize, u8)> = Vec::new();
    let mut cut = None;
    for edit in edits {
        let len = lines.len().max(1);
        match *edit {
            Mutation::DropLine(i) if !lines.is_empty() => {
                lines.remove(i % len);
            }
            Mutation::RepeatLine(i) if !lines.is_empty() => {
                let l = lines[i % len].clone();
                lines.insert(i % len, l);
            }
            Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % len, b % len),
            Mutation::Indent(i, by) if !lines.is_empty() => {
                let l = &mut lines[i % len];
                *l = format!("{}{l}", " ".repeat(by));
            }
            Mutation::Dedent(i) if !lines.is_empty() => {
                let l = &mut lines[i % len];
                *l = l.trim_start().to_string();
            }
            Mutation::ReplaceValue(i, v) if !lines.is_empty() => {
                let l = &mut lines[i % len];
                let value = HOSTILE[v % HOSTILE.len()];
                if let Some(at) = l.find(": ") {
                    l.truncate(at + 2);
                    l.push_str(value);
                } else if l.trim_start().starts_with("- ") {
                    let indent = l.len() - l.trim_start().len();
                    *l = format!("{}- {value}", " ".repeat(indent));
                }
            }
            Mutation::Splice(at, file, line) => {
                let (_, other) = &corpus[file % corpus.len()];
                let other: Vec<&str> = other.lines().collect();
                if !other.is_empty() {
                    let l = other[line % other.len()].to_string();
                    lines.insert(at % (lines.len() + 1), l);
                }
            }
            Mutation::TruncateAt(at) => cut = Some(at),
            Mutation::InsertByte(at, b) => tail.push((at, b)),
            Mutation::Bom => bom = true,
            _ => {}
        }
    }
    let mut bytes = Vec::new();
    if bom {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    bytes.extend_from_slice(lines.join("\n").as_bytes());
    bytes.push(b'\n');
    for (at, b) in tail {
        let at = at % (bytes.len() + 1);
        bytes.insert(at, b);
    }
    if let Some(at) = cut {
        bytes.truncate(at % (bytes.len() + 1));
    }
    bytes
}

/// Bytes as the file readers turn them into text (the byte-order mark dropped); `None` for
/// bytes they refuse as not UTF-8, which is an answer too.
fn text_of(bytes: Vec<u8>) -> Option<String> {
    spec::input::decode_utf8(bytes).ok()
}

#[test]
fn lines_are_counted_as_yaml_counts_them() {
    assert_eq!(yaml_lines(""), 1);
    assert_eq!(yaml_lines("a\nb"), 2);
    assert_eq!(yaml_lines("a\r\nb\r\n"), 3);
    // The fuzzer's find: `\r&\x01\r\x01` is three lines to YAML (and to the reader's errors).
    assert_eq!(yaml_lines("\r&\u{1}\r\u{1}"), 3);
}

/// How many lines YAML sees in `text`: a line break is `\r\n`, `\r` or `\n` (YAML 1.2, 5.4), so
/// a file with old Mac line ends has lines that `str::lines` does not count.
fn yaml_lines(text: &str) -> usize {
    let breaks = text.replace("\r\n", "\n").matches(['\r', '\n']).count();
    breaks + 1
}

fn check_diagnostics(file: &str, text: &str, ds: &[spec::Diagnostic]) -> Result<(), TestCaseError> {
    let lines = yaml_lines(text);
    for d in ds {
        prop_assert_eq!(&d.file, file);
        prop_assert!(!d.message.is_empty());
        prop_assert!(
            d.line <= lines + 1,
            "line {} of a {lines}-line file: {d}",
            d.line
        );
        prop_assert!(
            d.line >= 1 || WHOLE_FILE.iter().any(|m| d.message.contains(m)),
            "no line: {d}"
        );
        let _ = d.to_string();
    }
    Ok(())
}

/// The spec reader on one input, then the plan of each Canary it accepts.
fn check_spec(text: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    match spec::load_str("fuzz.yaml", text) {
        Ok(docs) => {
            check_diagnostics("fuzz.yaml", text, &docs.warnings)?;
            for c in &docs.canaries {
                let config = Config::from_canary(c, &Provider::Istio);
                // Plans may be refused (a Canary that never promotes); they may not panic or hang.
                let _ = aviary_core::plan::compute(&config);
            }
        }
        Err(SpecError::Invalid { errors, warnings }) => {
            prop_assert!(!errors.is_empty());
            check_diagnostics("fuzz.yaml", text, &errors)?;
            check_diagnostics("fuzz.yaml", text, &warnings)?;
        }
        Err(e) => prop_assert!(false, "not an Invalid spec error: {e}"),
    }
    prop_assert!(
        start.elapsed() < PER_INPUT,
        "took {:?}: {text:?}",
        start.elapsed()
    );
    Ok(())
}

/// The timeline reader on one input against `config`, then a short simulation.
fn check_timeline(config: &Config, text: &str) -> Result<(), TestCaseError> {
    let start = Instant::now();
    match Timeline::parse("timeline.yaml", text, config) {
        Ok(timeline) => {
            let run = aviary_core::simulate::simulate_run(config, &timeline, 300);
            prop_assert!(run.is_ok(), "{:?}", run.err());
        }
        Err(SpecError::Invalid { errors, warnings }) => {
            prop_assert!(!errors.is_empty());
            check_diagnostics("timeline.yaml", text, &errors)?;
            check_diagnostics("timeline.yaml", text, &warnings)?;
        }
        Err(e) => prop_assert!(false, "not an Invalid spec error: {e}"),
    }
    prop_assert!(
        start.elapsed() < PER_INPUT,
        "took {:?}: {text:?}",
        start.elapsed()
    );
    Ok(())
}

/// Runs `test` on values of `strategy` for the fuzzing time, in batches, from a seed that is
/// printed (and can be given back with `AVIARY_FUZZ_SEED`).
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("AVIARY_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("AVIARY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let config = RunnerConfig {
        cases: 64,
        failure_persistence: None,
        max_shrink_time: 30_000,
        ..RunnerConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut batches = 0u64;
    while Instant::now() < deadline {
        // A runner runs its number of cases once; each batch gets its own, seeded from the
        // run's seed and the batch.
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&batches.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
        let mut runner = TestRunner::new_with_rng(config.clone(), rng);
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: AVIARY_FUZZ_SEED={seed} (batch {batches}) finds: {e}");
        }
        batches += 1;
    }
    eprintln!(
        "{name}: {} inputs in {secs}s, AVIARY_FUZZ_SEED={seed}",
        batches * 64
    );
}

#[test]
fn fuzz_the_spec_reader() {
    let corpus = corpus();
    let n = corpus.len();
    let mutated =
        (0..n, prop::collection::vec(mutation(), 1..8)).prop_map(move |(i, edits)| (i, edits));
    let files = corpus.clone();
    fuzz("mutated specs", mutated, move |(i, edits)| {
        match text_of(apply(&files[i].1, &edits, &files)) {
            Some(text) => check_spec(&text),
            None => Ok(()),
        }
    });
    let bytes = prop::collection::vec(any::<u8>(), 0..2048);
    fuzz("arbitrary bytes as a spec", bytes, |b| {
        check_spec(&String::from_utf8_lossy(&b))
    });
}

#[test]
fn fuzz_the_timeline_reader() {
    let corpus = corpus();
    let timelines = timeline_corpus(&corpus);
    let n = timelines.len();
    let mutated = (0..n, prop::collection::vec(mutation(), 1..6));
    let files = corpus.clone();
    let seeds = timelines.clone();
    fuzz("mutated timelines", mutated, move |(i, edits)| {
        let (config, text) = &seeds[i];
        match text_of(apply(text, &edits, &files)) {
            Some(text) => check_timeline(config, &text),
            None => Ok(()),
        }
    });
    let bytes = (0..n, prop::collection::vec(any::<u8>(), 0..1024));
    fuzz("arbitrary bytes as a timeline", bytes, |(i, b)| {
        check_timeline(&timelines[i].0, &String::from_utf8_lossy(&b))
    });
}

/// Every corpus file reads without a panic, as it is.
#[test]
fn the_corpus_itself_reads() {
    for (path, text) in corpus() {
        let r = check_spec(&text);
        assert!(r.is_ok(), "{}: {r:?}", path.display());
    }
}
