//! `aviary step`: aviary as a pipeline step. The host reads its inputs into a request, the
//! commands run it, and the host reports the verdict in its own terms.

use aviary_core::exit::Exit;
use aviary_core::report::{Log, Report, Verdict};
use aviary_core::spec::SpecError;
use aviary_hosts::{detect, host, HostKind, Level, PipelineHost, StepCommand, StepRequest};

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
            let path = args.report.clone().unwrap_or_else(|| host.default_report());
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
    let ctx = RunContext {
        log,
        ..RunContext::default()
    };
    let report = rollout::run_rollout(&req.rollout()?, ctx)?;
    host.end();
    Ok(report)
}
