//! The HAProxy engine: a foreground (`-db`) HAProxy child process with a generated
//! configuration, changed after start only through its runtime API (stats socket).

use std::fmt::Write as _;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{anchored, validate, validate_header_name, Error, MatchKind, Split};

const ENGINE: &str = "HAProxy";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const STDERR_LIMIT: usize = 64 * 1024;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The four ACL flavours declared per match header, in file order.
const KINDS: [(MatchKind, &str, &str); 4] = [
    (MatchKind::Exact, "exact", "str"),
    (MatchKind::Prefix, "prefix", "beg"),
    (MatchKind::Suffix, "suffix", "end"),
    (MatchKind::Regex, "regex", "reg"),
];

pub(crate) struct Haproxy {
    binary: PathBuf,
    child: Mutex<Option<Child>>,
    pid: u32,
    stderr: Arc<Mutex<String>>,
    socket: PathBuf,
    version: String,
    addr: SocketAddr,
    /// Lower-cased `match_headers`, in declaration order.
    headers: Vec<String>,
    /// `acl_files[header][kind]`, `kind` indexing `KINDS`.
    pub(crate) acl_files: Vec<[String; 4]>,
    /// Serialises `apply`, and remembers the patterns last committed to each ACL file so an
    /// unchanged file is not rewritten.
    applied: tokio::sync::Mutex<Vec<[Option<Vec<String>>; 4]>>,
    /// The ACL file of the preview hosts, and the hosts last committed to it.
    preview_file: String,
    preview_applied: tokio::sync::Mutex<Option<Vec<String>>>,
}

