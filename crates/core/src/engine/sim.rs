//! A synchronous driver for the engine on a simulated clock: ticks every interval and answers each
//! request from an oracle. `aviary plan` and `aviary simulate` are built on it, and so are the
//! engine's property tests; a real runner drives the same engine with a real clock.

use serde::Serialize;

use super::{Answer, Command, Engine, EngineError, Input, Millis, Phase, Request, Routes, State};

/// Answers the engine's requests in a simulation.
pub trait Oracle {
    fn answer(&mut self, request: &Request, now: Millis) -> Answer;
}

impl<F: FnMut(&Request, Millis) -> Answer> Oracle for F {
    fn answer(&mut self, request: &Request, now: Millis) -> Answer {
        self(request, now)
    }
}

/// What happened in one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TickLog {
    /// Time of the tick, from the start of the simulation.
    pub at: Millis,
    /// State after the tick.
    pub phase: Phase,
    pub routes: Routes,
    pub iterations: u32,
    pub failed_checks: u32,
    pub commands: Vec<Command>,
    /// Requests asked during the tick, each with its answer.
    pub exchanges: Vec<(Request, Answer)>,
}

/// A finished simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub ticks: Vec<TickLog>,
    pub state: State,
    /// `Some(Succeeded | Failed)` when the run reached a verdict within the tick budget.
    pub verdict: Option<Phase>,
}

impl Run {
    /// The time of the first tick whose commands satisfy `pred`.
    pub fn first_time(&self, pred: impl Fn(&Command) -> bool) -> Option<Millis> {
        self.ticks
            .iter()
            .find(|t| t.commands.iter().any(&pred))
            .map(|t| t.at)
    }

    /// Canary weights in the order the engine set them, consecutive repeats removed.
    pub fn weight_path(&self) -> Vec<u32> {
        weight_path(self.commands())
    }

    /// Every command of the run, in order.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.ticks.iter().flat_map(|t| t.commands.iter())
    }
}

/// Runs one tick to completion, answering every request from `oracle`.
pub fn tick(
    engine: &mut Engine,
    now: Millis,
    oracle: &mut dyn Oracle,
) -> Result<TickLog, EngineError> {
    let mut commands = Vec::new();
    let mut exchanges = Vec::new();
    let mut step = engine.handle(Input::Tick { now })?;
    loop {
        commands.append(&mut step.commands);
        let Some((id, request)) = step.request.take() else {
            break;
        };
        let answer = oracle.answer(&request, now);
        exchanges.push((request, answer.clone()));
        step = engine.handle(Input::Answer { id, answer })?;
    }
    let state = engine.state();
    Ok(TickLog {
        at: now,
        phase: state.phase,
        routes: state.routes,
        iterations: state.iterations,
        failed_checks: state.failed_checks,
        commands,
        exchanges,
    })
}

/// Ticks every `interval_ms` from `t = 0` until a verdict or `max_ticks` ticks, keeping every
/// tick (for tests and short runs; [`run_with`] keeps none).
pub fn run(
    engine: &mut Engine,
    oracle: &mut dyn Oracle,
    max_ticks: usize,
) -> Result<Run, EngineError> {
    let mut ticks = Vec::new();
    let end = run_with(engine, oracle, max_ticks, &mut |t| ticks.push(t))?;
    Ok(Run {
        ticks,
        state: end.state,
        verdict: end.verdict,
    })
}

/// How a run that kept no ticks ended.
#[derive(Debug, Clone, PartialEq)]
pub struct End {
    /// Ticks run.
    pub ticks: usize,
    pub state: State,
    /// `Some(Succeeded | Failed)` when the run reached a verdict within the tick budget.
    pub verdict: Option<Phase>,
}

/// Ticks every `interval_ms` from `t = 0` until a verdict or `max_ticks` ticks, handing each tick
/// to `record` as it ends. Nothing is kept here, so memory does not grow with the ticks.
pub fn run_with(
    engine: &mut Engine,
    oracle: &mut dyn Oracle,
    max_ticks: usize,
    record: &mut dyn FnMut(TickLog),
) -> Result<End, EngineError> {
    let interval = engine.config().interval_ms.max(1);
    let mut verdict = None;
    let mut count = 0;
    for k in 0..max_ticks {
        let now = interval.saturating_mul(k as u64);
        let log = tick(engine, now, oracle)?;
        let reached = log.commands.iter().find_map(|c| match c {
            Command::SetPhase { phase } if phase.is_verdict() => Some(*phase),
            _ => None,
        });
        record(log);
        count = k + 1;
        if reached.is_some() {
            verdict = reached;
            break;
        }
    }
    Ok(End {
        ticks: count,
        state: engine.state().clone(),
        verdict,
    })
}

/// The canary weights a sequence of commands sets, consecutive repeats removed.
pub fn weight_path<'a>(commands: impl IntoIterator<Item = &'a Command>) -> Vec<u32> {
    let mut path: Vec<u32> = Vec::new();
    for c in commands {
        if let Command::SetRoutes { routes } = c {
            if path.last() != Some(&routes.canary) {
                path.push(routes.canary);
            }
        }
    }
    path
}
