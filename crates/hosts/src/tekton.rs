//! Tekton: the catalog Task (`tekton/task/aviary/<version>/aviary.yaml`) passes its params as
//! `PARAM_<NAME>` environment variables (never into a script) and the paths of its results as
//! `RESULT_<NAME>_PATH` (`$(results.<name>.path)`, `/tekton/results/<name>` by default). All
//! results of a pod share one 4096-byte termination message, so they stay small: the full report
//! goes to a file in the workspace and the `report` result holds its path.

use std::path::PathBuf;

use super::{Env, FinishError, PipelineHost};
use aviary_core::report::Report;

/// What all results of a step may weigh together (Tekton's termination message limit).
pub const RESULTS_LIMIT: usize = 4096;

pub struct Tekton {
    env: Box<Env>,
}

impl Tekton {
    pub fn new(env: Box<Env>) -> Tekton {
        Tekton { env }
    }

    fn result_path(&self, name: &str) -> PathBuf {
        let key = format!("RESULT_{}_PATH", name.replace('-', "_").to_uppercase());
        match (self.env)(&key).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from("/tekton/results").join(name),
        }
    }

    /// The results this step writes, in order.
    pub fn results(report: &Report, report_path: &std::path::Path) -> Vec<(&'static str, String)> {
        vec![
            ("verdict", report.verdict.as_str().to_string()),
            ("weight", report.canary_weight.to_string()),
            ("failed-checks", report.failed_checks.to_string()),
            ("report", report_path.display().to_string()),
        ]
    }
}

impl PipelineHost for Tekton {
    fn name(&self) -> &'static str {
        "tekton"
    }

    fn raw_input(&self, name: &str) -> Option<String> {
        (self.env)(&format!("PARAM_{}", name.replace('-', "_").to_uppercase()))
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn finish(
        &mut self,
        report: &Report,
        report_path: &std::path::Path,
    ) -> Result<(), FinishError> {
        let results = Self::results(report, report_path);
        let total: usize = results.iter().map(|(n, v)| n.len() + v.len()).sum();
        if total > RESULTS_LIMIT {
            return Err(FinishError::TooLarge {
                total,
                limit: RESULTS_LIMIT,
            });
        }
        let mut problems = Vec::new();
        for (name, value) in results {
            let path = self.result_path(name);
            // Tekton reads a result as written: no trailing newline.
            if let Err(source) = std::fs::write(&path, value.as_bytes()) {
                problems.push(FinishError::Write {
                    what: format!("result {name}"),
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        FinishError::from_all(problems)
    }

    fn default_report(&self) -> PathBuf {
        PathBuf::from("aviary-report.json")
    }
}
