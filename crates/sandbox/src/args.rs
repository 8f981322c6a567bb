//! The arguments of `aviary sandbox` ([`SandboxArgs`]) and what its second release does
//! ([`Scenario`]).

use std::path::PathBuf;

use clap::Args;

use crate::metrics::MetricsChoice;
use crate::{ProxyChoice, Router};

/// What the second release does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A healthy 2.0.0: promoted.
    Good,
    /// 2.0.0-errors answers 20% of requests with 500: rolled back on the success rate.
    Errors,
    /// 2.0.0-slow is four times slower but under the 500 ms threshold: the judge rolls it back.
    Latency,
    /// An A/B test: only requests with `x-canary: insider` reach 2.0.0, which is promoted.
    Ab,
    /// A healthy 2.0.0 on an unreliable API server (503s, conflicts, slow answers): promoted.
    Flaky,
}

/// The name a value has on the command line.
pub(crate) fn flag_value(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

impl Scenario {
    pub fn name(self) -> String {
        flag_value(self)
    }

    /// The image tag of the new release.
    pub fn tag(self) -> &'static str {
        match self {
            Scenario::Errors => "2.0.0-errors",
            Scenario::Latency => "2.0.0-slow",
            _ => "2.0.0",
        }
    }

    /// The Skaffold profile of the example to render.
    pub fn profile(self) -> &'static str {
        match self {
            Scenario::Ab => "prod-ab",
            _ => "prod",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Good => "a healthy release",
            Scenario::Errors => "a release that answers 20% of its requests with HTTP 500",
            Scenario::Latency => {
                "a release four times slower, still under the 500 ms threshold (a job for the judge)"
            }
            Scenario::Ab => "an A/B test for the requests carrying `x-canary: insider`",
            Scenario::Flaky => {
                "a healthy release on an API server that fails 10% of its requests"
            }
        }
    }

    /// The verdict a correct rollout reaches.
    pub fn expected(self) -> aviary_core::report::Verdict {
        match self {
            Scenario::Errors | Scenario::Latency => aviary_core::report::Verdict::RolledBack,
            _ => aviary_core::report::Verdict::Promoted,
        }
    }
}

/// How the verdicts of a release of several services combine (`aviary rollout
/// --verdict-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// None is promoted until every one passed its analysis; one that fails rolls the others
    /// back.
    #[default]
    AllOrNothing,
    /// Each service's verdict stands alone; the release's is the worst of them.
    Independent,
}

impl Policy {
    pub fn name(self) -> String {
        flag_value(self)
    }

    /// What happens to the other services when one fails, for the live view.
    pub fn describe(self) -> &'static str {
        match self {
            Policy::AllOrNothing => {
                "none is promoted until all passed; one that fails rolls the others back"
            }
            Policy::Independent => "each service's verdict stands alone",
        }
    }
}

/// `aviary sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// What the new release does (default: good; with --services 2 or more, errors: the
    /// second service's new version is the bad one, the others get a healthy 2.0.0).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,

    /// How many services to release at once, in one `aviary rollout`: podinfo, then cart,
    /// search, checkout, ledger; each its own Deployment, Canary, split and clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=crate::MAX_SERVICES as i64))]
    pub services: u8,

    /// With several services: all-or-nothing (none is promoted until every one passed; one
    /// rolled back rolls the others back) or independent (each verdict alone).
    #[arg(long, value_enum, default_value = "all-or-nothing")]
    pub verdict_policy: Policy,

    /// The traffic provider aviary drives (and the sandbox's proxy follows).
    #[arg(long, value_enum, default_value = "gatewayapi")]
    pub router: Router,

    /// The metrics backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub metrics: MetricsChoice,

    /// The traffic split.
    #[arg(long, value_enum, default_value = "auto")]
    pub proxy: ProxyChoice,

    /// Client requests per second through the split.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(5..=2000))]
    pub rate: u32,

    /// Where the sandbox keeps its files (kubeconfig, example, report, summary, logs); default:
    /// a new directory under the system's temporary directory. It is left in place.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Write the release's JSON report here too (it is always in the workdir).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// After the verdict, leave the cluster, the apps, the clients and the split running until
    /// Ctrl-C, to look around with kubectl (the header prints the command line).
    #[arg(long)]
    pub keep: bool,
}

impl SandboxArgs {
    /// The scenario asked for, else the default for the number of services.
    pub fn scenario(&self) -> Scenario {
        self.scenario.unwrap_or(if self.services > 1 {
            Scenario::Errors
        } else {
            Scenario::Good
        })
    }
}
