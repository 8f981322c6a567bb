//! The lock one runner holds on one canary: a `coordination.k8s.io/v1` Lease `<canary>-aviary`.
//!
//! Three rules keep two pipelines from ever driving one canary:
//!
//! - **A holder is one process.** Its identity names the pipeline run (what a person recognises)
//!   and the process (host, pid, pid namespace, boot, a random nonce), so two jobs of one
//!   workflow run, which share `GITHUB_RUN_ID`, are two holders.
//! - **Every write is conditional.** Taking, renewing and releasing the lease replace it at the
//!   resourceVersion that was read and checked, or that our own last write left (nobody wrote
//!   it since: it still names us), so a runner never renews or clears a lease that another one
//!   has taken meanwhile: such a write conflicts, and the lease is read and checked again.
//! - **A runner that cannot prove it holds the lease stops.** [`LeaseGuard::keep`] renews in
//!   the background; when renewals have failed for [`GIVE_UP_AFTER`] (the lease still has
//!   `LEASE_SECONDS - GIVE_UP_AFTER` to run, time to return traffic) or someone else holds it,
//!   it says so on a watch channel and the runner stops writing.
//!
//! A lease held by someone else is taken over only when its holder is gone: it released it, it
//! expired, it was this machine's process that no longer runs, it was an earlier attempt of the
//! same pipeline job (a GitHub re-run starts only once the previous attempt has ended), or
//! another job of the same Cloud Deploy rollout (whose jobs run one at a time).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

use crate::cluster::{managed_by_aviary, managed_labels, retry, retry_within, ClusterError};
use aviary_core::spec::state_object_name as object_name;

/// How long a lease lasts without renewal.
pub const LEASE_SECONDS: i32 = 30;
/// [`LEASE_SECONDS`] as a duration.
pub fn lease_duration() -> Duration {
    Duration::from_secs(LEASE_SECONDS.unsigned_abs().into())
}

/// How often the keeper renews the lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A runner whose renewals have all failed for this long gives up the run: its lease still
/// lasts `LEASE_SECONDS` minus this, which is when it returns traffic to the primary.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(18);

/// Who wants or holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The pipeline run: `github:acme/app/actions/runs/77/attempts/1 job deploy`,
    /// `run:$AVIARY_RUN_ID`, `clouddeploy:...`, `tekton:...`, or `local`.
    pub run: String,
    /// The process: `host/pid-N/ns-N/boot-X/nonce`.
    pub process: String,
}

impl Holder {
    /// The identity written to `spec.holderIdentity`: `<run> (<process>)`.
    pub fn identity(&self) -> String {
        format!("{} ({})", self.run, self.process)
    }

    /// Reads an identity written by [`Holder::identity`]; an identity in another form is all run.
    pub fn parse(identity: &str) -> Holder {
        match identity.strip_suffix(')').and_then(|s| s.rsplit_once(" (")) {
            Some((run, process)) => Holder {
                run: run.to_string(),
                process: process.to_string(),
            },
            None => Holder {
                run: identity.to_string(),
                process: String::new(),
            },
        }
    }

    /// This process, for the pipeline run the environment names.
    pub fn this_process(env: &dyn Fn(&str) -> Option<String>) -> Holder {
        Holder {
            run: run_identity(env),
            process: process_identity(),
        }
    }

    /// Whether `self` (a holder found on the lease) is provably gone, seen from `me`.
    pub fn is_gone(&self, me: &Holder) -> bool {
        self.ended_attempt(me) || self.earlier_job_of_the_rollout(me) || self.dead_process_here(me)
    }

    /// Another job of the same Cloud Deploy rollout: Cloud Deploy runs a rollout's jobs (its
    /// phases, and the retry of a failed one) one after the other, never two at once.
    fn earlier_job_of_the_rollout(&self, me: &Holder) -> bool {
        self.run.starts_with("clouddeploy:") && self.run == me.run
    }

    /// An earlier attempt of the same pipeline job: GitHub starts a re-run only once every job
    /// of the previous attempt has ended.
    fn ended_attempt(&self, me: &Holder) -> bool {
        match (split_attempt(&self.run), split_attempt(&me.run)) {
            (Some((theirs, a)), Some((mine, b))) => theirs == mine && a < b,
            _ => false,
        }
    }

