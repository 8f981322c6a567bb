//! aviary's exit codes. The README's table is generated from the same words; keep them in step.

/// What the process tells the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what it was asked; a rollout was promoted.
    Success = 0,
    /// The canary was rolled back: the analysis failed, a rollback webhook fired, or it was aborted.
    RolledBack = 1,
    /// Invalid input: a spec, timeline, flag or file that cannot be used. Nothing was changed.
    InvalidInput = 2,
    /// The environment failed us: a file could not be read or written, a service was unreachable.
    Runtime = 3,
    /// Another runner holds the lock on this canary.
    Locked = 4,
    /// No verdict within the limit: a gate stayed closed or the run timed out.
    NoVerdict = 5,
    /// Cancelled by SIGINT/SIGTERM after traffic was returned to the primary.
    Cancelled = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit of a child aviary process: its code when it is one of ours, else a runtime error.
    pub fn from_code(code: i32) -> Exit {
        Exit::ALL
            .into_iter()
            .find(|e| i32::from(e.code()) == code)
            .unwrap_or(Exit::Runtime)
    }

    pub const ALL: [Exit; 7] = [
        Exit::Success,
        Exit::RolledBack,
        Exit::InvalidInput,
        Exit::Runtime,
        Exit::Locked,
        Exit::NoVerdict,
        Exit::Cancelled,
    ];
}
