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
    if args.scenario == Scenario::Ab && !args.router.matches_headers() {
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
        tag_every: (args.scenario == Scenario::Ab).then_some(3),
        // The replica ratio routes no host names: it has no preview host to send to.
        preview_every: (args.router != crate::Router::Replicas).then_some(10),
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
    let scenario = args.scenario;
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
    writeln!(out, "  traffic  {}", sandbox.splitter.describe())?;
    writeln!(out, "  metrics  {}", sandbox.metrics.describe())?;
    writeln!(
        out,
        "  app      `aviary demo-app` processes, one per Deployment"
    )?;
    writeln!(
        out,
        "  clients  {} requests/s through the split{}",
        args.rate,
        if scenario == Scenario::Ab {
            ", every third with `x-canary: insider`"
        } else {
            ""
        }
    )?;
    if sandbox.options.preview_every.is_some() {
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
        writeln!(
            out,
            "{} clients after {what}: {}",
            stamp(),
            describe_stats(&Stats::of(&sandbox.load.since(since)))
        )?;
    }
    let primary_after = sandbox.primary_version();
    let (problems, changes) = sandbox
        .node
        .lock()
        .map(|n| (n.problems.clone(), n.changes.clone()))
        .unwrap_or_default();
    let previews = sandbox.load.previews_since(0);
    let samples = sandbox.shutdown().await;
    std::fs::write(
        workdir.join("splits.json"),
        serde_json::to_string_pretty(&changes).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(
        workdir.join("clients.json"),
        serde_json::to_string(&samples).map_err(std::io::Error::other)?,
    )?;

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
        report_release(&mut out, args, second, &report_path, &workdir, &samples)?;
        let during: Vec<&load::Sample> = previews
            .iter()
            .filter(|s| (second.started_ms..=second.ended_ms).contains(&s.sent_ms))
            .collect();
        if !during.is_empty() {
            writeln!(
                out,
                "preview host {PREVIEW_HOST} during release 2: {}",
                describe_previews(&during)
            )?;
        }
        if let Some(decided) = second.rollback_decided_ms {
            let primary = primary_after
                .clone()
                .unwrap_or_else(|| STABLE_TAG.to_string());
            writeln!(
                out,
                "rollback: clients were all on the primary ({primary}) {} ms after the decision",
                time_to_primary(&samples, decided, &primary)
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
    Ok(match (stopped.or(interrupt.get()), &second) {
        (Some(_), _) | (None, None) => Exit::Cancelled,
        (None, Some(second)) => Exit::from_code(second.exit_code),
    })
}

/// Release 1 (the bootstrap), then release 2, live. `None` when a signal stopped the sandbox
/// before release 2 began.
async fn releases(
    sandbox: &Sandbox,
    args: &SandboxArgs,
    report_path: &Path,
    stamp: impl Fn() -> String + Copy,
) -> Result<Option<Release>, SandboxError> {
    let scenario = args.scenario;
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
    writeln!(
        out,
        "\n{} release 2: {IMAGE}:{tag} ({})",
        stamp(),
        scenario.describe()
    )?;
    let live = {
        let node = sandbox.node.clone();
        let samples = &sandbox.load;
        let mut last_line = Instant::now();
        let mut last_weight: Option<u8> = None;
        move |_: &str, message: &str| {
            println!("{} {message}", stamp());
            let weight = node
                .lock()
                .ok()
                .and_then(|n| n.changes.last().map(|c| c.canary_weight));
            if last_line.elapsed() >= Duration::from_millis(900) || weight != last_weight {
                let window = samples.since(aviary_kube::runner::wall_ms().saturating_sub(2000));
                println!(
                    "{}   ↳ split: canary {}% · clients (last 2s): {}",
                    stamp(),
                    weight.unwrap_or(0),
                    describe_stats(&Stats::of(&window))
                );
                last_line = Instant::now();
                last_weight = weight;
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
    let scenario = args.scenario;
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
