//! The step image as GitHub runs it: `scripts/image` builds it (static binary, kubectl for
//! `kubectl kustomize`, CA roots, `FROM scratch`), and these tests run `aviary step --host
//! github` inside it with buildah (chroot isolation, the host's network): the runner's mounts
//! (`/github/workspace`, `/github/file_commands`, `/github/runner_temp`, `/github/home`), its
//! environment and `INPUT_*` variables, the working directory `/github/workspace`, against the
//! API emulator on loopback, reached by the name `localhost` (the image's libc-free DNS path).
//! Once as root (GitHub's Docker actions) and once as 65532 (Tekton's non-root steps).
//!
//! `AVIARY_IMAGE` names the image (`bash .ci/test` builds it and sets it). Without it the tests
//! say so and pass, except under `CI`, where a missing image is a failure.

use std::path::Path;
use std::process::{Command, Output};

use crate::util::*;

fn image() -> Option<String> {
    match std::env::var("AVIARY_IMAGE") {
        Ok(name) if !name.is_empty() => Some(name),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "AVIARY_IMAGE is not set: run `bash .ci/test` (it builds the image with scripts/image)"
            );
            eprintln!("image tests skipped: AVIARY_IMAGE is not set (bash .ci/test sets it)");
            None
        }
    }
}

fn buildah(args: &[&str]) -> Output {
    let out = Command::new("buildah")
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run buildah: {e}"),
    }
}

/// A working container of `image`, removed when dropped.
struct Container(String);

impl Container {
    fn of(image: &str) -> Container {
        let out = buildah(&["from", "--pull-never", "--quiet", image]);
        assert_eq!(code(&out), 0, "buildah from {image}: {}", stderr(&out));
        Container(stdout(&out).trim().to_string())
    }

    /// `command` inside the container as `user`, with `mounts` (host, container) and `env`.
    fn run(
        &self,
        user: &str,
        mounts: &[(&Path, String)],
        env: &[(&str, String)],
        command: &[&str],
    ) -> Output {
        self.run_in("/github/workspace", user, mounts, env, command)
    }

