//! `aviary sandbox` itself: a scenario's two releases on a [`Sandbox`], shown live (the
//! rollout's messages, the split, what the clients see), then the verdict and the files a
//! pipeline would get.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aviary_core::exit::Exit;

use crate::load::{self, Stats};
use crate::{
    time_to_primary, Interrupt, Options, Release, Sandbox, SandboxArgs, SandboxError, Scenario,
    IMAGE, NAMESPACE, PREVIEW_HOST, STABLE_TAG,
};

/// `aviary sandbox`.
pub fn run(args: &SandboxArgs) -> Result<Exit, SandboxError> {
    let scenario = args.scenario();
    if scenario == Scenario::Ab && !args.router.matches_headers() {
        return Err(SandboxError::Usage {
            message: format!(
                "--scenario ab needs a router that can route by header; {} cannot",
                args.router.name()
            ),
            help: "use --router gatewayapi or --router istio".into(),
        });
    }
    let aviary = std::env::current_exe()?;
    let workdir = match &args.workdir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "aviary-sandbox-{}-{}",
            std::process::id(),
            aviary_kube::runner::wall_ms()
        )),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let options = Options {
        router: args.router,
        metrics: args.metrics,
        proxy: args.proxy,
        aviary,
        workdir,
        rate: args.rate,
        tag_every: (scenario == Scenario::Ab).then_some(3),
        // The replica ratio routes no host names: it has no preview host to send to.
        preview_every: (args.router != crate::Router::Replicas).then_some(10),
        services: usize::from(args.services),
        verdict_policy: args.verdict_policy,
    };
    runtime.block_on(async {
        // SIGINT and SIGTERM stop the sandbox in order from here on (see `signals`); before
        // this nothing has started.
        let interrupt = Interrupt::listen()?;
        run_scenario(args, options, interrupt).await
    })
}

