//! One release: `aviary rollout` as a child process, run as a pipeline runs it, and what is
//! measured of it (its messages, its peak memory, how soon after a rollback the clients were
//! all on the primary).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{load, signals, Sandbox, SandboxError, StopSignal, ROLLOUT_GRACE};

/// How one `aviary rollout` went.
#[derive(Debug, Clone)]
pub struct Release {
    /// Its exit code; 128 + the signal's number when a signal ended it.
    pub exit_code: i32,
    /// The signal the sandbox passed on to it, and when (Unix ms).
    pub interrupted: Option<(StopSignal, u64)>,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub wall: Duration,
    /// The rollout process's peak resident set (VmHWM), in KiB, as last read while it ran.
    pub peak_rss_kib: Option<u64>,
    /// When the rollout announced its rollback ("Rolling back ..."), Unix ms.
    pub rollback_decided_ms: Option<u64>,
    /// When it announced each canary's rollback, by the canary's name (Unix ms).
    pub rollbacks: BTreeMap<String, u64>,
    /// Its log messages: (Unix ms when read, level, message).
    pub messages: Vec<(u64, String, String)>,
    pub report: Option<aviary_core::report::Report>,
}

impl Sandbox {
    /// `aviary rollout` for the example at `tag`, as a pipeline would run it. The run is named
    /// after the release (`AVIARY_RUN_ID`), so a re-run of a killed one resumes at once. With
    /// several services every one is released, each at its version of `tag` (see
    /// [`Sandbox::versions`]), under the sandbox's verdict policy.
    pub fn rollout_command(
        &self,
        tag: &str,
        profile: &str,
        report: Option<&Path>,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.options.aviary);
        cmd.env(
            "AVIARY_RUN_ID",
            format!("sandbox-{}/{tag}", std::process::id()),
        );
        let images: Vec<String> = self
            .versions(tag)
            .iter()
            .map(|(s, version)| format!("{0}={0}:{version}", s.image))
            .collect();
        cmd.args(["--log-format", "json", "rollout", "--target", "prod"])
            .arg("--skaffold-file")
            .arg(&self.skaffold_file)
            .args(["--profile", profile])
            .args(["--images", &images.join(",")])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--provider", self.options.router.provider()])
            .args(["--prometheus-url", &self.metrics.url()])
            .args(["--timeout", "5m"]);
        if self.options.services > 1 {
            cmd.args(["--verdict-policy", &self.options.verdict_policy.name()]);
        }
        if let Some(report) = report {
            cmd.arg("--report").arg(report);
        }
        for var in [
            "AVIARY_LOG",
            "AVIARY_LOG_FORMAT",
            "AVIARY_PROMETHEUS_URL",
            "AVIARY_PROMETHEUS_TOKEN",
            "AVIARY_PROMETHEUS_USERNAME",
            "AVIARY_PROMETHEUS_PASSWORD",
            "KUBECONFIG",
            "GITHUB_RUN_ID",
            "CLOUD_DEPLOY_ROLLOUT",
            "TEKTON_PIPELINE_RUN",
            "PIPELINE_RUN",
            "TEKTON_TASK_RUN",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own process group: it gets one signal, the one the sandbox passes on, not a
        // second one from the terminal.
        signals::own_group(&mut cmd);
        cmd
    }