    /// [`Container::run`] in the working directory `workdir`.
    fn run_in(
        &self,
        workdir: &str,
        user: &str,
        mounts: &[(&Path, String)],
        env: &[(&str, String)],
        command: &[&str],
    ) -> Output {
        let mut args: Vec<String> = [
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--user",
            user,
            "--workingdir",
            workdir,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (host, inside) in mounts {
            args.push("-v".into());
            args.push(format!("{}:{inside}", host.display()));
        }
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(self.0.clone());
        args.push("--".into());
        args.extend(command.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        buildah(&refs)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah(&["rm", &self.0]);
    }
}

/// Makes `dir` (and what is under it) writable by `uid`, as a Tekton workspace with `fsGroup` is.
fn give_to(dir: &Path, uid: u32) {
    let ok = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {}", dir.display());
}

/// `aviary step` releases examples/istio (dev deployed and waited for, prod's canary
/// bootstrapped) from inside the image as `user`; checks what the runner and later steps read.
fn release_in_image(image: &str, user: &str, uid: u32) {
    let c = cluster_with(&["default", "dev", "test"]);
    let host = tempdir();
    let ws = host.path().join("workspace");
    let files = host.path().join("file_commands");
    let temp = host.path().join("runner_temp");
    let home = host.path().join("home");
    for d in [&files, &temp, &home] {
        if let Err(e) = std::fs::create_dir_all(d) {
            panic!("{}: {e}", d.display());
        }
    }
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/istio"),
        &ws,
    );
    // The kubeconfig an earlier step wrote into the workspace, naming the API server `localhost`.
    let kubeconfig = read(&c.kubeconfig).replace("127.0.0.1", "localhost");
    assert!(kubeconfig.contains("localhost"), "{kubeconfig}");
    write(&ws, "kubeconfig", kubeconfig);
    if uid != 0 {
        give_to(host.path(), uid);
    }
    let env: Vec<(&str, String)> = vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("CI", "true".into()),
        ("GITHUB_WORKSPACE", "/github/workspace".into()),
        ("GITHUB_OUTPUT", "/github/file_commands/set_output_1".into()),
        (
            "GITHUB_STEP_SUMMARY",
            "/github/file_commands/step_summary_1".into(),
        ),
        ("GITHUB_STATE", "/github/file_commands/save_state_1".into()),
        ("GITHUB_ENV", "/github/file_commands/set_env_1".into()),
        ("GITHUB_PATH", "/github/file_commands/add_path_1".into()),
        ("RUNNER_TEMP", "/github/runner_temp".into()),
        ("HOME", "/github/home".into()),
        ("GITHUB_REPOSITORY", "acme/shop".into()),
        ("GITHUB_RUN_ID", "4242".into()),
        ("INPUT_COMMAND", "release".into()),
        ("INPUT_TARGET", "prod".into()),
        ("INPUT_DEV-TARGET", "dev".into()),
        ("INPUT_SKAFFOLD-FILE", "skaffold.yaml".into()),
        ("INPUT_KUBECONFIG", "kubeconfig".into()),
        ("INPUT_TIMEOUT", "2m".into()),
        ("INPUT_PROVIDER", "istio".into()),
        ("INPUT_GITHUB-TOKEN", String::new()),
        (
            "INPUT_IMAGES",
            "ghcr.io/stefanprodan/podinfo=ghcr.io/stefanprodan/podinfo:6.5.1".into(),
        ),
    ];
    let mut mounts: Vec<(&Path, String)> = vec![
        (&ws, "/github/workspace".into()),
        (&files, "/github/file_commands".into()),
        (&temp, "/github/runner_temp".into()),
        (&home, "/github/home".into()),
    ];
    // Non-root, the root filesystem is read-only as in a Tekton step with
    // `readOnlyRootFilesystem`: every path of the image is root's, and /tmp, the one a non-root
    // user could write, is mounted read-only. Only the mounted directories take writes.
    let empty = host.path().join("empty");
    if uid != 0 {
        if let Err(e) = std::fs::create_dir_all(&empty) {
            panic!("{e}");
        }
        mounts.push((&empty, "/tmp:ro".into()));
    }
    let ctr = Container::of(image);
    let out = ctr.run(
        user,
        &mounts,
        &env,
        &["/usr/local/bin/aviary", "step", "--host", "github"],
    );
    let log = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "as {user}: {log}");

    let outs = outputs(&read(&files.join("set_output_1")));
    assert_eq!(
        outs.get("verdict").map(String::as_str),
        Some("bootstrapped"),
        "as {user}: {outs:?}\n{log}"
    );
    assert_eq!(outs.get("exit-code").map(String::as_str), Some("0"));
    // The report is where a later step, outside the container, finds it: a path in the
    // workspace (relative to it, or under /github/workspace as the container saw it).
    let report = outs.get("report").cloned().unwrap_or_default();
    let on_host = match report.strip_prefix("/github/workspace/") {
        Some(rel) => ws.join(rel),
        None if !report.starts_with('/') => ws.join(&report),
        None => panic!("as {user}: the report output {report:?} is not in the workspace"),
    };
    let json: serde_json::Value =
        serde_json::from_str(&read(&on_host)).unwrap_or(serde_json::Value::Null);
    assert_eq!(
        json["verdict"],
        "bootstrapped",
        "as {user}: {}",
        on_host.display()
    );
    let summary = read(&files.join("step_summary_1"));
    assert!(
        summary.contains("bootstrapped"),
        "as {user}: the step summary: {summary}"
    );
    // The post-entrypoint (`aviary-post`, no arguments) reads the state the step left: the
    // rollout ended, so it has nothing to do and exits 0 without touching the cluster.
    let state = outputs(&read(&files.join("save_state_1")));
    assert_eq!(
        state.get("aviary_rollout").map(String::as_str),
        Some(""),
        "as {user}: {state:?}"
    );
    let mut post_env = env.clone();
    post_env.push(("STATE_aviary_rollout", String::new()));
    let post = ctr.run(user, &mounts, &post_env, &["/usr/local/bin/aviary-post"]);
    assert_eq!(
        code(&post),
        0,
        "as {user}: {}{}",
        stdout(&post),
        stderr(&post)
    );
    assert!(
        stderr(&post).contains("nothing to do"),
        "as {user}: {}",
        stderr(&post)
    );
    // Rendered in the image (kubectl kustomize), applied through the API server.
    let dev = c
        .emu
        .get("apps/v1", "deployments", Some("dev"), "podinfo")
        .unwrap_or(serde_json::Value::Null);
    assert_eq!(
        image_of(&dev),
        "ghcr.io/stefanprodan/podinfo:6.5.1",
        "as {user}"
    );
    let primary = c
        .emu
        .get("apps/v1", "deployments", Some("test"), "podinfo-primary")
        .unwrap_or(serde_json::Value::Null);
    assert_eq!(
        image_of(&primary),
        "ghcr.io/stefanprodan/podinfo:6.5.1",
        "as {user}"
    );
}

