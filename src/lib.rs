//! aviary: progressive delivery as one pipeline step.
//!
//! The crate is laid out as the design describes: a pure [`engine`] that decides, and the modules
//! around it that read specs ([`spec`]) and talk to the world. `plan` and `simulate` drive the
//! engine on a simulated clock.

pub mod analysis;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod deploy;
pub mod engine;
pub mod exit;
pub mod host;
pub mod http;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod report;
pub mod rollout;
pub mod routing;
pub mod runner;
pub mod sandbox;
pub mod simulate;
pub mod spec;
pub mod state;
pub mod status;
pub mod urls;
pub mod validate;
pub mod webhooks;
pub mod workload;