    /// Runs one release to its end. `show` gets every log message as it arrives. A signal
    /// (see [`Sandbox::stop_on`]) is passed on to the rollout, which returns the traffic to
    /// the primary and exits; if it is still running [`ROLLOUT_GRACE`] later, it is killed.
    /// After a signal, no release starts ([`SandboxError::Interrupted`]).
    pub async fn release(
        &self,
        tag: &str,
        profile: &str,
        report: Option<&Path>,
        mut show: impl FnMut(&str, &str),
    ) -> Result<Release, SandboxError> {
        // Asked to stop already: no new rollout.
        if let Some(signal) = self.interrupt.get() {
            return Err(SandboxError::Interrupted(signal));
        }
        let started_ms = aviary_kube::runner::wall_ms();
        let started = Instant::now();
        let mut child = self.rollout_command(tag, profile, report).spawn()?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("the rollout process has no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut messages = Vec::new();
        let mut peak_rss_kib = None;
        let mut rollback_decided_ms = None;
        let mut rollbacks = BTreeMap::new();
        let several = self.options.services > 1;
        let mut rss_tick = tokio::time::interval(Duration::from_millis(20));
        let mut interrupted = None;
        let mut grace = std::pin::pin!(tokio::time::sleep(Duration::MAX));
        let mut killed = false;
        loop {
            tokio::select! {
                signal = self.interrupt.wait(), if interrupted.is_none() => {
                    interrupted = Some((signal, aviary_kube::runner::wall_ms()));
                    let passed = pid.is_some_and(|pid| signals::send(pid, signal));
                    show(
                        "INFO",
                        &format!(
                            "sandbox: {} received; {}",
                            signal.name(),
                            if passed {
                                "passed on to the rollout, which returns the traffic to the primary"
                            } else {
                                "the rollout has already exited"
                            }
                        ),
                    );
                    grace.as_mut().reset(tokio::time::Instant::now() + ROLLOUT_GRACE);
                }
                () = &mut grace, if !killed => {
                    killed = true;
                    let message = format!(
                        "sandbox: the rollout did not exit within {} s of the signal: killed; the traffic may still be split",
                        ROLLOUT_GRACE.as_secs()
                    );
                    tracing::warn!("{message}");
                    show("WARN", &message);
                    let _ = child.start_kill();
                }
                line = lines.next_line() => match line? {
                    Some(line) => {
                        let now = aviary_kube::runner::wall_ms();
                        let (level, message, canary) = parse_log_line(&line);
                        if message.starts_with("Rolling back") {
                            rollback_decided_ms.get_or_insert(now);
                            if let Some(canary) = &canary {
                                rollbacks.entry(canary.clone()).or_insert(now);
                            }
                        }
                        // Several canaries log at once: each message names its own.
                        let message = match canary {
                            Some(canary) if several => format!("{canary}: {message}"),
                            _ => message,
                        };
                        show(&level, &message);
                        messages.push((now, level, message));
                    }
                    None => break,
                },
                _ = rss_tick.tick() => {
                    if let Some(kib) = pid.and_then(peak_rss) {
                        peak_rss_kib = Some(kib);
                    }
                }
            }
        }
        let status = child.wait().await?;
        let exit_code = status
            .code()
            .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
            .unwrap_or(-1);
        let report = report.and_then(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            serde_json::from_str(&text).ok()
        });
        Ok(Release {
            exit_code,
            interrupted,
            started_ms,
            ended_ms: aviary_kube::runner::wall_ms(),
            wall: started.elapsed(),
            peak_rss_kib,
            rollback_decided_ms,
            rollbacks,
            messages,
            report,
        })
    }
}

/// The level, message and canary (the `canary` field of its innermost span that has one) of
/// one of aviary's JSON log lines (the line itself when it is not JSON).
fn parse_log_line(line: &str) -> (String, String, Option<String>) {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) => {
            let canary = v
                .get("spans")
                .and_then(|s| s.as_array())
                .and_then(|spans| {
                    spans
                        .iter()
                        .rev()
                        .find_map(|span| span.get("canary").and_then(|c| c.as_str()))
                })
                .map(str::to_string);
            (
                v.get("level")
                    .and_then(|l| l.as_str())
                    .unwrap_or("INFO")
                    .to_string(),
                v.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string(),
                canary,
            )
        }
        Err(_) => ("INFO".to_string(), line.to_string(), None),
    }
}

/// A process's peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The time from a rollback's announcement to the moment after which every client request
/// was answered by `primary_version`: the send time of the last request after the decision
/// that the primary did not answer, minus the decision time (0 when there was none).
pub fn time_to_primary(samples: &[load::Sample], decided_ms: u64, primary_version: &str) -> u64 {
    samples
        .iter()
        .filter(|s| s.sent_ms >= decided_ms)
        .filter(|s| {
            s.version.as_deref() != Some(primary_version) || s.status >= 500 || s.status == 0
        })
        .map(|s| s.sent_ms - decided_ms)
        .max()
        .unwrap_or(0)
}
