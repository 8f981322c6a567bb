//! Real metrics servers the providers' tests run on loopback (InfluxDB, Graphite, moto's AWS):
//! a process in a temporary directory, killed when the test is done with it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, its address and its directory; killed (and waited for) when dropped.
pub(crate) struct Server {
    child: std::process::Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A temporary directory for a server's files.
pub(crate) fn directory(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// An HTTP client for a test's own calls (the crypto provider installed, as the binary does).
pub(crate) fn http() -> reqwest::Client {
    crate::http::install_crypto_provider();
    reqwest::Client::new()
}

/// Starts `command` (its output in `dir/server.log`) serving `url`, and waits until `ready`
/// (a path under `url`) answers with a success, a minute at most on a loaded machine. `install`
/// says how to get the program when it cannot be started.
pub(crate) async fn start(
    mut command: Command,
    dir: tempfile::TempDir,
    url: String,
    ready: &str,
    install: &str,
) -> Server {
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let out = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}): {install} (CI does)"));
    let server = Server { child, url, dir };
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http.get(format!("{}{ready}", server.url)).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "{program} did not answer within a minute: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
