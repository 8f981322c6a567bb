//! Workloads, as Flagger manages them: the target Deployment is the canary; aviary clones it to
//! `<target>-primary` (with `-primary` copies of the ConfigMaps and Secrets it references), creates
//! the apex, primary and canary Services, checks readiness the way Flagger does, scales the canary,
//! and promotes by copying the canary's pod template to the primary.
//!
//! - `discovery.rs`: the [`Workloads`] pair, found from the Canary's targetRef and selector label.
//! - `deployment.rs`: the primary Deployment: bootstrap, scaling, pod labels, promotion.
//! - `services.rs`: the apex, primary and canary Services and their selectors.
//! - `autoscaler.rs`: the primary's HorizontalPodAutoscaler, cloned from `autoscalerRef`.
//! - `config_copies.rs`: the ConfigMaps and Secrets a pod template references, and their copies.
//! - `revision.rs`: the target snapshot and the revision hash it makes.
//! - `readiness.rs`: Flagger's Deployment readiness check.

mod autoscaler;
mod config_copies;
mod deployment;
mod discovery;
mod readiness;
mod revision;
mod services;

pub use config_copies::{tracked_configs, TrackedConfigs};
pub use deployment::Promotion;
pub use discovery::{Workloads, SELECTOR_LABELS, SHARED_LABEL};
pub use readiness::deployment_readiness;
pub use revision::{revision_of, TargetSnapshot, AVIARY_PREFIX};
