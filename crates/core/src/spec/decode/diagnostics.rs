//! What decoding has found so far ([`Cx`]), the paths of fields, and the help attached to a
//! diagnostic: did-you-mean suggestions and what a field means.

use super::fields::Field;
use crate::spec::placeholders;
use crate::spec::yaml::quote;
use crate::spec::{Diagnostic, TemplateUse};

/// What has been found so far.
pub(super) struct Cx<'f> {
    pub(super) file: &'f str,
    /// The whole file, to find the line of a placeholder inside a multi-line query.
    pub(super) text: &'f str,
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    /// `aviary.dev/v1alpha1`: unknown fields are errors, not warnings.
    pub(super) strict: bool,
    /// Canary metrics that use a MetricTemplate, in file order.
    pub(super) uses: Vec<TemplateUse>,
}

impl<'f> Cx<'f> {
    pub(super) fn new(file: &'f str, text: &'f str) -> Self {
        Cx {
            file,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
            strict: false,
            uses: Vec::new(),
        }
    }

    /// The line, at or after `from`, that holds `needle` (a placeholder of a query); `from`
    /// when none does.
    pub(super) fn line_with(&self, from: usize, needle: &str) -> usize {
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .find(|(_, l)| l.contains(needle))
            .map_or(from, |(i, _)| i + 1)
    }

    /// Reports every problem with the placeholders of the query at `field`; returns them.
    pub(super) fn check_query(
        &mut self,
        field: &Field,
        query: &str,
    ) -> Vec<placeholders::Placeholder> {
        let (found, problems) = placeholders::scan(query);
        for p in problems {
            let excerpt: String = query[p.offset..]
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect();
            let excerpt = excerpt.trim_end();
            let line = self.line_with(field.line(), excerpt);
            self.error(line, &field.path, p.message).hint(p.help);
        }
        found
    }

    pub(super) fn error(
        &mut self,
        line: usize,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let i = self.errors.len();
        self.errors
            .push(Diagnostic::error(self.file, line, path, message));
        &mut self.errors[i]
    }

    pub(super) fn warn(
        &mut self,
        line: usize,
        path: &str,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let i = self.warnings.len();
        self.warnings
            .push(Diagnostic::warning(self.file, line, path, message));
        &mut self.warnings[i]
    }

    /// An unknown field: an error for aviary.dev, a warning for flagger.app (Flagger drops it).
    pub(super) fn unknown(&mut self, line: usize, path: &str, key: &str) -> &mut Diagnostic {
        if self.strict {
            self.error(line, path, format!("unknown field {}", quote(key)))
        } else {
            self.warn(
                line,
                path,
                format!("unknown field {}; Flagger would drop it", quote(key)),
            )
        }
    }
}

/// Attaches a fix to a diagnostic just recorded.
pub(super) trait Hint {
    fn hint(self, help: impl Into<String>);
}

impl Hint for &mut Diagnostic {
    fn hint(self, help: impl Into<String>) {
        self.help = Some(help.into());
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest of `choices` to `word`, when it is at most two edits away (ignoring case).
pub(super) fn closest<'c>(word: &str, choices: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_lowercase();
    choices
        .iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean "x"?`, or the list of choices.
pub(super) fn choice_help(word: &str, choices: &[&str], list_intro: &str) -> String {
    match closest(word, choices) {
        Some(c) => format!("did you mean {}?", quote(c)),
        None => format!("{list_intro}: {}", choices.join(", ")),
    }
}

/// What a field means, for errors that have no more specific fix: the user sees what the value is
/// for and an example of a good one.
pub(super) fn field_help(path: &str) -> Option<&'static str> {
    let field = path.rsplit('.').next().unwrap_or(path);
    let field = field.split('[').next().unwrap_or(field);
    Some(match field {
        "stepWeight" => "stepWeight is the percentage of traffic added to the canary at each step, e.g. stepWeight: 10",
        "maxWeight" => "maxWeight is the largest percentage of traffic the canary gets before promotion, e.g. maxWeight: 50",
        "stepWeights" => "stepWeights lists the canary's traffic percentages in increasing order, e.g. stepWeights: [1, 10, 50]",
        "stepWeightPromotion" => "stepWeightPromotion is the percentage moved back to the primary at each promotion step, e.g. stepWeightPromotion: 25",
        "threshold" => "threshold is how many failed checks roll the canary back, e.g. threshold: 5 (at most 1000000)",
        "iterations" => "iterations is how many analysis ticks A/B testing or blue/green runs, e.g. iterations: 10 (at most 1000000: 11.6 days at a 1s interval)",
        "retries" => "retries is how many times a failed webhook call is tried again within one check, e.g. retries: 3 (at most 100)",
        "interval" => "a Go duration such as 30s, 1m or 1m30s",
        "timeout" => "a Go duration such as 10s or 1m",
        "port" => "a port number 1-65535, e.g. port: 9898",
        "progressDeadlineSeconds" => "seconds a workload may take to become ready before the canary is rolled back, e.g. progressDeadlineSeconds: 600",
        "mirrorWeight" => "mirrorWeight is the percentage of traffic copied to the canary, e.g. mirrorWeight: 100",
        "primaryReadyThreshold" | "canaryReadyThreshold" => "the percentage of pods that must be available, e.g. 100",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_distances() {
        assert_eq!(levenshtein("stepWieght", "stepWeight"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(
            closest("Interval", &["interval", "iterations"]),
            Some("interval")
        );
        assert_eq!(closest("zzz", &["interval"]), None);
    }
}
