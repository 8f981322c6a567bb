//! `cargo bench -p aviary-core --bench judge [-- --scale N --seed S --baseline D --calibration C]`: the judge
//! benchmark (see `aviary_core::judge_bench`): 1,500 seeded releases decided by the engine under
//! Flagger's thresholds, the fixed-window judge and the sequential judge, beside an oracle.
//! Prints a Markdown table (the README's) and the time it took. `--baseline 0s` runs the
//! sequential judge without the primary's history (the README's judge reads 1h);
//! `--calibration C` (default 2000) good releases per condition more measure the sequential
//! judge's false alarms and hold the oracle to them.

use std::io::Write as _;
use std::time::Instant;

use aviary_core::judge_bench;

fn main() {
    let mut scale = 1usize;
    let mut seed = 2026u64;
    let mut baseline: Option<String> = None;
    let mut per_condition = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => scale = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(2026),
            // The sequential judge's `baseline` (the README's is 1h; `0s`: none).
            "--baseline" => baseline = args.next(),
            "--calibration" => {
                per_condition = args.next().and_then(|v| v.parse().ok()).unwrap_or(2000)
            }
            _ => {} // cargo bench passes --bench
        }
    }
    let scenarios = judge_bench::corpus(seed, scale);
    let calibration = judge_bench::calibration(seed, per_condition);
    let started = Instant::now();
    let total = scenarios.len() + calibration.len();
    let result =
        judge_bench::run_with(&scenarios, &calibration, baseline.as_deref(), &mut |done| {
            if done % 100 == 0 || done == total {
                eprint!("\r{done}/{total} releases");
                let _ = std::io::stderr().flush();
            }
        });
    eprintln!();
    match result {
        Ok(results) => {
            println!(
                "{} releases (seed {seed}, sequential judge's baseline {}) and {} more good ones for the sequential judge, {:.1} s; each cell: rolled back % (95% interval) · mean checks / minutes to the verdict (promotion for good releases, rollback for regressions)\n",
                scenarios.len(),
                baseline.as_deref().unwrap_or("1h"),
                calibration.len(),
                started.elapsed().as_secs_f64()
            );
            print!("{}", results.table());
            println!("\nThe sequential judge's false alarms over the corpus's good releases and the calibration's, and the oracle's threshold held to them (the last column above):\n");
            print!("{}", results.false_alarm_table());
            println!("\nChecks to the same verdict, release by release (thresholds and the judge policy both rolled back a regression, or both promoted a good release):\n");
            print!("{}", results.paired_table());
        }
        Err(e) => {
            eprintln!("judge benchmark: {e}");
            std::process::exit(1);
        }
    }
}
