//! A release of several canaries at once: every Canary a target renders, each driven by its own
//! runner (engine, state ConfigMap, Lease), bound by one verdict policy.
//!
//! Under [`Policy::AllOrNothing`] a release is one change: a canary that passed its analysis
//! waits at a promotion gate of its own ([`RELEASE_GATE`], answered like a confirm-promotion
//! webhook) until every canary with something to analyse has passed too, and the first canary
//! that fails (rolled back, gave up, stopped) rolls back every other one still in its analysis.
//! Under [`Policy::Independent`] there is no gate and no shared fate: each verdict stands alone.
//!
//! A member leaves the release when it turns out to have nothing to analyse (its revision did
//! not change, or its first run only bootstrapped the primary): the others do not wait for it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The confirm-promotion gate that holds a canary of an all-or-nothing release until every
/// other one has passed its analysis.
pub const RELEASE_GATE: &str = "release";

pub use aviary_core::request::VerdictPolicy as Policy;

/// What the release gate says to a canary that passed its analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every member with something to analyse has passed: promote.
    Open,
    /// Still analysing: these members (qualified names).
    Waiting(Vec<String>),
    /// Another member failed: this one must not be promoted.
    Failed(String),
}

#[derive(Debug, Default)]
struct Members {
    /// Members that may still have to pass (not left, not failed).
    pending: BTreeSet<String>,
    /// Members that passed their analysis and wait at the gate (or went through it).
    passed: BTreeSet<String>,
    /// The first member that failed, and why.
    failed: Option<(String, String)>,
}

/// The longest spread of the members' first ticks (see [`Release::stagger`]).
pub const MAX_STAGGER: Duration = Duration::from_secs(5);
/// The members' first ticks spread over this fraction of the interval (1/STAGGER_SHARE): a
/// release takes at most that much longer than its schedule.
const STAGGER_SHARE: u32 = 50;

