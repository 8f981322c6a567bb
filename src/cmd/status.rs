//! `aviary status`: what the cluster says about a canary's rollout. The traffic split is read
//! from the routing objects themselves (the HTTPRoute, VirtualService, RouteTable, canary
//! Ingress, Deployments or apex Service), not only from the saved state: a run killed between
//! changing a route and saving its state leaves the two apart, and the routing objects are what
//! the clients get.

use std::io::Write;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::control::Target;
use super::runtime;
use super::AppError;
use crate::cli::ControlArgs;
use aviary_core::engine::{Engine, Phase, RouteScope, Routes, Strategy};
use aviary_core::exit::Exit;
use aviary_kube::routing::{self, Observed};
use aviary_kube::runner::RunError;
use aviary_kube::state::{self, StateStore};
use aviary_kube::workload::Workloads;

/// The longest Canary name: its state ConfigMap and Lease, `<name>-aviary`, must still be valid
/// object names (at most 253 characters).
const MAX_CANARY_NAME: usize = 253 - "-aviary".len();

/// Checks a Canary name given on the command line (`status`, `promote`, `abort`) before any API
/// call: a Kubernetes object name (a DNS-1123 subdomain) short enough for `<name>-aviary`. An
/// invalid name is invalid input (exit 2) with the rule and the fix, not an API error.
pub fn check_canary_name(name: &str) -> Result<(), AppError> {
    let problem = dns_subdomain_problem(name, MAX_CANARY_NAME);
    let Some(problem) = problem else {
        return Ok(());
    };
    let mut help = String::from(
        "give the Canary's metadata.name: lowercase letters, digits, '-' and '.', starting and \
         ending with a letter or digit",
    );
    let fixed: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == '_' || c == ' ' { '-' } else { c })
        .collect();
    if fixed != name && dns_subdomain_problem(&fixed, MAX_CANARY_NAME).is_none() {
        help = format!("did you mean {fixed:?}? ({help})");
    }
    Err(AppError::input(format!("invalid canary name {name:?}: {problem}")).with_help(help))
}

/// Checks a namespace given with `-n` before any API call: a DNS-1123 label.
pub fn check_namespace(namespace: &str) -> Result<(), AppError> {
    let problem = dns_subdomain_problem(namespace, 63).or_else(|| {
        namespace
            .contains('.')
            .then(|| "a namespace cannot contain '.'".to_string())
    });
    match problem {
        None => Ok(()),
        Some(problem) => Err(AppError::input(format!(
            "invalid namespace {namespace:?}: {problem}"
        ))
        .with_help(
            "a namespace is lowercase letters, digits and '-', starting and ending with a letter or digit, e.g. -n prod",
        )),
    }
}

/// Why `name` is not a DNS-1123 subdomain of at most `max` characters, if it is not.
fn dns_subdomain_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > max {
        return Some(format!(
            "it is {} characters long; the most is {max}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Some(format!(
            "it contains {c:?}; a name is lowercase letters, digits, '-' and '.'"
        ));
    }
    for label in name.split('.') {
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !edge(label.chars().next()) || !edge(label.chars().last()) {
            return Some(
                "each '.'-separated part must start and end with a letter or digit".into(),
            );
        }
    }
    None
}

/// Who holds the canary's Lease.
struct Runner {
    holder: String,
    /// Seconds since the holder last renewed it, when it says.
    renewed_ago: Option<i64>,
    /// Seconds until it expires unless renewed, when it says.
    expires_in: Option<i64>,
    /// The lease has not expired: a runner may be driving the canary right now.
    live: bool,
    /// The holder is provably gone (a process of this machine that no longer runs, or an
    /// earlier attempt of this pipeline job), whatever the lease says.
    gone: bool,
}

impl Runner {
    fn active(&self) -> bool {
        self.live && !self.gone
    }
}

/// What the routing objects say, beside the saved state.
struct Traffic {
    /// The routing objects, or why they could not be read.
    observed: Result<Observed, String>,
    /// What the objects would say had the saved routes been put in place.
    saved_expressed: Routes,
}

impl Traffic {
    fn observed_routes(&self) -> Option<Routes> {
        self.observed.as_ref().ok().and_then(|o| o.routes)
    }

    /// The routing objects exist and say something other than the saved state.
    fn differ(&self) -> bool {
        self.observed_routes()
            .is_some_and(|o| o != self.saved_expressed)
    }
}