fn image_of(dep: &serde_json::Value) -> String {
    dep["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_image_releases_as_root_with_githubs_mounts() {
    if let Some(image) = image() {
        release_in_image(&image, "0:0", 0);
    }
}

#[test]
fn the_image_releases_as_a_non_root_user() {
    if let Some(image) = image() {
        release_in_image(&image, "65532:65532", 65532);
    }
}

/// The image holds the layout scripts/rootfs lists (the Dockerfile builds its image with the same
/// script), and nothing it runs needs a libc: the binaries are static, the post-entrypoint
/// resolves, `/tmp` is writable by every user.
#[test]
fn the_image_has_the_layout_the_dockerfile_builds() {
    let dockerfile = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"));
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap_or_default();
    assert!(
        dockerfile.contains("scripts/rootfs")
            && final_stage.starts_with("scratch")
            && final_stage.contains("COPY --from=rootfs /rootfs/ /"),
        "the Dockerfile must assemble its image with scripts/rootfs, FROM scratch"
    );
    let Some(image) = image() else {
        return;
    };
    let ctr = Container::of(&image);
    let mount = buildah(&["mount", &ctr.0]);
    assert_eq!(code(&mount), 0, "buildah mount: {}", stderr(&mount));
    let root = std::path::PathBuf::from(stdout(&mount).trim());
    for path in [
        "usr/local/bin/aviary",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
        "usr/share/aviary/examples/istio/skaffold.yaml",
    ] {
        assert!(root.join(path).is_file(), "the image lacks /{path}");
    }
    let post = std::fs::read_link(root.join("usr/local/bin/aviary-post")).ok();
    assert_eq!(
        post.as_deref(),
        Some(Path::new("aviary")),
        "aviary-post -> aviary"
    );
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::fs::metadata(root.join("tmp")).map(|m| m.permissions().mode() & 0o7777);
    assert_eq!(tmp.ok(), Some(0o1777), "/tmp");
    let renderers: Vec<&str> = ["usr/local/bin/kustomize", "usr/local/bin/kubectl"]
        .into_iter()
        .filter(|p| root.join(p).is_file())
        .collect();
    assert_eq!(renderers.len(), 1, "one renderer: {renderers:?}");
    for bin in ["usr/local/bin/aviary", renderers[0]] {
        let ldd = Command::new("ldd").arg(root.join(bin)).output();
        let said = ldd
            .map(|o| format!("{}{}", stdout(&o), stderr(&o)))
            .unwrap_or_default();
        assert!(
            said.contains("not a dynamic executable"),
            "{bin}: ldd says {said}"
        );
    }
    let _ = buildah(&["umount", &ctr.0]);
}

/// The Task's params as `name → default` (the defaults a TaskRun gets when it sets nothing).
fn task_defaults(task: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let params = task
        .split("\n  params:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  workspaces:\n").next())
        .unwrap_or_default();
    let mut name = None;
    for line in params.lines() {
        if let Some(n) = line.strip_prefix("    - name: ") {
            name = Some(n.trim().to_string());
        } else if let (Some(d), Some(n)) = (line.strip_prefix("      default: "), &name) {
            out.insert(n.clone(), d.trim().trim_matches('"').to_string());
        }
    }
    out
}

/// The Task's step as Tekton's controller would make its container: the `command`, `args`,
/// `workingDir`, the `env` entries with a `value` (variables substituted by `subst`), the
/// user of its securityContext and its volume mount paths.
struct TaskStep {
    command: Vec<String>,
    workdir: String,
    env: Vec<(String, String)>,
    user: String,
    mounts: Vec<String>,
}

fn task_step(task: &str, subst: &dyn Fn(&str) -> String) -> TaskStep {
    let step = task.split("\n  steps:\n").nth(1).unwrap_or_default();
    let field = |key: &str| -> Option<String> {
        step.lines()
            .find_map(|l| l.strip_prefix(&format!("      {key}: ")))
            .map(|v| v.trim().to_string())
    };
    let list = |key: &str| -> Vec<String> {
        field(key)
            .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
            .unwrap_or_default()
    };
    let mut command = list("command");
    command.extend(list("args"));
    let mut env = Vec::new();
    let mut name: Option<String> = None;
    let mut mounts = Vec::new();
    let mut ids = (None, None);
    for line in step.lines() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("- name: ") {
            name = Some(n.to_string());
        } else if let (Some(v), Some(n)) = (t.strip_prefix("value: "), name.take()) {
            env.push((n, subst(v.trim_matches('"'))));
        } else if let Some(p) = t.strip_prefix("mountPath: ") {
            mounts.push(p.to_string());
        } else if let Some(u) = t.strip_prefix("runAsUser: ") {
            ids.0 = Some(u.to_string());
        } else if let Some(g) = t.strip_prefix("runAsGroup: ") {
            ids.1 = Some(g.to_string());
        }
    }
    let user = match ids {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u,
        _ => "0:0".into(),
    };
    TaskStep {
        command,
        workdir: subst(&field("workingDir").unwrap_or_default()),
        env,
        user,
        mounts,
    }
}

