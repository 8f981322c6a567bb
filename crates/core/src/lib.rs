//! aviary's core: what a release *is* and what to do next, with no I/O of its own.
//!
//! - [`spec`] reads Flagger's `Canary` and `MetricTemplate` (and aviary's extensions) from text,
//!   with every problem as a [`spec::Diagnostic`] at its file, line and field path.
//! - [`engine`] is the canary state machine: given what it has seen, it answers with commands
//!   (set routes, run a webhook, query a metric, promote this revision). It never waits, never
//!   reads a clock and never talks to a cluster; the shell in `aviary-kube` carries its commands
//!   out and feeds the answers back.
//! - [`analysis`] is the statistical judge; [`plan`] and [`simulate`] run the engine on a
//!   simulated clock; [`report`] is the report every host and command writes; [`exit`] the
//!   documented exit codes; [`urls`] redaction and URL rules, [`addresses`] every address of a
//!   rollout checked up front.
//!
//! Purity is enforced by Cargo, not by convention: this crate's `[dependencies]` hold only the
//! serde family, a YAML parser, `url`, `thiserror` and the `tracing` facade, so no module here
//! can open a socket, spawn a task or touch the cluster (`cargo tree -p aviary-core` shows it).
//! Reading files is `aviary_kube::files`'s job; the checks on their bytes are here
//! ([`spec::input`]), so every reader applies the same caps.

pub mod addresses;
pub mod analysis;
pub mod engine;
pub mod exit;
pub mod judge_bench;
pub mod plan;
pub mod report;
pub mod request;
pub mod simulate;
pub mod spec;
pub mod urls;