pub fn run(args: &ControlArgs, out: &mut dyn Write) -> Result<Exit, AppError> {
    let target = Target::new(args)?;
    let rt = runtime()?;
    let found = rt.block_on(async {
        let (client, ns) = target.connect().await?;
        let mut store = StateStore::new(client.clone(), &ns, &args.name);
        let (engine, control) = store
            .load()
            .await
            .map_err(|e| AppError::from(RunError::from(e)))?;
        let runner = runner(client.clone(), &ns, &args.name).await;
        let Some(engine) = engine else {
            return Ok::<_, AppError>(None);
        };
        let events = match store.saved_spec() {
            Some(spec) => {
                let target = &spec.canary.target_ref.name;
                aviary_kube::events::recent(client.clone(), &ns, target, RECENT_EVENTS)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Ok(Vec::new()),
        };
        let traffic = traffic(client, &engine, store.saved_spec()).await;
        Ok(Some((engine, control, runner, traffic, events)))
    })?;
    let Some((engine, control, runner, traffic, events)) = found else {
        return Err(AppError::input(format!(
            "no rollout state for canary {:?}; has `aviary rollout` run for it in this namespace?",
            args.name
        )));
    };
    let s = engine.state();
    let saved = s.routes;
    let observed = traffic.observed_routes();
    let shown = observed.unwrap_or(saved);
    let differ = traffic.differ();
    let note = differ.then(|| difference(&engine, runner.as_ref(), &control));
    if args.json {
        let value = json!({
            "canary": args.name,
            "phase": s.phase,
            "canary_weight": shown.canary,
            "primary_weight": shown.primary,
            "weights_from": if observed.is_some() { "routing objects" } else { "saved state" },
            "observed_routes": observed,
            "saved_routes": saved,
            "routes_differ": differ,
            "routing_objects": traffic.observed.as_ref().ok().map(|o| &o.objects),
            "routing_objects_exist": traffic.observed.as_ref().ok().map(|o| o.routes.is_some()),
            "routing_error": traffic.observed.as_ref().err(),
            "difference": note,
            "iterations": s.iterations,
            "failed_checks": s.failed_checks,
            "threshold": engine.config().threshold,
            "revision": s.target_revision,
            "last_promoted_revision": s.last_promoted_revision,
            "runner": runner.as_ref().map(|r| &r.holder),
            "runner_active": runner.as_ref().is_some_and(Runner::active),
            "abort_requested": control.abort.as_ref().map(|a| a.reason.clone()),
            "approved_revision": control.approve,
            "events": events.as_ref().ok(),
            "events_error": events.as_ref().err(),
        });
        serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(Exit::Success);
    }
    writeln!(out, "{}.{}", args.name, engine.config().namespace)?;
    writeln!(out, "  phase          {}", s.phase)?;
    match &traffic.observed {
        Ok(Observed {
            objects,
            routes: Some(routes),
        }) => {
            writeln!(
                out,
                "  traffic        {} (routing objects: {objects})",
                describe(routes)
            )?;
            if let Some(note) = &note {
                writeln!(
                    out,
                    "  saved state    {}: the routing objects differ",
                    describe(&saved)
                )?;
                for line in note {
                    writeln!(out, "                 {line}")?;
                }
            }
        }
        Ok(Observed {
            objects,
            routes: None,
        }) => writeln!(
            out,
            "  traffic        {} (saved state; the routing objects, {objects}, do not exist)",
            describe(&saved)
        )?,
        Err(e) => writeln!(
            out,
            "  traffic        {} (saved state; the routing objects could not be read: {e})",
            describe(&saved)
        )?,
    }
    writeln!(
        out,
        "  failed checks  {}/{}",
        s.failed_checks,
        engine.config().threshold
    )?;
    writeln!(
        out,
        "  revision       {} (primary runs {})",
        s.target_revision.as_deref().unwrap_or("-"),
        s.last_promoted_revision.as_deref().unwrap_or("-")
    )?;
    let runner_line = match &runner {
        Some(r) if r.active() => match r.renewed_ago {
            Some(ago) => format!("{} (lease renewed {ago}s ago)", r.holder),
            None => r.holder.clone(),
        },
        Some(r) if r.gone => format!(
            "none running ({} holds the lease, but its process no longer runs)",
            r.holder
        ),
        Some(r) => format!("none running (the lease of {} has expired)", r.holder),
        None => "none running".to_string(),
    };
    writeln!(out, "  runner         {runner_line}")?;
    if let Some(abort) = &control.abort {
        writeln!(out, "  abort          requested: {}", abort.reason)?;
    }
    match &events {
        Ok(events) if events.is_empty() => writeln!(out, "  events         none recorded")?,
        Ok(events) => {
            writeln!(
                out,
                "  events         (the last {}, oldest first)",
                events.len()
            )?;
            for e in events {
                let repeats = if e.count > 1 {
                    format!(" (x{})", e.count)
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "                 {}  {:<7}  {}{repeats}",
                    e.time,
                    e.kind,
                    e.note.replace(['\n', '\r'], " ")
                )?;
            }
        }
        Err(e) => writeln!(out, "  events         could not be read: {e}")?,
    }
    Ok(Exit::Success)
}

/// How many of aviary's last Events `status` shows.
const RECENT_EVENTS: usize = 10;

/// `primary 60% / canary 40%`, with the mirror and the A/B scope when there are.
fn describe(r: &Routes) -> String {
    let mut text = format!("primary {}% / canary {}%", r.primary, r.canary);
    if r.scope == RouteScope::Matched && r.canary > 0 {
        text.push_str(" of the requests matching analysis.match (the rest on the primary)");
    }
    if r.mirror {
        match r.mirror_weight {
            Some(w) => text.push_str(&format!(", {w}% mirrored to the canary")),
            None => text.push_str(", mirrored to the canary"),
        }
    }
    text
}

/// Why the routing objects and the saved state can differ, and what the next run will do about
/// it: the runner's resume, as `runner::rollout` does it (before its first tick, a resumed run
/// puts the routing objects back to the saved split when they say something else).
fn difference(engine: &Engine, runner: Option<&Runner>, control: &state::Control) -> Vec<String> {
    let s = engine.state();
    let cfg = engine.config();
    let saved = s.routes.canary;
    let mut lines = Vec::new();
    lines.push(match runner {
        Some(r) if r.active() => format!(
            "{} holds the lease: if it is running, it is between changing the routes and saving \
             its state, and the two agree again when it saves; if it was killed, its lease \
             expires {} and the next run does as below",
            r.holder,
            match r.expires_in {
                Some(s) => format!("in {s}s"),
                None => "when it is no longer renewed".to_string(),
            }
        ),
        Some(r) if r.gone => format!(
            "the run that holds the lease ({}) no longer runs: it stopped after changing the \
             routing objects and before saving its state, or someone changed them by hand",
            r.holder
        ),
        _ => "no runner holds the lease: the last run stopped after changing the routing objects \
              and before saving its state (killed?), or someone changed them by hand"
            .to_string(),
    });
    let active = matches!(
        s.phase,
        Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion
    );
    if let Some(abort) = control.abort.as_ref().filter(|_| active) {
        lines.push(format!(
            "an abort is pending ({}): the next run rolls the analysis back and sends all \
             traffic to the primary (if the target is still revision {})",
            abort.reason,
            s.target_revision.as_deref().unwrap_or("-")
        ));
        return lines;
    }
    let next = match s.phase {
        Phase::Progressing | Phase::Waiting | Phase::WaitingPromotion => {
            let max = cfg.effective_max_weight();
            let step = if cfg.strategy == Strategy::Canary
                && s.phase == Phase::Progressing
                && !s.routes.mirror
                && saved < max
            {
                let w = (saved + cfg.next_step_weight(saved)).min(max);
                format!(" (after a passing check: canary {w}%)")
            } else {
                String::new()
            };
            format!(
                "the next run first puts the routing objects back to the saved split (canary \
                 {saved}%), then resumes from the saved state ({}){step}; a failed analysis, an \
                 abort, a cancel or a new revision sends all traffic back to the primary",
                s.phase
            )
        }
        Phase::Promoting | Phase::Finalising => format!(
            "the next run first puts the routing objects back to the saved split (canary \
             {saved}%), then finishes the promotion from the saved state ({}), moving traffic \
             to the primary",
            s.phase
        ),
        Phase::Initializing => {
            "the next run puts the routing objects back to the saved split and bootstraps again"
                .to_string()
        }
        Phase::Initialized | Phase::Succeeded | Phase::Failed => format!(
            "the next run puts the routing objects back to the saved split (canary {saved}%) \
             before anything else, then analyses a new revision if there is one (phase {} is \
             not resumed)",
            s.phase
        ),
    };
    lines.push(next);
    lines
}

/// Reads the routing objects with the canary's router, rebuilt from the Canary saved beside the
/// engine, or, for a state saved without it, from the engine's configuration and the cluster.
async fn traffic(
    client: kube::Client,
    engine: &Engine,
    spec: Option<&state::SavedSpec>,
) -> Traffic {
    let saved = routing::canonical(&engine.state().routes);
    let router = match spec {
        Some(spec) => match Workloads::discover(client, &spec.canary, &spec.provider).await {
            Ok(w) => routing::for_canary(&spec.canary, &spec.provider, &w),
            Err(e) => Err(e),
        },
        None => routing::for_saved(client, engine.config()).await,
    };
    let router = match router {
        Ok(r) => r,
        Err(e) => {
            return Traffic {
                observed: Err(e.to_string()),
                saved_expressed: saved,
            }
        }
    };
    let observed = router.observed().await.map_err(|e| e.to_string());
    let saved_expressed = match router.expressed(&engine.state().routes).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(
                "cannot tell how the {} router expresses {saved:?}: {e}",
                router.name()
            );
            saved
        }
    };
    Traffic {
        observed,
        saved_expressed,
    }
}