/// The Tekton Task as written (`tekton/task/aviary/0.1/aviary.yaml`): its step's command, env,
/// working directory, user (65532) and volumes, run in the image as Tekton runs it, with a read-
/// only root filesystem (only the Task's `/tmp` emptyDir, the workspaces and `/tekton/results`
/// take writes). A release of examples/istio with the kubeconfig workspace bound: the results
/// Tekton would read and what reached the cluster.
#[test]
fn the_tekton_task_runs_its_step_in_the_image() {
    let task =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tekton/task/aviary/0.1/aviary.yaml"));
    let mut params = task_defaults(&task);
    assert_eq!(params.get("command").map(String::as_str), Some("release"));
    params.insert(
        "images".into(),
        "ghcr.io/stefanprodan/podinfo=ghcr.io/stefanprodan/podinfo:6.5.1".into(),
    );
    params.insert("timeout".into(), "2m".into());
    let subst = |v: &str| -> String {
        let mut out = v.to_string();
        for (k, val) in &params {
            out = out.replace(&format!("$(params.{k})"), val);
        }
        for r in aviary_hosts::tekton::RESULTS {
            out = out.replace(
                &format!("$(results.{r}.path)"),
                &format!("/tekton/results/{r}"),
            );
        }
        out.replace("$(workspaces.source.path)", "/workspace/source")
            .replace("$(workspaces.kubeconfig.bound)", "true")
            .replace("$(workspaces.kubeconfig.path)", "/workspace/kubeconfig")
            .replace("$(workspaces.prometheus.bound)", "false")
            .replace("$(workspaces.prometheus.path)", "")
            .replace("$(context.taskRun.name)", "release-prod-run-1")
    };
    let step = task_step(&task, &subst);
    assert_eq!(step.user, "65532:65532", "the Task runs non-root");
    assert!(
        step.command
            .first()
            .is_some_and(|c| c == "/usr/local/bin/aviary"),
        "{:?}",
        step.command
    );
    assert!(
        !step.env.iter().any(|(_, v)| v.contains("$(")),
        "unsubstituted: {:?}",
        step.env
    );
    let Some(image) = image() else {
        return;
    };

    let c = cluster_with(&["default", "dev", "test"]);
    let host = tempdir();
    let source = host.path().join("source");
    let kube = host.path().join("kubeconfig");
    let results = host.path().join("results");
    let tmp = host.path().join("tmp");
    let empty = host.path().join("empty");
    for d in [&kube, &results, &tmp, &empty] {
        if let Err(e) = std::fs::create_dir_all(d) {
            panic!("{}: {e}", d.display());
        }
    }
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/istio"),
        &source,
    );
    // The Secret bound as the kubeconfig workspace: the key `kubeconfig`, the server `localhost`.
    write(
        &kube,
        "kubeconfig",
        read(&c.kubeconfig).replace("127.0.0.1", "localhost"),
    );
    // The workspace volume, the results directory and the emptyDir are the step user's (fsGroup).
    give_to(host.path(), 65532);
    let mut mounts: Vec<(&Path, String)> = vec![
        (&source, "/workspace/source".into()),
        (&kube, "/workspace/kubeconfig:ro".into()),
        (&results, "/tekton/results".into()),
    ];
    // The Task's volumes; readOnlyRootFilesystem: a /tmp the Task does not mount is read-only.
    if step.mounts.iter().any(|m| m == "/tmp") {
        mounts.push((&tmp, "/tmp".into()));
    } else {
        mounts.push((&empty, "/tmp:ro".into()));
    }
    let env: Vec<(&str, String)> = step
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let command: Vec<&str> = step.command.iter().map(String::as_str).collect();
    let ctr = Container::of(&image);
    let out = ctr.run_in(&step.workdir, &step.user, &mounts, &env, &command);
    let log = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "{log}");
    let result = |name: &str| std::fs::read_to_string(results.join(name)).unwrap_or_default();
    assert_eq!(result("verdict"), "bootstrapped", "{log}");
    assert_eq!(result("exit-code"), "0");
    let report = result("report");
    let on_host = match report.strip_prefix("/workspace/source/") {
        Some(rel) => source.join(rel),
        None => source.join(&report),
    };
    let json: serde_json::Value =
        serde_json::from_str(&read(&on_host)).unwrap_or(serde_json::Value::Null);
    assert_eq!(json["verdict"], "bootstrapped", "{report}");
    let primary = c
        .emu
        .get("apps/v1", "deployments", Some("test"), "podinfo-primary")
        .unwrap_or(serde_json::Value::Null);
    assert_eq!(image_of(&primary), "ghcr.io/stefanprodan/podinfo:6.5.1");
}