async fn run_scenario(
    args: &SandboxArgs,
    options: Options,
    interrupt: Interrupt,
) -> Result<Exit, SandboxError> {
    let scenario = args.scenario();
    let mut out = std::io::stdout();
    let t0 = Instant::now();
    let stamp = move || format!("[{:>5.1}s]", t0.elapsed().as_secs_f64());
    writeln!(
        out,
        "aviary sandbox · scenario {} ({}) · router {}",
        scenario.name(),
        scenario.describe(),
        args.router.name()
    )?;
    // A signal while the components start is acted on once they have (a few seconds at most).
    let mut sandbox = Sandbox::start(options).await?;
    sandbox.stop_on(interrupt.clone());
    let workdir = sandbox.options.workdir.clone();
    writeln!(
        out,
        "  cluster  the Kubernetes API emulator at {} (kubeconfig {})",
        sandbox.emulator.url(),
        sandbox.kubeconfig.display()
    )?;
    writeln!(
        out,
        "  kubectl  {}{}",
        kubectl_line(&sandbox.kubeconfig),
        if args.keep {
            " (--keep: it all keeps running after the verdict, until Ctrl-C)"
        } else {
            ""
        }
    )?;
    writeln!(out, "  traffic  {}", sandbox.splitter.describe())?;
    writeln!(out, "  metrics  {}", sandbox.metrics.describe())?;
    writeln!(
        out,
        "  app      `aviary demo-app` processes, one per Deployment"
    )?;
    let several = sandbox.options.services > 1;
    writeln!(
        out,
        "  clients  {} requests/s through the split{}{}",
        args.rate,
        if several { " of each service" } else { "" },
        if scenario == Scenario::Ab {
            ", every third with `x-canary: insider`"
        } else {
            ""
        }
    )?;
    if several {
        let bad = crate::bad_service(sandbox.options.services);
        let names: Vec<String> = sandbox
            .services()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == bad && scenario.tag() != crate::healthy(scenario.tag()) {
                    format!("{} ({}, its new version is the bad one)", s.host, s.name)
                } else {
                    format!("{} ({})", s.host, s.name)
                }
            })
            .collect();
        writeln!(out, "  services {}", names.join(", "))?;
        writeln!(
            out,
            "  policy   {}: {} (aviary rollout --verdict-policy)",
            sandbox.options.verdict_policy.name(),
            sandbox.options.verdict_policy.describe()
        )?;
    }
    if sandbox.options.preview_every.is_some() && several {
        writeln!(
            out,
            "  preview  every tenth request goes to the service's canary.<service>.example.com (service.previewHosts), which only its canary serves"
        )?;
    } else if sandbox.options.preview_every.is_some() {
        writeln!(
            out,
            "  preview  every tenth request goes to {PREVIEW_HOST} (service.previewHosts), which only the canary serves"
        )?;
    }
    writeln!(out, "  files    {}", workdir.display())?;

    let report_path = workdir.join("report.json");
    let second = match releases(&sandbox, args, &report_path, stamp).await {
        Ok(second) => second,
        Err(e) => {
            sandbox.shutdown().await;
            return Err(e);
        }
    };

    // Stopped by a signal: the rollout got it and returned the traffic to the primary before
    // it exited. The proxy follows within a sync period; then the clients see the primary
    // alone for a second, and only then do they, the demo apps, the proxy and the metrics
    // backend stop, in that order.
    let stopped = interrupt.get();
    let mut on_primary = true;
    if let Some(signal) = stopped {
        writeln!(
            out,
            "{} {} received: stopping{}",
            stamp(),
            signal.name(),
            match &second {
                Some(r) if r.interrupted.is_some() && r.exit_code == 130 => {
                    "; the rollout returned the traffic to the primary and exited 130".to_string()
                }
                Some(r) if r.interrupted.is_some() => {
                    format!("; the rollout exited {}", r.exit_code)
                }
                _ => String::new(),
            }
        )?;
        on_primary = sandbox
            .wait_for(Duration::from_secs(5), |n| {
                n.changes
                    .last()
                    .map_or(true, |c| c.canary_weight == 0 && c.matches == 0)
            })
            .await;
        if !on_primary {
            writeln!(
                out,
                "{} warning: the split still sends requests to the canary",
                stamp()
            )?;
        }
    }
    // When the clients' last view (after the release or the signal) began.
    let mut after_ms = None;
    if sandbox.load.is_active() {
        let since = aviary_kube::runner::wall_ms();
        let (view, what) = match stopped {
            Some(_) if on_primary => (Duration::from_secs(1), "the traffic returned"),
            Some(_) => (Duration::from_secs(1), "the signal"),
            None => (Duration::from_millis(1500), "the release"),
        };
        tokio::select! {
            () = tokio::time::sleep(view) => {}
            _ = interrupt.wait(), if stopped.is_none() => {}
        }
        if several {
            for (name, load) in sandbox.loads() {
                writeln!(
                    out,
                    "{} clients of {name} after {what}: {}",
                    stamp(),
                    describe_stats(&Stats::of(&load.since(since)))
                )?;
            }
        } else {
            writeln!(
                out,
                "{} clients after {what}: {}",
                stamp(),
                describe_stats(&Stats::of(&sandbox.load.since(since)))
            )?;
        }
        after_ms = Some(since);
    }
    let primary_after = sandbox.primary_version();
    let services = sandbox.services();
    let primaries_after: Vec<Option<String>> = services
        .iter()
        .map(|s| sandbox.primary_version_of(&s.name))
        .collect();
    let (problems, all_changes) = sandbox
        .node
        .lock()
        .map(|n| {
            let changes: Vec<Vec<crate::kubelet::SplitChange>> = services
                .iter()
                .map(|s| n.changes_of(&s.name).to_vec())
                .collect();
            (n.problems.clone(), changes)
        })
        .unwrap_or_default();
    let previews = sandbox.load.previews_since(0);
    // --keep: the verdict is told from what the clients saw until now, and everything keeps
    // running until a signal (a signal before the verdict stops the sandbox as usual).
    let keep = args.keep && stopped.is_none() && interrupt.get().is_none();
    let (all_samples, kept) = if keep {
        let seen: Vec<(String, Vec<load::Sample>)> = sandbox
            .loads()
            .iter()
            .map(|(name, load)| (name.to_string(), load.since(0)))
            .collect();
        (seen, Some(sandbox))
    } else {
        (sandbox.shutdown_services().await, None)
    };
    // The first service's files keep their names; a further service's carry its name.
    for (i, ((name, samples), changes)) in all_samples.iter().zip(&all_changes).enumerate() {
        let suffix = if i == 0 {
            String::new()
        } else {
            format!("-{name}")
        };
        std::fs::write(
            workdir.join(format!("splits{suffix}.json")),
            serde_json::to_string_pretty(changes).map_err(std::io::Error::other)?,
        )?;
        std::fs::write(
            workdir.join(format!("clients{suffix}.json")),
            serde_json::to_string(samples).map_err(std::io::Error::other)?,
        )?;
    }
    let samples: &[load::Sample] = all_samples.first().map_or(&[], |(_, s)| s.as_slice());

    // The verdict, and what a pipeline would get.
    writeln!(out)?;
    if let Some((signal, at_ms)) = interrupt.received() {
        writeln!(
            out,
            "stopped by {}; clients from the signal until they stopped: {}",
            signal.name(),
            describe_stats(&Stats::of(samples.iter().filter(|s| s.sent_ms >= at_ms)))
        )?;
    }
    if let Some(second) = &second {
        report_release(&mut out, args, second, &report_path, &workdir, samples)?;
        if several {
            let settled: Vec<Option<u64>> = all_changes
                .iter()
                .map(|changes| changes.last().map(|c| c.at_ms))
                .collect();
            report_services(
                &mut out,
                second,
                &services,
                &all_samples,
                &primaries_after,
                after_ms.map(|after| {
                    settled
                        .iter()
                        .map(|at| at.map_or(after, |at| at.max(after)))
                        .collect()
                }),
                scenario.tag(),
            )?;
        }
        let during: Vec<&load::Sample> = previews
            .iter()
            .filter(|s| (second.started_ms..=second.ended_ms).contains(&s.sent_ms))
            .collect();
        if !during.is_empty() && !several {
            writeln!(
                out,
                "preview host {PREVIEW_HOST} during release 2: {}",
                describe_previews(&during)
            )?;
        }
        if let (Some(decided), false) = (second.rollback_decided_ms, several) {
            let primary = primary_after
                .clone()
                .unwrap_or_else(|| STABLE_TAG.to_string());
            writeln!(
                out,
                "rollback: clients were all on the primary ({primary}) {} ms after the decision",
                time_to_primary(samples, decided, &primary)
            )?;
        }
        if let Some(kib) = second.peak_rss_kib {
            writeln!(
                out,
                "the rollout process peaked at {:.1} MiB resident",
                kib as f64 / 1024.0
            )?;
        }
    }
    for p in problems {
        writeln!(out, "sandbox problem: {p}")?;
    }
    if second.is_some() {
        writeln!(
            out,
            "report: {}\nsummary: {}",
            report_path.display(),
            workdir.join("summary.md").display()
        )?;
    }
    writeln!(
        out,
        "split log: {}\nclient log: {}",
        workdir.join("splits.json").display(),
        workdir.join("clients.json").display()
    )?;
    if several {
        writeln!(
            out,
            "(the other services' logs beside them: splits-<service>.json, clients-<service>.json)"
        )?;
    }
    let exit = match (stopped.or(interrupt.get()), &second) {
        (Some(_), _) | (None, None) => Exit::Cancelled,
        (None, Some(second)) => Exit::from_code(second.exit_code),
    };
    if let Some(sandbox) = kept {
        writeln!(
            out,
            "\n{} --keep: the cluster, the apps, the clients and the split keep running; look around with\n  {}\n  kubectl --kubeconfig {} describe deployment {} -n {NAMESPACE}\nCtrl-C stops the sandbox.",
            stamp(),
            kubectl_line(&sandbox.kubeconfig),
            sandbox.kubeconfig.display(),
            crate::CANARY,
        )?;
        out.flush()?;
        let signal = interrupt.wait().await;
        writeln!(out, "{} {} received: stopping", stamp(), signal.name())?;
        sandbox.shutdown_services().await;
    }
    // The verdict stands: the signal that ended --keep came after it.
    Ok(exit)
}

