//! The canary engine: a pure state machine that reproduces Flagger's scheduler.
//!
//! The engine performs no I/O, reads no clock and never blocks. The runner feeds it [`Input`]s — a
//! tick with the current time, the answer to the last request, a newly seen revision, an abort —
//! and gets back a [`Step`]: commands to carry out (in order), and possibly one [`Request`] whose
//! [`Answer`] the engine needs before the tick can go on. The whole engine, mid-tick included, is
//! plain serde data, so a runner can persist it and resume after a crash.
//!
//! ```text
//!   runner                         engine
//!   ── Tick{now} ────────────────▶  asks primary readiness
//!   ◀── Step{request: Readiness} ─
//!   ── Answer(Ready) ─────────────▶  ... runs webhooks, queries metrics ...
//!   ◀── Step{commands: [SetRoutes, Event, ...], request: None}
//! ```

pub mod config;
pub mod gofmt;
mod machine;
pub mod model;
pub mod sim;

pub use config::{Config, HookRef, MetricCheck, MetricKind, Strategy};
pub use model::*;

use serde::{Deserialize, Serialize};

use machine::{Cx, Need, TickKind};

/// Something the runner tells the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// The analysis interval elapsed; `now` is the runner's clock.
    Tick { now: Millis },
    /// The answer to the request identified by `id`.
    Answer { id: u64, answer: Answer },
    /// The runner saw this revision (a hash of the target's pod template and tracked config).
    Revision { revision: String },
    /// Roll back now: the user ran `aviary abort`. The revision is marked Failed.
    Abort { now: Millis, reason: String },
    /// Stop the analysis and return traffic to the primary, without a verdict: the runner is being
    /// shut down (SIGTERM/SIGINT). A later run analyses the same revision again from the start.
    Cancel { now: Millis, reason: String },
}

/// What the engine wants done after an input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Carry these out in order.
    pub commands: Vec<Command>,
    /// Then answer this (with its id) to let the tick go on. `None`: the tick is over.
    pub request: Option<(u64, Request)>,
}

/// The runner broke the protocol. These are bugs in a runner, reported rather than panicked on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error(
        "a tick is still waiting for the answer to request {id}; answer it before the next tick"
    )]
    Busy { id: u64 },
    #[error("no request {id} is outstanding (the current one is {current:?})")]
    StaleAnswer { id: u64, current: Option<u64> },
    #[error("request {id} asked for {expected}, but the answer is {got}")]
    WrongAnswer {
        id: u64,
        expected: &'static str,
        got: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    kind: TickKind,
    now: Millis,
    /// The state the tick started from; every replay starts here.
    start: State,
    answers: Vec<Answer>,
    /// Commands of this tick already handed to the runner.
    emitted: usize,
    id: u64,
    request: Request,
}

/// The canary phase loop for one Canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    config: Config,
    state: State,
    pending: Option<Pending>,
    /// A revision seen while a tick was in flight, applied when it ends.
    queued_revision: Option<String>,
    next_id: u64,
}

impl Engine {
    pub fn new(config: Config, state: State) -> Engine {
        Engine {
            config,
            state,
            pending: None,
            queued_revision: None,
            next_id: 1,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state as of the last completed tick.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether the next tick asks for the primary's readiness whatever the target's revision:
    /// every tick of an analysis under way does (unless it is suspended or skips the analysis),
    /// so a runner may read the primary beside the target at the tick's start.
    pub fn asks_primary_readiness(&self) -> bool {
        self.state.phase.is_active() && !self.config.suspend && !self.config.skip_analysis
    }

    /// The request a tick is waiting on, if any.
    pub fn outstanding(&self) -> Option<(u64, &Request)> {
        self.pending.as_ref().map(|p| (p.id, &p.request))
    }

    pub fn handle(&mut self, input: Input) -> Result<Step, EngineError> {
        match input {
            Input::Tick { now } => {
                if let Some(p) = &self.pending {
                    return Err(EngineError::Busy { id: p.id });
                }
                Ok(self.start(TickKind::Advance, now))
            }
            Input::Abort { now, reason } => {
                // Whatever the tick in flight was doing is dropped: every command is idempotent,
                // and the rollback below decides from the last settled state.
                self.pending = None;
                Ok(self.start(TickKind::Abort { reason }, now))
            }
            Input::Cancel { now, reason } => {
                self.pending = None;
                Ok(self.start(TickKind::Cancel { reason }, now))
            }
            Input::Revision { revision } => {
                if self.pending.is_some() {
                    self.queued_revision = Some(revision);
                } else {
                    self.state.target_revision = Some(revision);
                }
                Ok(Step::default())
            }
            Input::Answer { id, answer } => {
                let Some(pending) = self.pending.as_mut() else {
                    return Err(EngineError::StaleAnswer { id, current: None });
                };
                if pending.id != id {
                    return Err(EngineError::StaleAnswer {
                        id,
                        current: Some(pending.id),
                    });
                }
                let expected = request_kind(&pending.request);
                let got = answer_kind(&answer);
                if expected != got {
                    return Err(EngineError::WrongAnswer { id, expected, got });
                }
                pending.answers.push(answer);
                Ok(self.replay())
            }
        }
    }

    fn start(&mut self, kind: TickKind, now: Millis) -> Step {
        self.pending = Some(Pending {
            kind,
            now,
            start: self.state.clone(),
            answers: Vec::new(),
            emitted: 0,
            id: 0,
            request: Request::Readiness {
                workload: Workload::Primary,
            },
        });
        self.replay()
    }

    fn replay(&mut self) -> Step {
        let Some(mut pending) = self.pending.take() else {
            return Step::default();
        };
        let mut cx = Cx::new(
            &self.config,
            pending.start.clone(),
            pending.now,
            &pending.answers,
        );
        let flow = machine::run(&mut cx, &pending.kind);
        let new_commands = cx.out.split_off(pending.emitted.min(cx.out.len()));
        match flow {
            Err(Need(request)) => {
                let id = self.next_id;
                self.next_id += 1;
                pending.emitted += new_commands.len();
                pending.id = id;
                pending.request = request.clone();
                self.pending = Some(pending);
                Step {
                    commands: new_commands,
                    request: Some((id, request)),
                }
            }
            Ok(()) => {
                self.state = cx.st;
                if let Some(revision) = self.queued_revision.take() {
                    self.state.target_revision = Some(revision);
                }
                Step {
                    commands: new_commands,
                    request: None,
                }
            }
        }
    }
}

fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::Readiness { .. } => "readiness",
        Request::Webhook { .. } => "webhook",
        Request::Metric { .. } => "metric",
    }
}

fn answer_kind(a: &Answer) -> &'static str {
    match a {
        Answer::Readiness(_) => "readiness",
        Answer::Webhook(_) => "webhook",
        Answer::Metric(_) => "metric",
    }
}

#[cfg(test)]
mod tests;