    /// A process of this very machine (same host, boot and pid namespace) that no longer runs.
    fn dead_process_here(&self, me: &Holder) -> bool {
        let (Some(theirs), Some(mine)) =
            (Process::parse(&self.process), Process::parse(&me.process))
        else {
            return false;
        };
        theirs.host == mine.host
            && theirs.boot == mine.boot
            && theirs.pid_ns == mine.pid_ns
            && !theirs.pid_ns.is_empty()
            && theirs.pid != mine.pid
            && !std::path::Path::new(&format!("/proc/{}", theirs.pid)).exists()
    }
}

/// `(run without the attempt, attempt)` for a run identity carrying `/attempts/N`.
fn split_attempt(run: &str) -> Option<(String, u64)> {
    let (head, tail) = run.split_once("/attempts/")?;
    let (attempt, rest) = match tail.split_once(' ') {
        Some((a, rest)) => (a, rest),
        None => (tail, ""),
    };
    let attempt = attempt.parse().ok()?;
    Some((format!("{head} {rest}"), attempt))
}

struct Process<'a> {
    host: &'a str,
    pid: u32,
    pid_ns: &'a str,
    boot: &'a str,
}

impl<'a> Process<'a> {
    fn parse(process: &'a str) -> Option<Process<'a>> {
        let mut parts = process.split('/');
        let host = parts.next()?;
        let pid = parts.next()?.strip_prefix("pid-")?.parse().ok()?;
        let pid_ns = parts.next()?.strip_prefix("ns-")?;
        let boot = parts.next()?.strip_prefix("boot-")?;
        Some(Process {
            host,
            pid,
            pid_ns,
            boot,
        })
    }
}

/// The pipeline run this process belongs to, from the host's environment.
fn run_identity(env: &dyn Fn(&str) -> Option<String>) -> String {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(run) = env("AVIARY_RUN_ID") {
        return format!("run:{run}");
    }
    if let (Some(repo), Some(run)) = (env("GITHUB_REPOSITORY"), env("GITHUB_RUN_ID")) {
        let attempt = env("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
        let job = env("GITHUB_JOB")
            .map(|j| format!(" job {j}"))
            .unwrap_or_default();
        return format!("github:{repo}/actions/runs/{run}/attempts/{attempt}{job}");
    }
    if let Some(rollout) = env("CLOUD_DEPLOY_ROLLOUT") {
        return format!("clouddeploy:{rollout}");
    }
    if let Some(run) = env("TEKTON_PIPELINE_RUN")
        .or_else(|| env("PIPELINE_RUN"))
        .or_else(|| env("TEKTON_TASK_RUN"))
    {
        return format!("tekton:{run}");
    }
    "local".to_string()
}

/// This process: `host/pid-N/ns-N/boot-X/nonce`.
fn process_identity() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| read("/proc/sys/kernel/hostname"))
        .unwrap_or_else(|| "unknown-host".into());
    let host: String = host.chars().filter(|c| *c != '/' && *c != ' ').collect();
    // `pid:[4026531836]`: processes of two containers on one host can share a pid number.
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| {
            p.to_string_lossy()
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    let boot: String = read("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!(
        "{host}/pid-{}/ns-{pid_ns}/boot-{boot}/{:08x}",
        std::process::id(),
        nonce()
    )
}

/// 32 random bits from the standard library's per-process hash seed, the clock and the pid.
fn nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    (h.finish() >> 16) as u32
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("canary {canary} is being rolled out by {holder} (its lease {lease} is held until {until}); wait for that run to finish, or stop it with `aviary abort`")]
    Held {
        canary: String,
        holder: String,
        lease: String,
        until: String,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Why a runner no longer holds its lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// Renewals kept failing; the lease has not expired yet, so the runner may still return
    /// traffic before anyone else can take it.
    #[error("the lease could not be renewed for {0}s (last error: {1}); stopping before it expires, so that no other runner drives the canary at the same time")]
    Unrenewable(u64, String),
    /// Someone else holds it now: the runner must not write anything.
    #[error("the lease was taken by {0}; stopping without touching anything")]
    Taken(String),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// The Leases aviary made in `namespaces`, read with one LIST (across the cluster when there
/// are several namespaces): `(namespace, Lease name)` → the Lease. `None` when they cannot be
/// listed (say the credentials only reach each namespace): each Lease is then read on its own.
/// A Lease without aviary's label is not in the list, so a Lease missing from it is not proof
/// that there is none: the caller reads those on their own.
pub async fn list_leases(
    client: &Client,
    namespaces: &std::collections::BTreeSet<String>,
) -> Option<BTreeMap<(String, String), Lease>> {
    let api: Api<Lease> = match namespaces.iter().collect::<Vec<_>>().as_slice() {
        [one] => Api::namespaced(client.clone(), one),
        _ => Api::all(client.clone()),
    };
    let listed = api.list(&managed_by_aviary()).await;
    match listed {
        Ok(list) => Some(
            list.items
                .into_iter()
                .filter_map(|lease| {
                    let ns = lease.metadata.namespace.clone()?;
                    let name = lease.metadata.name.clone()?;
                    namespaces.contains(&ns).then_some(((ns, name), lease))
                })
                .collect(),
        ),
        Err(e) => {
            tracing::debug!("could not list the Leases ({e}); reading each one");
            None
        }
    }
}

/// A lease this process holds.
#[derive(Clone)]
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    /// The Lease as our last write of it returned it (its resourceVersion): renewing and
    /// releasing write from it without reading first; a conflict says someone wrote since.
    written: Arc<Mutex<Option<Lease>>>,
}