/// The canary's Lease holder, if any.
async fn runner(client: kube::Client, namespace: &str, canary: &str) -> Option<Runner> {
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, namespace);
    let name = state::object_name(canary);
    let spec = match leases.get_opt(&name).await {
        Ok(lease) => lease?.spec?,
        Err(e) => {
            tracing::debug!("cannot read Lease {name}.{namespace}: {e}");
            return None;
        }
    };
    let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
    let me = aviary_kube::lease::Holder::this_process(&|k| std::env::var(k).ok());
    let gone = aviary_kube::lease::Holder::parse(&holder).is_gone(&me);
    let now = Timestamp::now();
    let renewed = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    // A lease without a duration is taken as the runner's own (30 s).
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(30));
    let until = renewed.and_then(|t| t.checked_add(SignedDuration::from_secs(duration)).ok());
    Some(Runner {
        holder,
        renewed_ago: renewed.map(|t| now.duration_since(t).as_secs().max(0)),
        expires_in: until.map(|u| u.duration_since(now).as_secs().max(0)),
        live: match until {
            Some(until) => until > now,
            None => true,
        },
        gone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_names_are_checked_as_object_names() {
        for ok in ["podinfo", "a", "web-1", "app.v2", &"a".repeat(246)] {
            assert!(check_canary_name(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "it is empty"),
            ("Podinfo", "contains 'P'"),
            ("pod_info", "contains '_'"),
            ("-podinfo", "start and end with a letter or digit"),
            ("podinfo.", "start and end with a letter or digit"),
            ("a..b", "start and end with a letter or digit"),
            ("pod info", "contains ' '"),
            ("x/../../y", "contains '/'"),
        ] {
            match check_canary_name(bad) {
                Err(e) => {
                    assert_eq!(e.exit(), Exit::InvalidInput, "{bad}");
                    assert!(e.to_string().contains(says), "{bad}: {e}");
                }
                Ok(()) => panic!("{bad:?} was accepted"),
            }
        }
        let long = "a".repeat(247);
        match check_canary_name(&long) {
            Err(e) => assert!(e.to_string().contains("the most is 246"), "{e}"),
            Ok(()) => panic!("a 247-character name was accepted"),
        }
        match check_canary_name("Pod_Info") {
            Err(AppError::Input { help, .. }) => {
                assert!(help
                    .unwrap_or_default()
                    .contains("did you mean \"pod-info\""))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn namespaces_are_checked_as_labels() {
        assert!(check_namespace("test").is_ok());
        assert!(check_namespace("team-a1").is_ok());
        for bad in ["", "Test", "a.b", "-x", &"n".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splits_are_described_with_their_mirror_and_scope() {
        assert_eq!(
            describe(&Routes::split(40, RouteScope::All)),
            "primary 60% / canary 40%"
        );
        assert_eq!(
            describe(&Routes::split(100, RouteScope::Matched)),
            "primary 0% / canary 100% of the requests matching analysis.match (the rest on the primary)"
        );
        let mirrored = Routes {
            mirror: true,
            mirror_weight: Some(20),
            ..Routes::PRIMARY
        };
        assert_eq!(
            describe(&mirrored),
            "primary 100% / canary 0%, 20% mirrored to the canary"
        );
    }
}
