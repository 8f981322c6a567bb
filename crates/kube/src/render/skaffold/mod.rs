//! Reads `skaffold.yaml` (`skaffold/v4beta1` to `skaffold/v4beta13`): multi-config files, `requires`
//! (recursively, relative to the requiring file, cycle-safe) and profiles (`build`, `manifests` and
//! JSON `patches`). The result is, per config, the images it builds and where its manifests are.
//!
//! - `loader.rs`: [`load`]: the root file, `requires` followed recursively, profile activation.
//! - `profiles.rs`: a config's profiles and how one is applied (`build`, `manifests`, `patches`).
//! - `manifests.rs`: what aviary needs of a config: its artifacts, kustomizations and raw YAML.
//! - `document.rs`: one config document, its field paths and the lines they are written at.
//! - `paths.rs`: [`join_clean`] and the directory of a config file.
//! - `tests.rs`: loading scratch projects end to end.

mod document;
mod loader;
mod manifests;
mod paths;
mod profiles;
#[cfg(test)]
mod tests;

pub use loader::{load, Loaded};
pub use manifests::{Config, KustomizeSource, RawSource};
pub use paths::join_clean;

/// The Skaffold schema versions aviary reads.
pub const MIN_BETA: u32 = 1;
pub const MAX_BETA: u32 = 13;
