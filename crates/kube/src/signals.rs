//! SIGTERM and SIGINT for the whole process, from its first instruction to its last.
//!
//! In a container step aviary is PID 1 (exec-form entrypoint, no init). The kernel delivers no
//! default action to PID 1: a SIGTERM it has no handler for is dropped, so without a handler the
//! runner's cancel would be ignored until its SIGKILL. [`install`] is called first thing in
//! `main`: it starts one thread that owns the handlers and records the first signal in a
//! process-wide cell. Everything that may wait for long asks that cell:
//! [`received`] (sync code between steps, and the `kustomize` child loop), [`wait`] (async code;
//! ready at once when a signal came earlier, so a signal during render or a GCS download still
//! stops the rollout that follows) and [`guard`] (run a future unless a signal comes first).
//!
//! The rollout loop ([`crate::runner::Stop`]) listens here too; it alone decides what a signal
//! does once traffic may have moved (back to the primary within its cancel budget).

use std::sync::OnceLock;

use tokio::sync::watch;

/// The first signal received, as its name (`SIGTERM`, `SIGINT`), for every part of the process.
static RECEIVED: OnceLock<watch::Sender<Option<&'static str>>> = OnceLock::new();

fn cell() -> &'static watch::Sender<Option<&'static str>> {
    RECEIVED.get_or_init(|| watch::channel(None).0)
}

/// Installs the handlers (once; later calls do nothing). Until this returns `Ok`, a signal has
/// its default action; after it, signals are only recorded, never fatal.
pub fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED.get_or_init(start).clone()
}

fn start() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    // Everything tokio happens on the listener thread: `install` may be called from inside a
    // runtime (a lazy install from the rollout loop), where a nested `block_on` would panic.
    // The caller waits until the handlers are registered, so they are in place when `install`
    // returns.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let sender = cell();
    std::thread::Builder::new()
        .name("aviary-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the signal listener: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let listeners = (|| {
                    Ok::<_, std::io::Error>((
                        signal(SignalKind::terminate())?,
                        signal(SignalKind::interrupt())?,
                    ))
                })();
                let (mut term, mut int) = match listeners {
                    Ok(pair) => {
                        let _ = ready_tx.send(Ok(()));
                        pair
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot listen for signals: {e}")));
                        return;
                    }
                };
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    // The first signal counts; a second one while we stop changes nothing (the
                    // rollout's cancel budget already fits the runner's grace period).
                    let first = sender.send_if_modified(|seen| {
                        if seen.is_none() {
                            *seen = Some(name);
                            true
                        } else {
                            false
                        }
                    });
                    if first {
                        tracing::warn!("received {name}: stopping");
                    } else {
                        tracing::warn!("received {name} again: still stopping");
                    }
                }
            })
        })
        .map_err(|e| format!("cannot start the signal listener: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the signal listener stopped before it was ready".to_string())?
}

/// The first signal received so far.
pub fn received() -> Option<&'static str> {
    *cell().borrow()
}

/// Waits for a signal; ready at once when one came earlier. Cancel-safe.
pub async fn wait() -> &'static str {
    let mut rx = cell().subscribe();
    loop {
        if let Some(name) = *rx.borrow_and_update() {
            return name;
        }
        if rx.changed().await.is_err() {
            // The sender lives in a static and is never dropped.
            std::future::pending::<()>().await;
        }
    }
}

/// A signal stopped the work it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted(pub &'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "received {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Runs `work` unless a signal comes first (or came already); then `work` is dropped where it is.
pub async fn guard<T>(work: impl std::future::Future<Output = T>) -> Result<T, Interrupted> {
    tokio::select! {
        biased;
        name = wait() => Err(Interrupted(name)),
        value = work => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_from_inside_a_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let installed = rt.block_on(async { install() });
        assert_eq!(installed, Ok(()));
        // A second call is a no-op with the same answer.
        assert_eq!(install(), Ok(()));
    }
}
