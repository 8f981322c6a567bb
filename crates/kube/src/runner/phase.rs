//! Cloud Deploy's `customCanaryDeployment` phases: one run per phase, held at its weight by a
//! gate of its own.

use aviary_core::engine::{Config, Phase, State};
use aviary_core::spec::HookType;

use super::RunError;

/// A phase of a canary whose weights are driven from outside: Cloud Deploy's
/// `customCanaryDeployment` runs aviary once per phase (`canary-25`, `canary-50`, `stable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalPhase {
    /// Take the canary to this weight (1-99), analyse it there once, and stop with traffic split.
    Canary(u32),
    /// Finish: promote a canary that an earlier phase left at some weight (after one more passing
    /// analysis there), or run the Canary's own schedule when no phase came before.
    Stable,
}

/// The name of the confirm-promotion gate that holds an externally driven phase at its weight.
pub const PHASE_GATE: &str = "next-phase";

/// The engine's configuration for one externally driven phase, and the index of the gate that
/// holds it (none for `stable`).
pub(super) fn phase_config(
    mut config: Config,
    phase: ExternalPhase,
    state: &State,
) -> Result<(Config, Option<usize>), RunError> {
    let hold_at = |config: &mut Config, weight: u32| {
        config.step_weight = 0;
        config.step_weights = vec![weight];
        config.max_weight = weight;
    };
    match phase {
        ExternalPhase::Canary(weight) => {
            if config.strategy != aviary_core::engine::Strategy::Canary {
                return Err(RunError::PhaseNeedsCanaryStrategy {
                    canary: config.qualified(),
                    weight,
                    strategy: config.strategy.as_str(),
                });
            }
            if !(1..=99).contains(&weight) {
                return Err(RunError::PhaseOutOfRange {
                    canary: config.qualified(),
                    weight,
                });
            }
            hold_at(&mut config, weight);
            config.webhooks.push(aviary_core::engine::HookRef {
                name: PHASE_GATE.to_string(),
                hook: HookType::ConfirmPromotion,
            });
            let gate = config.webhooks.len() - 1;
            Ok((config, Some(gate)))
        }
        ExternalPhase::Stable => {
            let w = state.routes.canary;
            if matches!(state.phase, Phase::Progressing | Phase::WaitingPromotion) && w > 0 {
                hold_at(&mut config, w);
            }
            Ok((config, None))
        }
    }
}