impl Haproxy {
    pub(crate) async fn start(
        binary: &Path,
        workdir: &Path,
        match_headers: &[String],
    ) -> Result<Haproxy, Error> {
        let start_error = |reason: String| Error::HaproxyStart {
            binary: binary.to_path_buf(),
            reason,
        };
        if !binary.exists() {
            return Err(start_error(
                "no such file; install HAProxy (e.g. `apt-get install haproxy`), point $AVIARY_HAPROXY at it, or use the embedded engine".into(),
            ));
        }

        let mut headers: Vec<String> = Vec::new();
        for name in match_headers {
            validate_header_name(name)?;
            let lower = name.to_ascii_lowercase();
            if !headers.contains(&lower) {
                headers.push(lower);
            }
        }

        std::fs::create_dir_all(workdir).map_err(|e| {
            Error::io(
                format!("cannot create the splitter workdir {}", workdir.display()),
                e,
            )
        })?;
        let workdir = workdir.canonicalize().map_err(|e| {
            Error::io(
                format!("cannot resolve the splitter workdir {}", workdir.display()),
                e,
            )
        })?;
        let workdir_str = workdir.to_str().ok_or_else(|| {
            Error::invalid(
                format!("workdir {}", workdir.display()),
                "it is not valid UTF-8; choose a plain path",
            )
        })?;
        if workdir_str.contains(['"', '\\', '\n', '\r', '\'', '#', ' ', '\t', ';', '$']) {
            return Err(Error::invalid(
                format!("workdir {workdir_str}"),
                "HAProxy's configuration and runtime API need a path without spaces, quotes, backslashes, `#`, `;` or `$`; choose a plain path",
            ));
        }
        let socket = workdir.join("haproxy.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::invalid(
                format!("workdir {workdir_str}"),
                format!(
                    "the runtime socket path {} is longer than {MAX_SOCKET_PATH} bytes; choose a shorter workdir",
                    socket.display()
                ),
            ));
        }
        let acl_dir = workdir.join("acl");
        std::fs::create_dir_all(&acl_dir)
            .map_err(|e| Error::io(format!("cannot create {}", acl_dir.display()), e))?;
        let mut acl_files = Vec::with_capacity(headers.len());
        for i in 0..headers.len() {
            let files = KINDS.map(|(_, kind, _)| format!("{workdir_str}/acl/h{i}-{kind}.lst"));
            for file in &files {
                std::fs::write(file, "")
                    .map_err(|e| Error::io(format!("cannot write the ACL file {file}"), e))?;
            }
            acl_files.push(files);
        }
        let preview_file = format!("{workdir_str}/acl/preview.lst");
        std::fs::write(&preview_file, "")
            .map_err(|e| Error::io(format!("cannot write the ACL file {preview_file}"), e))?;
        let config_path = workdir.join("haproxy.cfg");

        // The free port is found by binding :0 and releasing it; another process may grab it
        // in between, so a bind failure is retried with a new port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let config = render_config(workdir_str, port, &headers, &acl_files, &preview_file);
            std::fs::write(&config_path, config).map_err(|e| {
                Error::io(
                    format!(
                        "cannot write the HAProxy configuration {}",
                        config_path.display()
                    ),
                    e,
                )
            })?;
            let _ = std::fs::remove_file(&socket);
            let (child, stderr, reader) = spawn(binary, &config_path).map_err(|e| {
                start_error(format!(
                    "cannot run it: {e}; check that it is an executable HAProxy binary"
                ))
            })?;
            let pid = child.id();
            let mut haproxy = Haproxy {
                binary: binary.to_path_buf(),
                child: Mutex::new(Some(child)),
                pid,
                stderr,
                socket: socket.clone(),
                version: String::new(),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                headers: headers.clone(),
                acl_files: acl_files.clone(),
                applied: tokio::sync::Mutex::new(vec![[None, None, None, None]; headers.len()]),
                preview_file: preview_file.clone(),
                preview_applied: tokio::sync::Mutex::new(None),
            };
            match haproxy.wait_ready().await {
                Ok(version) => {
                    haproxy.version = version;
                    tracing::debug!(pid, %haproxy.addr, socket = %socket.display(), "haproxy started");
                    return Ok(haproxy);
                }
                Err(Ready::Exited(status)) => {
                    drop(haproxy);
                    // The child is gone: its stderr reaches EOF, so the reader finishes.
                    let text = reader.join().unwrap_or_default();
                    if attempt < 3 && text.contains("cannot bind socket") {
                        tracing::debug!(port, "haproxy could not bind its port, retrying");
                        continue;
                    }
                    return Err(start_error(format!(
                        "haproxy exited at start ({status}): {}",
                        text.trim()
                    )));
                }
                Err(Ready::TimedOut(last)) => {
                    let text = haproxy.stderr_text();
                    drop(haproxy);
                    return Err(start_error(format!(
                        "its runtime API socket {} did not answer within {}s ({last}); haproxy stderr: {}",
                        socket.display(),
                        START_TIMEOUT.as_secs(),
                        text.trim()
                    )));
                }
            }
        }
    }

    /// Polls the runtime socket with `show info` until it answers, returning the version.
    async fn wait_ready(&self) -> Result<String, Ready> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.exit_status() {
                return Err(Ready::Exited(status));
            }
            if self.socket.exists() {
                match self.raw_command("show info").await {
                    Ok(info) => {
                        let version = info
                            .lines()
                            .find_map(|l| l.strip_prefix("Version:"))
                            .map(|v| v.trim().to_string())
                            .unwrap_or_else(|| "(unknown version)".to_string());
                        return Ok(version);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(Ready::TimedOut(last));
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    fn exit_status(&self) -> Option<String> {
        let mut guard = match self.child.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_mut().map(Child::try_wait) {
            None => Some("already stopped".to_string()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("cannot query its status: {e}")),
        }
    }

    pub(crate) fn stderr_text(&self) -> String {
        match self.stderr.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "HAProxy {} (runtime API on {})",
            self.version,
            self.socket.display()
        )
    }

    #[cfg(test)]
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends one command and returns HAProxy's answer, without judging it.
    async fn raw_command(&self, command: &str) -> std::io::Result<String> {
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            stream.write_all(command.as_bytes()).await?;
            stream.write_all(b"\n").await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", COMMAND_TIMEOUT.as_secs()),
            )),
        }
    }

    /// Sends one command; `accept` decides whether the (trimmed) answer means success.
    pub(crate) async fn command(
        &self,
        command: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<String, Error> {
        let answer = match self.raw_command(command).await {
            Ok(answer) => answer,
            Err(e) => {
                let answer = match self.exit_status() {
                    Some(status) => format!(
                        "haproxy is no longer running ({status}); its stderr: {}",
                        self.stderr_text().trim()
                    ),
                    None => format!(
                        "cannot talk to the runtime socket {}: {e}",
                        self.socket.display()
                    ),
                };
                return Err(Error::Runtime {
                    command: command.to_string(),
                    answer,
                });
            }
        };
        let trimmed = answer.trim();
        if accept(trimmed) {
            Ok(trimmed.to_string())
        } else {
            Err(Error::Runtime {
                command: command.to_string(),
                answer: if trimmed.is_empty() {
                    "(empty answer)".to_string()
                } else {
                    trimmed.to_string()
                },
            })
        }
    }

    /// A command whose success is an empty answer (`set server .. weight/state`, `add acl`,
    /// `commit acl`).
    pub(crate) async fn silent(&self, command: &str) -> Result<(), Error> {
        self.command(command, str::is_empty).await.map(drop)
    }

    /// Checks that `split` can be expressed, and returns the patterns of every ACL file.
    fn acl_patterns(&self, split: &Split) -> Result<Vec<[Vec<String>; 4]>, Error> {
        validate(split)?;
        let mut patterns: Vec<[Vec<String>; 4]> =
            vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; self.headers.len()];
        for m in &split.matches {
            let [h] = m.headers.as_slice() else {
                let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
                return Err(Error::Unsupported {
                    engine: ENGINE,
                    reason: format!(
                        "a match on {} headers at once ({}) cannot be expressed with HAProxy's runtime ACLs, which test one header per match; use one header per match, or Engine::Embedded, which supports any match",
                        names.len(),
                        names.join(" AND ")
                    ),
                });
            };
            let lower = h.name.to_ascii_lowercase();
            let Some(index) = self.headers.iter().position(|n| *n == lower) else {
                return Err(Error::Unsupported {
                    engine: ENGINE,
                    reason: format!(
                        "header `{}` is not in Options::match_headers ({}); HAProxy declares its ACLs at start, so add it there and restart, or use Engine::Embedded, which supports any header",
                        h.name,
                        if self.headers.is_empty() { "empty".to_string() } else { self.headers.join(", ") }
                    ),
                });
            };
            // Empty prefixes/suffixes/exact values cannot be passed as a CLI argument; they
            // are expressed as regular expressions with the same meaning.
            let (kind, pattern) = match (&h.kind, h.value.is_empty()) {
                (MatchKind::Exact, true) => (3, "^$".to_string()),
                (MatchKind::Prefix | MatchKind::Suffix, true) => (3, "^".to_string()),
                (MatchKind::Exact, false) => (0, h.value.clone()),
                (MatchKind::Prefix, false) => (1, h.value.clone()),
                (MatchKind::Suffix, false) => (2, h.value.clone()),
                (MatchKind::Regex, _) => (3, anchored(&h.value)),
            };
            let list = &mut patterns[index][kind];
            if !list.contains(&pattern) {
                list.push(pattern);
            }
        }
        Ok(patterns)
    }

    pub(crate) async fn apply(&self, split: &Split) -> Result<(), Error> {
        let mut patterns = self.acl_patterns(split)?;
        if split.canary.is_none() {
            // Matches only route to a canary; the `canary_up` guard would make them inert
            // anyway, but clearing them keeps `show acl` truthful.
            patterns.iter_mut().flatten().for_each(Vec::clear);
        }
        let mut applied = self.applied.lock().await;

        // Order: the weighted backend first, then the canary_only server, then the ACLs
        // (which only route to canary_only while its server is up).
        let canary_weight = u32::from(split.canary_weight);
        let servers = [
            ("weighted/primary", split.primary, 100 - canary_weight),
            ("weighted/canary", split.canary, canary_weight),
            ("canary_only/canary", split.canary, 1),
        ];
        for (server, addr, weight) in servers {
            match addr {
                Some(addr) => {
                    self.command(
                        &format!(
                            "set server {server} addr {} port {}",
                            addr.ip(),
                            addr.port()
                        ),
                        |a| {
                            a.is_empty() || a.contains("changed") || a.contains("no need to change")
                        },
                    )
                    .await?;
                    self.silent(&format!("set server {server} weight {weight}"))
                        .await?;
                    self.silent(&format!("set server {server} state ready"))
                        .await?;
                }
                None => {
                    self.silent(&format!("set server {server} state maint"))
                        .await?;
                }
            }
        }

        let mut preview = self.preview_applied.lock().await;
        if preview.as_ref() != Some(&split.preview_hosts) {
            self.replace_acl(&self.preview_file, &split.preview_hosts)
                .await?;
            *preview = Some(split.preview_hosts.clone());
        }
        for (h, files) in self.acl_files.iter().enumerate() {
            for (k, file) in files.iter().enumerate() {
                let wanted = &patterns[h][k];
                if applied[h][k].as_ref() == Some(wanted) {
                    continue;
                }
                self.replace_acl(file, wanted).await?;
                applied[h][k] = Some(wanted.clone());
            }
        }
        Ok(())
    }

    /// Atomically replaces the patterns of one ACL file: `prepare acl`, `add acl @ver`,
    /// `commit acl @ver`. (Equivalent to `clear acl` + `add acl`, without a window in which
    /// the ACL is empty.) With no pattern, a plain `clear acl` is used.
    async fn replace_acl(&self, file: &str, patterns: &[String]) -> Result<(), Error> {
        if patterns.is_empty() {
            return self.silent(&format!("clear acl {file}")).await;
        }
        let answer = self
            .command(&format!("prepare acl {file}"), |a| {
                a.starts_with("New version created:")
            })
            .await?;
        let version = answer
            .trim_start_matches("New version created:")
            .trim()
            .parse::<u32>()
            .map_err(|e| Error::Runtime {
                command: format!("prepare acl {file}"),
                answer: format!("unexpected answer `{answer}`: {e}"),
            })?;
        for pattern in patterns {
            self.silent(&format!(
                "add acl @{version} {file} {}",
                escape_cli_arg(pattern)
            ))
            .await?;
        }
        self.silent(&format!("commit acl @{version} {file}")).await
    }

    fn kill(&self) {
        let mut guard = match self.child.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(mut child) = guard.take() {
            if let Ok(None) = child.try_wait() {
                if let Err(e) = child.kill() {
                    tracing::warn!(pid = self.pid, error = %e, binary = %self.binary.display(), "cannot kill haproxy");
                }
            }
            // SIGKILL is immediate; reaping here leaves neither an orphan nor a zombie.
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    pub(crate) async fn shutdown(self) {
        // `kill` blocks only for the moment SIGKILL takes; Drop does the same.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Ready {
    Exited(String),
    TimedOut(String),
}

fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("cannot find a free port on 127.0.0.1", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot read the free port found on 127.0.0.1", e))
}

type Spawned = (Child, Arc<Mutex<String>>, std::thread::JoinHandle<String>);

/// Starts `haproxy -db -f <config>` from a dedicated thread that then drains its stderr.
///
/// The child gets `PR_SET_PDEATHSIG(SIGKILL)`, so HAProxy dies with this process even when
/// Drop never runs (e.g. SIGKILL). That signal fires when the *thread* that forked exits, so
/// the fork happens on the stderr thread, which lives until HAProxy closes its stderr.
fn spawn(binary: &Path, config: &Path) -> std::io::Result<Spawned> {
    let mut command = Command::new(binary);
    command
        .arg("-db")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    {
        use std::os::unix::process::CommandExt;
        // A process group of its own: a terminal's Ctrl-C goes to the owner's group, and
        // HAProxy stops on SIGINT at once, dropping every connection; its owner stops it
        // when it is done with it (Drop, `shutdown`).
        command.process_group(0);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork
        // and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("haproxy-stderr".into())
        .spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return String::new();
                }
            };
            let pipe = child.stderr.take();
            if tx.send(Ok(child)).is_err() {
                return String::new();
            }
            let Some(mut pipe) = pipe else {
                return String::new();
            };
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&chunk[..n]);
                        for line in text.lines() {
                            tracing::debug!(target: "splitter::haproxy", "{line}");
                        }
                        let mut buf = match sink.lock() {
                            Ok(b) => b,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        if buf.len() < STDERR_LIMIT {
                            buf.push_str(&text);
                        }
                    }
                }
            }
            match sink.lock() {
                Ok(b) => b.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            }
        })?;
    let child = rx.recv().map_err(|_| {
        std::io::Error::other("the thread launching haproxy ended before reporting")
    })??;
    Ok((child, stderr, reader))
}

