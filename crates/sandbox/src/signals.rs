//! How the sandbox stops: on SIGINT (a terminal's Ctrl-C, to the sandbox alone or to its
//! whole process group) or SIGTERM, it forwards the signal to the `aviary rollout` child,
//! which returns the traffic to the primary and exits; then it stops the clients, the demo
//! apps, the proxy and the metrics backend, in that order, and exits 130.
//!
//! For that order to hold, every child runs in a process group of its own ([`own_group`]):
//! a Ctrl-C at the terminal reaches the sandbox only, not HAProxy, Prometheus or the demo
//! apps (which would die at once and fail every client request while the rollout still
//! returns the traffic), and the rollout gets exactly one signal, the sandbox's. Children
//! also get `PR_SET_PDEATHSIG(SIGKILL)`, so none outlives a sandbox that is killed outright.

use tokio::sync::watch;

/// A signal that asks the sandbox to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    pub fn number(self) -> libc::c_int {
        match self {
            StopSignal::Interrupt => libc::SIGINT,
            StopSignal::Terminate => libc::SIGTERM,
        }
    }
}

/// Whether, and by which signal, the sandbox was asked to stop. Clones share it: every holder
/// sees the first signal.
#[derive(Debug, Clone)]
pub struct Interrupt {
    /// The first signal and when it came (Unix ms).
    rx: watch::Receiver<Option<(StopSignal, u64)>>,
}

impl Interrupt {
    /// One that never fires (the tests and the benchmark stop the sandbox themselves).
    pub fn never() -> Interrupt {
        let (_, rx) = watch::channel(None);
        Interrupt { rx }
    }

    /// Listens for SIGINT and SIGTERM on the current runtime. From now on neither kills the
    /// process: the first one is recorded, later ones are logged and otherwise ignored.
    pub fn listen() -> std::io::Result<Interrupt> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    Some(()) = int.recv() => StopSignal::Interrupt,
                    Some(()) = term.recv() => StopSignal::Terminate,
                    else => break,
                };
                tx.send_if_modified(|first: &mut Option<(StopSignal, u64)>| match first {
                    Some((first, _)) => {
                        tracing::info!(
                            "sandbox: {} received; already stopping after {}",
                            received.name(),
                            first.name()
                        );
                        false
                    }
                    None => {
                        *first = Some((received, aviary_kube::runner::wall_ms()));
                        true
                    }
                });
            }
        });
        Ok(Interrupt { rx })
    }

    /// The signal received, if any.
    pub fn get(&self) -> Option<StopSignal> {
        self.received().map(|(s, _)| s)
    }

    /// The signal received and when (Unix ms), if any.
    pub fn received(&self) -> Option<(StopSignal, u64)> {
        *self.rx.borrow()
    }

    /// Waits for the signal (forever, for [`Interrupt::never`]).
    pub async fn wait(&self) -> StopSignal {
        let mut rx = self.rx.clone();
        loop {
            if let Some((s, _)) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Sends `signal` to the process `pid`. `false` when it could not (it is gone).
pub fn send(pid: u32, signal: StopSignal) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a positive pid of our own child and a valid signal number.
    unsafe { libc::kill(pid, signal.number()) == 0 }
}

/// Makes `command` a child the sandbox stops itself: in a process group of its own (so a
/// terminal's Ctrl-C, sent to the sandbox's group, does not reach it), and killed if the
/// sandbox dies first (`PR_SET_PDEATHSIG`, which fires when the *thread* that spawned it
/// ends: the sandbox spawns from its runtime's threads, which live as long as it does).
pub fn own_group(command: &mut tokio::process::Command) {
    command.process_group(0);
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure only calls prctl(2) and getppid(2), which are async-signal-safe,
    // between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The sandbox died before the prctl: do not start an orphan. (No allocation
            // between fork and exec: a raw OS error.)
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