/// When a lease held by someone else ends, or `None` when it has (or never had) a holder.
fn held_until(spec: &LeaseSpec) -> Option<Timestamp> {
    spec.holder_identity.as_ref().filter(|h| !h.is_empty())?;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    renewed
        .0
        .checked_add(SignedDuration::from_secs(duration))
        .ok()
        .filter(|until| *until > Timestamp::now())
}

impl LeaseGuard {
    /// Takes the lease for `me`, or says who has it (nothing else is written then). A lease
    /// is taken over only from a holder that is gone (see the module's rules).
    pub async fn acquire(
        client: Client,
        namespace: &str,
        canary: &str,
        me: &Holder,
    ) -> Result<LeaseGuard, LockError> {
        Self::acquire_read(client, namespace, canary, me, None).await
    }

    /// [`LeaseGuard::acquire`] deciding first from `listed`, the Lease as a LIST just found it
    /// (`None`: read it here); a write that conflicts decides again from a fresh read.
    pub async fn acquire_read(
        client: Client,
        namespace: &str,
        canary: &str,
        me: &Holder,
        mut listed: Option<Lease>,
    ) -> Result<LeaseGuard, LockError> {
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let name = object_name(canary);
        let guard = LeaseGuard {
            api: api.clone(),
            name: name.clone(),
            namespace: namespace.to_string(),
            identity: me.identity(),
            written: Arc::new(Mutex::new(None)),
        };
        let what = format!("read Lease {name}.{namespace}");
        let spec = LeaseSpec {
            holder_identity: Some(guard.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(now()),
            renew_time: Some(now()),
            ..LeaseSpec::default()
        };
        let refuse = |lease: &Lease| -> Result<(), LockError> {
            let spec = lease.spec.clone().unwrap_or_default();
            let Some(until) = held_until(&spec) else {
                return Ok(());
            };
            let other = spec.holder_identity.unwrap_or_default();
            let holder = Holder::parse(&other);
            if holder.is_gone(me) {
                tracing::info!("taking over the lease of {other}, which is no longer running");
                return Ok(());
            }
            Err(LockError::Held {
                canary: format!("{canary}.{namespace}"),
                holder: other,
                lease: name.clone(),
                until: until.to_string(),
            })
        };
        // Read, decide, write at the read resourceVersion; a write that conflicts or fails
        // transiently is decided again from a fresh read (our own write may have landed although
        // its answer was lost: then the lease names us).
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let current = match listed.take() {
                Some(lease) => Some(lease),
                None => retry(&what, || api.get_opt(&name)).await?,
            };
            let ours = current
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref())
                == Some(guard.identity.as_str());
            if ours {
                guard.remember(current);
                return Ok(guard);
            }
            let written = match current {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(namespace.to_string()),
                            labels: Some(managed_labels(BTreeMap::new())),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec.clone()),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Some(mut lease) => {
                    refuse(&lease)?;
                    lease.spec = Some(spec.clone());
                    api.replace(&name, &PostParams::default(), &lease).await
                }
            };
            match written {
                Ok(lease) => {
                    guard.remember(Some(lease));
                    return Ok(guard);
                }
                Err(e)
                    if (is_conflict(&e) || crate::cluster::is_transient(&e))
                        && started.elapsed() + delay <= crate::cluster::RETRY_BUDGET =>
                {
                    tracing::debug!("take Lease {name}.{namespace}: {e}; deciding again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(3200));
                }
                Err(e) => {
                    return Err(LockError::Cluster(ClusterError::api(
                        format!("take Lease {name}.{namespace}"),
                        e,
                    )))
                }
            }
        }
    }

    /// The identity this guard holds the lease as.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn remember(&self, lease: Option<Lease>) {
        match self.written.lock() {
            Ok(mut w) => *w = lease,
            Err(poisoned) => *poisoned.into_inner() = lease,
        }
    }

    /// Our last write of the Lease, once: after a failed write the next attempt reads it.
    fn take_written(&self) -> Option<Lease> {
        match self.written.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// Extends the lease, if it is still ours: write it back at the resourceVersion of our last
    /// write (or, when that conflicts or is unknown, of a fresh read whose holder is checked).
    /// `budget` bounds the retries.
    pub async fn renew(&self, budget: Duration) -> Result<(), Renewal> {
        let what = format!("renew Lease {}.{}", self.name, self.namespace);
        for _ in 0..3 {
            // Our last write, if we know it: writing at its resourceVersion succeeds only when
            // nobody wrote the Lease since, i.e. while it still names us.
            let lease = match self.take_written() {
                Some(lease) => Some(lease),
                None => retry_within(&what, budget, || self.api.get_opt(&self.name))
                    .await
                    .map_err(Renewal::Failed)?,
            };
            let Some(mut lease) = lease else {
                return Err(Renewal::Lost("nobody (the Lease was deleted)".into()));
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            if holder != self.identity {
                let who = if holder.is_empty() {
                    "nobody (it was released)".to_string()
                } else {
                    holder
                };
                return Err(Renewal::Lost(who));
            }
            spec.renew_time = Some(now());
            lease.spec = Some(spec);
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => {
                    self.remember(Some(written));
                    return Ok(());
                }
                // Someone wrote it since we read or wrote it: read again and look at the holder.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(Renewal::Failed(ClusterError::api(&what, e))),
            }
        }
        Err(Renewal::Failed(ClusterError::Invalid(format!(
            "{what}: the Lease keeps changing under us"
        ))))
    }

    /// Gives the lease up so the next runner need not wait for it to expire; a lease that is no
    /// longer ours is left alone.
    pub async fn release(&self) -> Result<(), ClusterError> {
        let what = format!("release Lease {}.{}", self.name, self.namespace);
        for _ in 0..3 {
            let lease = match self.take_written() {
                Some(lease) => Some(lease),
                None => retry(&what, || self.api.get_opt(&self.name)).await?,
            };
            let Some(mut lease) = lease else {
                return Ok(());
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                tracing::debug!(
                    "not releasing Lease {}: it is held by {:?}",
                    self.name,
                    spec.holder_identity
                );
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            lease.spec = Some(spec);
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(()),
                // Read again: a write that landed although its answer was lost leaves the lease
                // to nobody, and then there is nothing left to do.
                Err(e) if is_conflict(&e) || crate::cluster::is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(ClusterError::api(&what, e)),
            }
        }
        Err(ClusterError::Invalid(format!(
            "{what}: the Lease keeps changing under us"
        )))
    }

    /// Renews the lease in the background until the returned keeper is dropped. The watch
    /// channel turns `Some` once the lease can no longer be proven ours.
    pub fn keep(&self) -> Keeper {
        let (tx, rx) = watch::channel(None);
        let guard = self.clone();
        let task = tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                let next = last_ok + RENEW_EVERY;
                tokio::time::sleep_until(next).await;
                loop {
                    let left = GIVE_UP_AFTER.saturating_sub(last_ok.elapsed());
                    match guard.renew(left.min(RENEW_EVERY)).await {
                        Ok(()) => {
                            last_ok = tokio::time::Instant::now();
                            break;
                        }
                        Err(Renewal::Lost(who)) => {
                            let _ = tx.send(Some(LeaseLost::Taken(who)));
                            return;
                        }
                        Err(Renewal::Failed(e)) => {
                            if last_ok.elapsed() >= GIVE_UP_AFTER {
                                let _ = tx.send(Some(LeaseLost::Unrenewable(
                                    last_ok.elapsed().as_secs(),
                                    e.to_string(),
                                )));
                                return;
                            }
                            tracing::warn!("could not renew the lease: {e}; trying again");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
        Keeper { lost: rx, task }
    }
}

/// Why a renewal did not happen.
#[derive(Debug)]
pub enum Renewal {
    /// The API did not let us (we may still hold the lease).
    Failed(ClusterError),
    /// Someone else holds it (or nobody): we must not act as its holder.
    Lost(String),
}

/// The background renewal of a lease. Stops when dropped.
pub struct Keeper {
    lost: watch::Receiver<Option<LeaseLost>>,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    /// Waits until the lease is lost (forever while it is held).
    pub async fn lost(&mut self) -> LeaseLost {
        loop {
            if let Some(lost) = self.lost.borrow_and_update().clone() {
                return lost;
            }
            if self.lost.changed().await.is_err() {
                // The task ended without a word: it cannot vouch for the lease any more.
                return LeaseLost::Unrenewable(0, "the renewal task stopped".into());
            }
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn two_jobs_of_one_workflow_run_are_two_holders() {
        let vars = &[
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_RUN_ID", "77"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", "deploy"),
        ];
        let a = Holder::this_process(&env(vars));
        let b = Holder::this_process(&env(vars));
        assert_eq!(
            a.run,
            "github:acme/app/actions/runs/77/attempts/1 job deploy"
        );
        assert_eq!(a.run, b.run);
        assert_ne!(a.identity(), b.identity(), "the nonce tells them apart");
        assert_eq!(Holder::parse(&a.identity()), a);
        // The same machine and a live process (this one): not gone.
        assert!(!a.is_gone(&b));
    }

    #[test]
    fn a_holder_is_gone_when_its_process_here_ended_or_a_later_attempt_runs() {
        let me = Holder::this_process(&env(&[("AVIARY_RUN_ID", "42")]));
        // A pid that cannot exist (above pid_max), on this machine: gone.
        let dead = Holder {
            run: me.run.clone(),
            process: me.process.replacen(
                &format!("pid-{}/", std::process::id()),
                "pid-99999999/",
                1,
            ),
        };
        assert!(dead.is_gone(&me), "{dead:?}");
        // The same pid on another host, or in another pid namespace: not provably gone.
        let elsewhere = Holder {
            run: me.run.clone(),
            process: "other-host/pid-99999999/ns-1/boot-deadbeef/00000000".into(),
        };
        assert!(!elsewhere.is_gone(&me));
        // Attempts of one GitHub job.
        let attempt = |n: u32| Holder {
            run: format!("github:acme/app/actions/runs/77/attempts/{n} job deploy"),
            process: "runner-a/pid-1/ns-1/boot-1/1".into(),
        };
        let mine = Holder {
            run: attempt(2).run,
            process: "runner-b/pid-1/ns-2/boot-2/2".into(),
        };
        assert!(attempt(1).is_gone(&mine));
        assert!(!attempt(2).is_gone(&mine), "the same attempt may still run");
        assert!(!attempt(3).is_gone(&mine));
        let other_job = Holder {
            run: "github:acme/app/actions/runs/77/attempts/1 job smoke".into(),
            process: "runner-c/pid-1/ns-3/boot-3/3".into(),
        };
        assert!(!other_job.is_gone(&mine));
        // Jobs of one Cloud Deploy rollout run one after the other.
        let job = |host: &str| Holder {
            run: "clouddeploy:projects/p/locations/l/deliveryPipelines/d/releases/r/rollouts/r-1"
                .into(),
            process: format!("{host}/pid-1/ns-1/boot-1/1"),
        };
        assert!(job("build-a").is_gone(&job("build-b")));
        let other_rollout = Holder {
            run: "clouddeploy:projects/p/locations/l/deliveryPipelines/d/releases/r/rollouts/r-2"
                .into(),
            process: "build-c/pid-1/ns-1/boot-1/1".into(),
        };
        assert!(!other_rollout.is_gone(&job("build-b")));
        // Identities from before this format are all run, never provably gone.
        let old = Holder::parse("github:acme/app/actions/runs/1");
        assert_eq!(old.process, "");
        assert!(!old.is_gone(&mine));
    }

    #[test]
    fn an_expired_or_released_lease_has_no_holder() {
        let ago = |s: i64| {
            MicroTime(
                Timestamp::now()
                    .checked_sub(SignedDuration::from_secs(s))
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            )
        };
        let spec = |holder: Option<&str>, renewed: i64| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(ago(renewed)),
            ..LeaseSpec::default()
        };
        assert!(held_until(&spec(Some("x"), 5)).is_some());
        assert!(held_until(&spec(Some("x"), i64::from(LEASE_SECONDS) + 1)).is_none());
        assert!(held_until(&spec(None, 5)).is_none());
        assert!(held_until(&spec(Some(""), 5)).is_none());
    }

    /// Renewing and releasing write from our last write without reading the Lease first, and
    /// still never renew or clear a Lease someone else wrote meanwhile (the write conflicts,
    /// the Lease is read, its holder checked).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_writes_from_our_last_write_and_still_sees_a_lease_taken_meanwhile() {
        let (emu, client) = crate::testing::emulated(Duration::from_millis(50)).await;
        let me = Holder::parse("run:1 (host/pid-1/ns-1/boot-1/1)");
        let guard = match LeaseGuard::acquire(client.clone(), "test", "podinfo", &me).await {
            Ok(g) => g,
            Err(e) => panic!("acquire: {e}"),
        };
        let lease_reads = |emu: &kube_emulator::Emulator| {
            emu.requests()
                .iter()
                .filter(|r| r.method == "GET" && r.path.contains("/leases/"))
                .count()
        };
        let holder = |emu: &kube_emulator::Emulator| {
            emu.get(
                "coordination.k8s.io/v1",
                "leases",
                Some("test"),
                "podinfo-aviary",
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
        };
        emu.clear_requests();
        for _ in 0..3 {
            if let Err(e) = guard.renew(Duration::from_secs(5)).await {
                panic!("renew: {e:?}");
            }
        }
        assert_eq!(lease_reads(&emu), 0, "renewals read the Lease they wrote");
        assert_eq!(holder(&emu).as_deref(), Some(me.identity().as_str()));

        // Another runner takes the Lease over (it judged us gone).
        let api: Api<Lease> = Api::namespaced(client.clone(), "test");
        let mut taken = match api.get("podinfo-aviary").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let other = "run:2 (elsewhere/pid-9/ns-9/boot-9/9)";
        if let Some(spec) = taken.spec.as_mut() {
            spec.holder_identity = Some(other.to_string());
        }
        if let Err(e) = api
            .replace("podinfo-aviary", &PostParams::default(), &taken)
            .await
        {
            panic!("{e}");
        }
        match guard.renew(Duration::from_secs(5)).await {
            Err(Renewal::Lost(who)) => assert_eq!(who, other),
            got => panic!("a renewal of a Lease taken meanwhile: {got:?}"),
        }
        // Releasing leaves the other holder's Lease alone.
        if let Err(e) = guard.release().await {
            panic!("release: {e}");
        }
        assert_eq!(holder(&emu).as_deref(), Some(other));

        // Taken back and released: released from our last write, no read.
        let guard =
            match LeaseGuard::acquire(client.clone(), "test", "podinfo", &Holder::parse(other))
                .await
            {
                Ok(g) => g,
                Err(e) => panic!("acquire again: {e}"),
            };
        emu.clear_requests();
        if let Err(e) = guard.release().await {
            panic!("release: {e}");
        }
        assert_eq!(lease_reads(&emu), 0, "the release read the Lease it wrote");
        assert_eq!(holder(&emu), None);
    }
}
