//! `aviary step`: aviary as a pipeline step. The host reads its inputs into a request, the
//! commands run it, and the host reports the verdict in its own terms.

use aviary_core::exit::Exit;
use aviary_core::report::{Log, Report, Verdict};
use aviary_core::spec::SpecError;
use aviary_hosts::{
    detect, host, HostKind, Level, PipelineHost, StepCommand, StepRequest, ROLLOUT_STATE,
};

use super::rollout::{self, RunContext};
use super::AppError;
use crate::cli::StepArgs;

/// `aviary step`.
pub fn run(args: &StepArgs) -> Result<Exit, AppError> {
    let env = aviary_hosts::process_env();
    let kind = detect(args.host, &*env);
    if kind == HostKind::Github {
        // The runner reads stderr for workflow commands too: every log line is escaped.
        crate::logging::github_mode();
    }
    if kind == HostKind::CloudDeploy {
        return super::cloud_deploy::run(env);
    }
    let mut host = host(kind, env);
    if args.post {
        return post(&*host);
    }
    let (mut report, report_path) = match StepRequest::read(&*host).map_err(AppError::from) {
        Ok(req) => {
            for secret in req.secrets() {
                host.mask(&secret);
            }
            let path = args
                .report
                .clone()
                .or_else(|| req.report.clone())
                .unwrap_or_else(|| host.default_report());
            tracing::info!(
                "aviary {} on {}: target {}",
                req.command.as_str(),
                host.name(),
                req.target
            );
            host.started(&req);
            let report = match execute(&req, &mut *host) {
                Ok(report) => report,
                Err(e) => failure(&mut *host, &e, req.command.as_str()),
            };
            (report, path)
        }
        Err(e) => {
            let path = args
                .report
                .clone()
                .or_else(|| host.report_input())
                .unwrap_or_else(|| host.default_report());
            (failure(&mut *host, &e, "step"), path)
        }
    };
    report.host = Some(host.name().to_string());
    let mut exit = host.exit(aviary_core::report::exit_of(&report));
    if let Err(e) = aviary_kube::files::write_report(&report, &report_path) {
        tracing::error!("cannot write the report {}: {e}", report_path.display());
        exit = if exit == Exit::Success {
            Exit::Runtime
        } else {
            exit
        };
    }
    if let Err(e) = host.finish(&report, &report_path) {
        tracing::error!("cannot report to {}: {e}", host.name());
        exit = if exit == Exit::Success {
            Exit::Runtime
        } else {
            exit
        };
    }
    Ok(exit)
}

/// Logs an error, annotates the host with it (spec errors at their file and line), and turns it
/// into a report.
fn failure(host: &mut dyn PipelineHost, err: &AppError, command: &str) -> Report {
    host.end();
    err.report();
    if let AppError::Spec(SpecError::Invalid { errors, warnings }) = err {
        for (level, d) in errors
            .iter()
            .map(|d| (Level::Error, d))
            .chain(warnings.iter().map(|d| (Level::Warning, d)))
        {
            let title = if d.path.is_empty() {
                "aviary: invalid spec".to_string()
            } else {
                d.path.clone()
            };
            let message = match &d.help {
                Some(help) => format!("{}\nhelp: {help}", d.message),
                None => d.message.clone(),
            };
            host.annotate(level, &title, &message, Some((&d.file, d.line)));
        }
    }
    super::failed_report(err, command)
}

/// Runs the stages of a step, each in its own section of the log.
fn execute(req: &StepRequest, host: &mut dyn PipelineHost) -> Result<Report, AppError> {
    match req.command {
        StepCommand::Render => {
            host.begin(&format!("aviary render {}", req.target));
            super::render::run(&req.render(), &mut std::io::sink())?;
            host.end();
            let mut report = Report::new(Verdict::Rendered);
            report.command = Some("render".into());
            report.target = Some(req.target.clone());
            report.message = Some(format!("rendered to {}", req.output_dir.display()));
            Ok(report.exit(Exit::Success))
        }
        StepCommand::Deploy => {
            host.begin(&format!("aviary deploy {}", req.target));
            let report = super::deploy::run_deploy(&req.deploy(&req.target))?;
            host.end();
            Ok(report)
        }
        StepCommand::Rollout => rollout_stage(req, host),
        StepCommand::Release => {
            let mut warnings = Vec::new();
            if let Some(dev) = req.dev_target.as_deref().filter(|d| *d != req.target) {
                host.begin(&format!("aviary deploy {dev}"));
                let dev_report = super::deploy::run_deploy(&req.deploy(dev))?;
                warnings.extend(dev_report.warnings);
                host.end();
            }
            let mut report = rollout_stage(req, host)?;
            report.command = Some("release".into());
            warnings.append(&mut report.warnings);
            report.warnings = warnings;
            Ok(report)
        }
        StepCommand::Simulate => {
            host.begin("aviary simulate");
            let (_, report) = super::simulate::run_report(&req.simulate()?)?;
            host.end();
            Ok(report)
        }
    }
}