/// The shared state of one release; cheap to clone (one per runner).
#[derive(Clone)]
pub struct Release {
    policy: Policy,
    /// Every member, sorted: a member's place sets its [`Release::stagger`].
    order: Arc<Vec<String>>,
    members: Arc<Mutex<Members>>,
    /// Bumped on every change a waiting runner may act on (a pass, a leave, a failure).
    changes: Arc<watch::Sender<u64>>,
    /// When the release began (when this was made, or earlier: [`Release::since`]): every
    /// member's ticks keep to a grid from here ([`Release::first_tick_at`]).
    started: tokio::time::Instant,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Release {
    /// A release of these members (their qualified names).
    pub fn new(policy: Policy, members: impl IntoIterator<Item = String>) -> Release {
        let pending: BTreeSet<String> = members.into_iter().collect();
        Release {
            policy,
            order: Arc::new(pending.iter().cloned().collect()),
            members: Arc::new(Mutex::new(Members {
                pending,
                ..Members::default()
            })),
            changes: Arc::new(watch::channel(0).0),
            started: tokio::time::Instant::now(),
        }
    }

    /// The release began at `started` (the command's start, before its Leases and its
    /// target were applied), not when this was made: the grid of ticks starts there.
    pub fn since(mut self, started: tokio::time::Instant) -> Release {
        self.started = started.min(self.started);
        self
    }

    /// When `member`'s first tick is due: the release's start plus its [`Release::stagger`].
    /// Its later ticks follow the interval from there, so the moment a runner spends getting
    /// ready (its first reads, on an API server busy with every other member's) does not push
    /// its whole schedule back: the release ends on its plan, not that much later.
    pub fn first_tick_at(&self, member: &str, interval: Duration) -> tokio::time::Instant {
        self.started + self.stagger(member, interval)
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// How long `member` waits before its first tick: the members' ticks spread evenly over a
    /// fiftieth of `interval` (at most [`MAX_STAGGER`]), so that a release of hundreds of canaries
    /// does not query the metrics backend and the API server in the same instant. Each member
    /// keeps its offset (ticks follow the interval from the first), so the release takes at
    /// most that much longer than its schedule.
    pub fn stagger(&self, member: &str, interval: Duration) -> Duration {
        let n = self.order.len();
        let Some(place) = self.order.iter().position(|m| m == member) else {
            return Duration::ZERO;
        };
        if n < 2 {
            return Duration::ZERO;
        }
        let spread = (interval / STAGGER_SHARE).min(MAX_STAGGER);
        spread.mul_f64(place as f64 / n as f64)
    }

    /// Whether a canary of this release waits for the others before its promotion.
    pub fn gated(&self) -> bool {
        self.policy == Policy::AllOrNothing
    }

    fn change(&self, f: impl FnOnce(&mut Members) -> bool) {
        let changed = match self.members.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        };
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Members) -> T) -> T {
        match self.members.lock() {
            Ok(m) => f(&m),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// `member` has nothing (more) to analyse: the others no longer wait for it.
    pub fn leave(&self, member: &str) {
        self.change(|m| m.pending.remove(member));
    }

    /// `member` failed (rolled back, gave up, was stopped) for `reason`. Under all-or-nothing
    /// the others roll back; the first failure is the one they name.
    pub fn fail(&self, member: &str, reason: &str) {
        self.change(|m| {
            m.pending.remove(member);
            m.passed.remove(member);
            if m.failed.is_none() {
                m.failed = Some((member.to_string(), reason.to_string()));
                true
            } else {
                false
            }
        });
    }

    /// `member` passed its analysis and asks the gate whether it may be promoted.
    pub fn pass(&self, member: &str) -> Gate {
        let mut gate = Gate::Open;
        self.change(|m| {
            let new = m.passed.insert(member.to_string());
            gate = Self::gate_of(self.policy, m, member);
            new
        });
        gate
    }

    fn gate_of(policy: Policy, m: &Members, member: &str) -> Gate {
        if policy == Policy::Independent {
            return Gate::Open;
        }
        if let Some((who, why)) = &m.failed {
            if who != member {
                return Gate::Failed(format!("{who} failed ({why})"));
            }
        }
        let waiting: Vec<String> = m.pending.difference(&m.passed).cloned().collect();
        if waiting.is_empty() {
            Gate::Open
        } else {
            Gate::Waiting(waiting)
        }
    }

    /// Under all-or-nothing, why `member` must roll back: another member failed. `None` while
    /// no other member failed, and always under the independent policy.
    pub fn failure_for(&self, member: &str) -> Option<String> {
        if self.policy == Policy::Independent {
            return None;
        }
        self.read(|m| match &m.failed {
            Some((who, why)) if who != member => Some(format!(
                "rolled back with the release: {who} failed ({why})"
            )),
            _ => None,
        })
    }

    /// Whether `member`, waiting at the gate, may go through it now.
    pub fn open_for(&self, member: &str) -> bool {
        self.read(|m| {
            m.passed.contains(member) && Self::gate_of(self.policy, m, member) == Gate::Open
        })
    }

    /// Resolves at the next change of the release (a member passed, left or failed).
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.changes.subscribe();
        async move {
            // A closed channel cannot happen while `self` lives; never resolve then.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(policy: Policy) -> Release {
        Release::new(policy, ["a.ns", "b.ns", "c.ns"].map(String::from))
    }

    #[test]
    fn all_or_nothing_opens_the_gate_when_every_changed_member_passed() {
        let r = three(Policy::AllOrNothing);
        assert_eq!(
            r.pass("a.ns"),
            Gate::Waiting(vec!["b.ns".into(), "c.ns".into()])
        );
        // c had nothing to analyse.
        r.leave("c.ns");
        assert!(!r.open_for("a.ns"));
        assert_eq!(r.pass("b.ns"), Gate::Open);
        assert!(r.open_for("a.ns"));
        assert_eq!(r.failure_for("a.ns"), None);
    }

    #[test]
    fn all_or_nothing_fails_the_others_and_names_the_first_failure() {
        let r = three(Policy::AllOrNothing);
        assert_eq!(
            r.pass("a.ns"),
            Gate::Waiting(vec!["b.ns".into(), "c.ns".into()])
        );
        r.fail("b.ns", "request-success-rate");
        r.fail("c.ns", "later");
        assert_eq!(
            r.pass("a.ns"),
            Gate::Failed("b.ns failed (request-success-rate)".into())
        );
        assert!(!r.open_for("a.ns"));
        assert_eq!(
            r.failure_for("a.ns").as_deref(),
            Some("rolled back with the release: b.ns failed (request-success-rate)")
        );
        assert_eq!(
            r.failure_for("b.ns"),
            None,
            "its own failure is not news to it"
        );
    }

    #[test]
    fn members_start_spread_over_a_fiftieth_of_the_interval_at_most_five_seconds() {
        let r = Release::new(Policy::AllOrNothing, ["d", "a", "c", "b"].map(String::from));
        let at = |m: &str, s: u64| r.stagger(m, Duration::from_secs(s));
        // Sorted: a, b, c, d over 1 s (a fiftieth of 50 s).
        assert_eq!(at("a", 50), Duration::ZERO);
        assert_eq!(at("c", 50), Duration::from_millis(500));
        assert_eq!(at("d", 50), Duration::from_millis(750));
        // A 10-minute interval spreads over 5 s, not 12.
        assert_eq!(at("b", 600), Duration::from_millis(1250));
        assert_eq!(at("nobody", 10), Duration::ZERO);
        let alone = Release::new(Policy::AllOrNothing, ["a".to_string()]);
        assert_eq!(alone.stagger("a", Duration::from_secs(60)), Duration::ZERO);
        // The grid starts with the release, not with each runner's first tick.
        assert_eq!(
            r.first_tick_at("c", Duration::from_secs(50)) - r.started,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn independent_members_neither_wait_nor_follow() {
        let r = three(Policy::Independent);
        assert_eq!(r.pass("a.ns"), Gate::Open);
        r.fail("b.ns", "x");
        assert_eq!(r.failure_for("a.ns"), None);
        assert_eq!(r.pass("c.ns"), Gate::Open);
    }

    #[test]
    fn a_change_wakes_a_waiting_member() {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("{e}"),
        };
        let r = three(Policy::AllOrNothing);
        let woken = r.changed();
        let other = r.clone();
        rt.block_on(async move {
            let waker = tokio::spawn(async move { other.leave("b.ns") });
            woken.await;
            let _ = waker.await;
        });
        assert!(!r.read(|m| m.pending.contains("b.ns")));
    }
}