/// Escapes one runtime API argument: the CLI splits on spaces and `;`, and treats `\` as
/// the escape character.
pub(crate) fn escape_cli_arg(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 8);
    for c in arg.chars() {
        if matches!(c, '\\' | ';' | ' ' | '\t') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn render_config(
    workdir: &str,
    port: u16,
    headers: &[String],
    acl_files: &[[String; 4]],
    preview_file: &str,
) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "# Generated by aviary's splitter; changed at run time through the stats socket only.
global
    stats socket {workdir}/haproxy.sock level admin
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 30s
    timeout http-keep-alive 30s
    # Clients keep their connections alive; each request gets a server connection of its own.
    # A kept server connection outlives `set server addr`: with keep-alive, HAProxy went on
    # sending requests to a server's old address for up to ~200 ms after the change under
    # load, so a moved primary still got requests after `apply` had returned.
    option http-server-close
    option forwardfor
    # A request that meets a backend as it stops (connection refused or closed without an
    # answer) is sent again (idempotent requests only, as HAProxy decides), so no client sees
    # it.
    retries 3
    retry-on conn-failure empty-response

frontend splitter
    bind 127.0.0.1:{port}
    acl canary_up nbsrv(canary_only) gt 0
    # A preview host reaches the canary, or gets 503 while there is none; never the primary.
    acl preview_host req.hdr(host),lower,field(1,:) -m str -f {preview_file}
    use_backend canary_only if preview_host
"
    );
    let mut rules = String::new();
    for (i, (header, files)) in headers.iter().zip(acl_files).enumerate() {
        for ((_, kind, method), file) in KINDS.iter().zip(files) {
            let _ = writeln!(
                c,
                "    acl ab_h{i}_{kind} req.fhdr({header}) -m {method} -f {file}"
            );
            let _ = writeln!(
                rules,
                "    use_backend canary_only if canary_up ab_h{i}_{kind}"
            );
        }
    }
    c.push_str(&rules);
    c.push_str(
        "    default_backend weighted

backend weighted
    balance roundrobin
    server primary 127.0.0.1:1 disabled weight 100
    server canary 127.0.0.1:1 disabled weight 0

backend canary_only
    server canary 127.0.0.1:1 disabled weight 1
",
    );
    c
}