fn rollout_stage(req: &StepRequest, host: &mut dyn PipelineHost) -> Result<Report, AppError> {
    let title = format!("aviary rollout {}", req.target);
    host.begin(&title);
    let log = Log::new();
    if let Some(observer) = host.progress(title) {
        log.observe(observer);
    }
    // The host keeps the canary's name while this run holds it, for a post step that runs if
    // the step is killed (a job timeout, a second cancel): it rolls that canary back.
    let saver = host.state_saver();
    let started = saver.clone().map(|save| -> rollout::Started {
        Box::new(move |held: &[(String, String)]| {
            let value: Vec<String> = held
                .iter()
                .map(|(ns, name)| format!("{ns}/{name}"))
                .collect();
            if let Err(e) = save(ROLLOUT_STATE, &value.join(",")) {
                tracing::warn!("cannot save the step's state for its post step: {e}");
            }
        })
    });
    let ctx = RunContext {
        log,
        started,
        ..RunContext::default()
    };
    let result = rollout::run_rollout(&req.rollout()?, ctx);
    // The rollout ended here, whatever its verdict (its own cleanup has run): nothing for the
    // post step to do.
    if let Some(save) = saver {
        if let Err(e) = save(ROLLOUT_STATE, "") {
            tracing::warn!("cannot save the step's state for its post step: {e}");
        }
    }
    let report = result?;
    host.end();
    Ok(report)
}

/// The action's post step (`aviary-post`): it runs after the job whatever happened to the main
/// step. When the main step saved its canaries (`ns/name,...`: one, or every canary of a
/// release) and never cleared them, the step was killed while it held those rollouts (a job
/// timeout, a cancel past the runner's grace period): each canary is aborted the way `aviary
/// abort` does it (through its runner if one is alive, else by taking its lease and routing all
/// traffic back to the primary). Otherwise it does nothing. Every canary is tried; the exit
/// code is the first failure's, else the first non-success.
fn post(host: &dyn PipelineHost) -> Result<Exit, AppError> {
    let saved = host.saved_state(ROLLOUT_STATE).unwrap_or_default();
    let saved = saved.trim();
    if saved.is_empty() {
        tracing::info!("aviary post: no rollout was left running; nothing to do");
        return Ok(Exit::Success);
    }
    let mut held = Vec::new();
    for one in saved.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((namespace, name)) = one.split_once('/') else {
            return Err(AppError::input(format!(
                "the step's saved state {ROLLOUT_STATE}={saved:?} is not namespace/name[,namespace/name...]"
            )));
        };
        held.push((namespace.to_string(), name.to_string()));
    }
    let req = StepRequest::read(host).map_err(AppError::from)?;
    let reason = "the step ended before its rollout did (job cancelled or timed out)";
    let mut first_error = None;
    let mut exit = Exit::Success;
    for (namespace, name) in &held {
        tracing::warn!(
            "aviary post: the step was stopped while rolling out {name}.{namespace}; rolling it back"
        );
        host.annotate(
            Level::Error,
            "aviary post",
            &format!("{name}.{namespace}: {reason}; rolling it back to the primary"),
            None,
        );
        let aborted =
            super::control::Target::of(name, Some(namespace.clone()), req.cluster().clone())
                .and_then(|target| super::control::abort_canary(&target, name, reason));
        match aborted {
            Ok(code) if exit == Exit::Success => exit = code,
            Ok(_) => {}
            Err(e) => {
                e.report();
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(exit),
    }
}
