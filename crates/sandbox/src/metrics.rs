//! Where the sandbox's metrics live: Debian's `prometheus` when it is installed (scraping the
//! demo apps every second through file-based service discovery), else the embedded store
//! (`promlite`), which scrapes them the same way and answers the same HTTP API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How often the apps are scraped.
pub const SCRAPE_INTERVAL: Duration = Duration::from_millis(500);

/// Which metrics backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsChoice {
    /// Prometheus when it is installed, else the embedded store.
    Auto,
    /// Debian's `prometheus` (an error when it is missing).
    Prometheus,
    /// The embedded Prometheus-compatible store.
    Embedded,
}

// One per sandbox: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum MetricsBackend {
    Prometheus {
        child: Child,
        url: String,
        targets: PathBuf,
        version: String,
    },
    Embedded(promlite::Promlite),
}

/// `$AVIARY_PROMETHEUS_BIN`, else `prometheus` on the PATH, else `/usr/bin/prometheus`.
pub fn find_prometheus() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AVIARY_PROMETHEUS_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    use aviary_kube::render::kustomize::{find_executable, is_executable};
    find_executable(std::env::var_os("PATH").as_deref(), "prometheus").or_else(|| {
        let p = PathBuf::from("/usr/bin/prometheus");
        is_executable(&p).then_some(p)
    })
}

impl MetricsBackend {
    /// Starts Prometheus from `prometheus` when given, else the embedded store.
    pub async fn start(
        prometheus: Option<&Path>,
        workdir: &Path,
    ) -> std::io::Result<MetricsBackend> {
        match prometheus {
            Some(binary) => start_prometheus(binary, workdir).await,
            None => {
                let store = promlite::Promlite::start(promlite::Config {
                    scrape_interval: SCRAPE_INTERVAL,
                    ..promlite::Config::default()
                })
                .await?;
                Ok(MetricsBackend::Embedded(store))
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            MetricsBackend::Prometheus { url, .. } => url.clone(),
            MetricsBackend::Embedded(p) => p.url(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MetricsBackend::Prometheus { url, version, .. } => {
                format!("Prometheus {version} at {url}, scraping every 500 ms")
            }
            MetricsBackend::Embedded(p) => format!(
                "the embedded Prometheus-compatible store at {} (install Debian's `prometheus` to use the real one)",
                p.url()
            ),
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, MetricsBackend::Prometheus { .. })
    }

    /// Replaces the scrape targets: `(url, labels)`.
    pub async fn set_targets(
        &self,
        targets: &[(String, BTreeMap<String, String>)],
    ) -> std::io::Result<()> {
        match self {
            MetricsBackend::Prometheus { targets: file, .. } => {
                let groups: Vec<serde_json::Value> = targets
                    .iter()
                    .map(|(url, labels)| {
                        let host = url
                            .trim_start_matches("http://")
                            .split('/')
                            .next()
                            .unwrap_or_default();
                        serde_json::json!({"targets": [host], "labels": labels})
                    })
                    .collect();
                // Written whole and renamed, so Prometheus never reads half a file.
                let tmp = file.with_extension("json.tmp");
                tokio::fs::write(&tmp, serde_json::to_vec(&groups)?).await?;
                tokio::fs::rename(&tmp, file).await
            }
            MetricsBackend::Embedded(p) => {
                p.set_targets(
                    targets
                        .iter()
                        .map(|(url, labels)| promlite::Target {
                            url: url.clone(),
                            labels: labels.clone(),
                        })
                        .collect(),
                );
                Ok(())
            }
        }
    }

    pub async fn stop(self) {
        if let MetricsBackend::Prometheus { mut child, .. } = self {
            let _ = child.kill().await;
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_prometheus(binary: &Path, workdir: &Path) -> std::io::Result<MetricsBackend> {
    let dir = workdir.join("prometheus");
    std::fs::create_dir_all(dir.join("data"))?;
    let targets = dir.join("targets.json");
    std::fs::write(&targets, "[]")?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 450ms\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sandbox\n    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n",
            serde_json::Value::String(targets.display().to_string())
        ),
    )?;
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.split_whitespace()
                .skip_while(|w| *w != "version")
                .nth(1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(unknown version)".into());
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let mut command = Command::new(binary);
    // Its own process group: the sandbox stops it last, after a Ctrl-C at its terminal.
    super::signals::own_group(&mut command);
    let mut child = command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display()))
        })?;
    let url = format!("http://127.0.0.1:{port}");
    aviary_kube::http::install_crypto_provider();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "prometheus exited at start ({status}): {}",
                log.lines().last().unwrap_or("no output")
            )));
        }
        let ready = client
            .get(format!("{url}/-/ready"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(std::io::Error::other(
                "prometheus did not become ready within 30 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(MetricsBackend::Prometheus {
        child,
        url,
        targets,
        version,
    })
}