/// A kubectl command line that follows the release's workloads in the sandbox's cluster.
fn kubectl_line(kubeconfig: &Path) -> String {
    format!(
        "kubectl --kubeconfig {} get pods,deploy -n {NAMESPACE} -w",
        kubeconfig.display()
    )
}

/// Release 1 (the bootstrap), then release 2, live. `None` when a signal stopped the sandbox
/// before release 2 began.
async fn releases(
    sandbox: &Sandbox,
    args: &SandboxArgs,
    report_path: &Path,
    stamp: impl Fn() -> String + Copy,
) -> Result<Option<Release>, SandboxError> {
    let scenario = args.scenario();
    let mut out = std::io::stdout();
    if sandbox.interrupt.get().is_some() {
        return Ok(None);
    }
    // Release 1: the bootstrap. aviary creates the primary and routes all traffic to it.
    writeln!(
        out,
        "\n{} release 1: {IMAGE}:{STABLE_TAG} (first release: the primary is created)",
        stamp()
    )?;
    match sandbox
        .bootstrap(scenario.profile(), |_, message| {
            println!("{} {message}", stamp())
        })
        .await
    {
        Ok(_) => {}
        Err(SandboxError::Interrupted(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    let before = aviary_kube::runner::wall_ms();
    writeln!(
        out,
        "{} clients: {}",
        stamp(),
        describe_stats(&Stats::of(&sandbox.load.since(before.saturating_sub(3000))))
    )?;

    if scenario == Scenario::Flaky {
        sandbox.make_api_flaky();
        writeln!(out, "{} the API server now fails 10% of the requests in {NAMESPACE} (503, 409 on PATCH, slow GETs)", stamp())?;
    }

    // Release 2: the scenario's version, live.
    let tag = scenario.tag();
    if sandbox.options.services > 1 {
        let versions: Vec<String> = sandbox
            .versions(tag)
            .iter()
            .map(|(s, v)| format!("{} {}:{v}", s.name, s.image))
            .collect();
        writeln!(
            out,
            "\n{} release 2, {} services in one rollout, verdict policy {}: {} ({} for {})",
            stamp(),
            sandbox.options.services,
            sandbox.options.verdict_policy.name(),
            versions.join(", "),
            scenario.describe(),
            crate::SERVICES[crate::bad_service(sandbox.options.services)]
        )?;
    } else {
        writeln!(
            out,
            "\n{} release 2: {IMAGE}:{tag} ({})",
            stamp(),
            scenario.describe()
        )?;
    }
    let live = {
        let node = sandbox.node.clone();
        let loads = sandbox.loads();
        let several = loads.len() > 1;
        let mut last_line = Instant::now();
        let mut last_weights: Vec<Option<u8>> = Vec::new();
        move |_: &str, message: &str| {
            println!("{} {message}", stamp());
            let weights: Vec<Option<u8>> = node
                .lock()
                .map(|n| {
                    loads
                        .iter()
                        .map(|(name, _)| n.changes_of(name).last().map(|c| c.canary_weight))
                        .collect()
                })
                .unwrap_or_default();
            if last_line.elapsed() >= Duration::from_millis(900) || weights != last_weights {
                let since = aviary_kube::runner::wall_ms().saturating_sub(2000);
                for ((name, load), weight) in loads.iter().zip(&weights) {
                    let window = load.since(since);
                    if several {
                        println!(
                            "{}   ↳ {name:<8} canary {:>3}% · clients (last 2s): {}",
                            stamp(),
                            weight.unwrap_or(0),
                            describe_stats(&Stats::of(&window))
                        );
                    } else {
                        println!(
                            "{}   ↳ split: canary {}% · clients (last 2s): {}",
                            stamp(),
                            weight.unwrap_or(0),
                            describe_stats(&Stats::of(&window))
                        );
                    }
                }
                last_line = Instant::now();
                last_weights = weights;
            }
        }
    };
    match sandbox
        .release(tag, scenario.profile(), Some(report_path), live)
        .await
    {
        Ok(second) => Ok(Some(second)),
        Err(SandboxError::Interrupted(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The verdict of release 2 and the files a pipeline would get.
fn report_release(
    out: &mut impl std::io::Write,
    args: &SandboxArgs,
    second: &Release,
    report_path: &Path,
    workdir: &Path,
    samples: &[load::Sample],
) -> Result<(), SandboxError> {
    let scenario = args.scenario();
    match &second.report {
        Some(report) => {
            writeln!(
                out,
                "verdict: {} (exit {}) — {}",
                report.verdict.as_str(),
                second.exit_code,
                report.headline()
            )?;
            let summary = aviary_core::report::summary::markdown(report, &[]);
            std::fs::write(workdir.join("summary.md"), summary)?;
            if let Some(extra) = &args.report {
                std::fs::copy(report_path, extra)?;
            }
            if report.verdict != scenario.expected()
                && report.verdict != aviary_core::report::Verdict::Cancelled
            {
                writeln!(
                    out,
                    "note: the {} scenario is expected to end {}",
                    scenario.name(),
                    scenario.expected().as_str()
                )?;
            }
        }
        None => writeln!(
            out,
            "verdict: none (exit {}): the rollout wrote no report",
            second.exit_code
        )?,
    }
    writeln!(
        out,
        "release 2 took {:.1}s; clients during it: {}",
        second.wall.as_secs_f64(),
        describe_stats(&Stats::of(samples.iter().filter(|s| {
            (second.started_ms..=second.ended_ms).contains(&s.sent_ms)
        })))
    )?;
    Ok(())
}

/// Who answered the preview host's requests: the canary (and its versions), the primary
/// (which never should), and the gateway alone (503) while no canary ran.
fn describe_previews(samples: &[&load::Sample]) -> String {
    let by = |w: &str| {
        samples
            .iter()
            .filter(|s| s.workload.as_deref() == Some(w))
            .count()
    };
    let mut versions: Vec<&str> = samples
        .iter()
        .filter(|s| s.workload.as_deref() == Some(crate::CANARY))
        .filter_map(|s| s.version.as_deref())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let (canary, primary) = (by(crate::CANARY), by(&format!("{}-primary", crate::CANARY)));
    let unserved = samples.iter().filter(|s| s.workload.is_none()).count();
    format!(
        "{} req · {} answered by the canary ({}) · {} by the primary · {} while no canary ran (503 from the gateway)",
        samples.len(),
        canary,
        if versions.is_empty() { "-".to_string() } else { versions.join(", ") },
        if primary == 0 { "none".to_string() } else { primary.to_string() },
        unserved
    )
}

/// Release 2 service by service: each one's verdict and version, and what its clients saw
/// over time (one mark a second, from the release's start to the end of the clients' last
/// view), then which version served them at the end (from `end_from_ms`, each service's: the
/// clients' last view or its split's last change, whichever came later) and how soon a
/// rolled-back one had them all on its primary.
fn report_services(
    out: &mut impl std::io::Write,
    second: &Release,
    services: &[crate::Service],
    samples: &[(String, Vec<load::Sample>)],
    primaries: &[Option<String>],
    end_from_ms: Option<Vec<u64>>,
    tag: &str,
) -> Result<(), SandboxError> {
    let n = services.len();
    let members = second.report.as_ref().map_or(&[][..], |r| &r.canaries[..]);
    writeln!(
        out,
        "per service, what its clients saw from the start of release 2, a mark a second \
         (· every answer from another version, ▁▂▃▄▅▆▇█ the share from its new one), and at the end:"
    )?;
    let end_ms = samples
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.sent_ms))
        .max()
        .unwrap_or(second.ended_ms);
    for (i, (service, (_, samples))) in services.iter().zip(samples).enumerate() {
        let version = if i == crate::bad_service(n) {
            tag
        } else {
            crate::healthy(tag)
        };
        let qualified = format!("{}.{NAMESPACE}", service.name);
        let verdict = members
            .iter()
            .find(|m| m.canary.as_deref() == Some(qualified.as_str()))
            .map_or("no verdict".to_string(), |m| m.verdict.as_str().to_string());
        let at_end = end_from_ms.as_ref().and_then(|f| f.get(i)).map_or_else(
            || "-".to_string(),
            |&from| {
                let s = Stats::of(samples.iter().filter(|s| s.sent_ms >= from));
                let versions: Vec<String> = s
                    .versions
                    .keys()
                    .map(|v| format!("{v} {:.0}%", s.share(v)))
                    .collect();
                if versions.is_empty() {
                    "no answers".to_string()
                } else {
                    versions.join(", ")
                }
            },
        );
        writeln!(
            out,
            "  {:<8} {:<13} {:<12} {}  → at the end: clients {at_end}; primary {}",
            service.name,
            version,
            verdict,
            timeline(samples, second.started_ms, end_ms, version),
            primaries
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| "-".to_string())
        )?;
    }
    for m in members {
        writeln!(out, "  {}", m.headline())?;
    }
    for (service, (_, samples)) in services.iter().zip(samples) {
        if let Some(decided) = second.rollbacks.get(&service.name) {
            writeln!(
                out,
                "rollback of {}: its clients were all on its primary ({STABLE_TAG}) {} ms after the decision",
                service.name,
                time_to_primary(samples, *decided, STABLE_TAG)
            )?;
        }
    }
    Ok(())
}

/// One mark per second from `from_ms` to `to_ms` of the requests sent then: `·` when every
/// answer came from another version than `version`, else a block as high as `version`'s
/// share; a blank for a second without answers.
pub fn timeline(samples: &[load::Sample], from_ms: u64, to_ms: u64, version: &str) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let seconds = to_ms.saturating_sub(from_ms).div_ceil(1000);
    let mut buckets = vec![(0u32, 0u32); usize::try_from(seconds).unwrap_or(0)];
    for s in samples {
        let Some(v) = s.version.as_deref() else {
            continue;
        };
        if s.sent_ms < from_ms || s.sent_ms >= to_ms {
            continue;
        }
        let i = usize::try_from((s.sent_ms - from_ms) / 1000).unwrap_or(usize::MAX);
        if let Some((answers, new)) = buckets.get_mut(i) {
            *answers += 1;
            *new += u32::from(v == version);
        }
    }
    buckets
        .iter()
        .map(|&(answers, new)| match (answers, new) {
            (0, _) => ' ',
            (_, 0) => '·',
            (a, n) => {
                let level = (u64::from(n) * 8).div_ceil(u64::from(a)).clamp(1, 8) - 1;
                LEVELS[usize::try_from(level).unwrap_or(7)]
            }
        })
        .collect()
}

fn describe_stats(s: &Stats) -> String {
    if s.requests == 0 {
        return "no requests".into();
    }
    let versions: Vec<String> = s
        .versions
        .keys()
        .map(|v| format!("{v} {:.0}%", s.share(v)))
        .collect();
    format!(
        "{} req · {} · errors {:.1}% · p99 {:.0} ms",
        s.requests,
        if versions.is_empty() {
            "no version".to_string()
        } else {
            versions.join(", ")
        },
        s.error_rate(),
        s.p99_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sent_ms: u64, version: Option<&str>) -> load::Sample {
        load::Sample {
            sent_ms,
            status: 200,
            version: version.map(str::to_string),
            workload: None,
            answered_ms: sent_ms,
            latency_ms: 1.0,
            tagged: false,
            preview: false,
        }
    }

    #[test]
    fn the_timeline_marks_each_second_by_the_share_of_the_new_version() {
        let mut samples = Vec::new();
        // Second 0: only 1.0.0; second 1: nothing; second 2: half 2.0.0; second 3: all.
        samples.extend((0..4).map(|i| sample(1_000 + i * 100, Some("1.0.0"))));
        samples.extend(
            (0..4).map(|i| sample(3_000 + i * 100, Some(["1.0.0", "2.0.0"][i as usize % 2]))),
        );
        samples.extend((0..4).map(|i| sample(4_000 + i * 100, Some("2.0.0"))));
        // No answer, and outside the window: not counted.
        samples.push(sample(2_500, None));
        samples.push(sample(9_000, Some("2.0.0")));
        assert_eq!(timeline(&samples, 1_000, 5_000, "2.0.0"), "· ▄█");
        assert_eq!(timeline(&samples, 5_000, 5_000, "2.0.0"), "");
    }
}
