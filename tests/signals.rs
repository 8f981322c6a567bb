//! A cancelled job before the rollout begins. In a container step aviary is PID 1, and the
//! kernel drops a SIGTERM that PID 1 has no handler for: the step must own SIGTERM/SIGINT from its
//! first instruction, stop a render (or download, or dev deploy) at once, still write its
//! outputs and exit 130.
//!
//! The render is held open by a `kustomize` on `PATH` that records its pid and sleeps, so the
//! signal lands while aviary waits on it (the real kustomize finishes too fast to aim at).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{outputs, read, tempdir, write};

/// A Skaffold project whose prod target is built by kustomize.
fn project(dir: &Path) {
    write(
        dir,
        "skaffold.yaml",
        "apiVersion: skaffold/v4beta11\nkind: Config\nmanifests:\n  kustomize:\n    paths: [k8s]\n",
    );
    write(dir, "k8s/kustomization.yaml", "resources: [cm.yaml]\n");
    write(
        dir,
        "k8s/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {a: b}\n",
    );
}

/// A `kustomize` that writes its pid to `started` and then sleeps for ten minutes.
fn slow_kustomize(bin: &Path, started: &Path) {
    let script = format!(
        "#!/bin/sh\necho $$ > {}.tmp && mv {0}.tmp {0}\nexec sleep 600\n",
        started.display()
    );
    let path = write(bin, "kustomize", script);
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)) {
        panic!("chmod {}: {e}", path.display());
    }
}

/// `aviary step --host github` for a render, as PID 1 of a new PID namespace when `unshare` can
/// make one (root), else as a plain child; with the aviary pid to signal.
fn spawn_step(dir: &Path, bin: &Path) -> (Child, Option<u32>) {
    let pid1 = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let aviary = env!("CARGO_BIN_EXE_aviary");
    let mut cmd = if pid1 {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--kill-child", "--", aviary]);
        c
    } else {
        Command::new(aviary)
    };
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.args(["step", "--host", "github"])
        .env_clear()
        .env("PATH", path)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", dir)
        .env("GITHUB_OUTPUT", dir.join("output"))
        .env("GITHUB_STEP_SUMMARY", dir.join("summary.md"))
        .env("RUNNER_TEMP", dir)
        .env("INPUT_COMMAND", "render")
        .env("INPUT_TARGET", "prod")
        .env("INPUT_SKAFFOLD-FILE", dir.join("skaffold.yaml"))
        .env("INPUT_OUTPUT-DIR", dir.join("out"))
        .env("INPUT_REPORT", dir.join("report.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start aviary: {e}"),
    };
    let target = if pid1 { None } else { Some(child.id()) };
    (child, target)
}

/// The pid (in our namespace) of `parent`'s only child.
fn child_of(parent: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn alive(pid: u32) -> bool {
    // /proc/<pid>/stat exists and the process is not a zombie.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn sigterm_during_render_stops_the_step_reports_cancelled_and_exits_130() {
    let dir = tempdir();
    let root = dir.path();
    project(root);
    let bin = root.join("bin");
    let started = root.join("kustomize.pid");
    slow_kustomize(&bin, &started);
    let (mut child, direct) = spawn_step(root, &bin);

    // Wait (on the event, bounded) until aviary is inside the render.
    let limit = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("aviary ended before the render started: {status}");
        }
        assert!(Instant::now() < limit, "kustomize never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let aviary = direct.or_else(|| child_of(child.id()));
    let Some(aviary) = aviary else {
        panic!("cannot find aviary's pid under unshare {}", child.id());
    };
    // The pid the script wrote is its own namespace's; ours is aviary's child. (As PID 1,
    // aviary's exit takes its namespace down anyway; as a plain child it must kill it itself.)
    let Some(kustomize) = child_of(aviary) else {
        panic!("aviary {aviary} has no kustomize child");
    };
    let sent = Command::new("kill")
        .args(["-TERM", &aviary.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "cannot signal aviary ({aviary})");

    // It must end by itself, long before the fake kustomize's ten minutes.
    let limit = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > limit {
            let _ = child.kill();
            let _ = Command::new("kill").arg(kustomize.to_string()).status();
            panic!("SIGTERM was ignored: aviary still waits on the render a minute later");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().ok();
    let log = out
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(!alive(kustomize), "the render's kustomize was left running");
    let outs = outputs(&read(&root.join("output")));
    assert_eq!(
        outs.get("verdict").map(String::as_str),
        Some("cancelled"),
        "{outs:?}"
    );
    assert_eq!(outs.get("exit-code").map(String::as_str), Some("130"));
    let report: serde_json::Value =
        serde_json::from_str(&read(&root.join("report.json"))).unwrap_or(serde_json::Value::Null);
    assert_eq!(report["verdict"], "cancelled", "{report}");
    assert!(
        report["message"]
            .as_str()
            .is_some_and(|m| m.contains("SIGTERM")),
        "{report}"
    );
    assert!(!root.join("out").join("manifests.yaml").exists());
}
