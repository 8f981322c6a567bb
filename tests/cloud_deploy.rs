//! Cloud Deploy's custom target contract, end to end: the real binary with the environment Cloud
//! Deploy gives its render and deploy containers, a real (local) GCS, the API emulator, and, for
//! GKE, local stand-ins of the metadata server and the GKE API in front of the emulator over TLS.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::hosts::CloudDeploy;
use crate::util::{code, stderr, tempdir};

/// The keys of a `results.json`, sorted.
fn keys(r: &Value) -> Vec<String> {
    let mut k: Vec<String> = r
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

fn subset(r: &Value, contract: &[&str]) {
    for k in keys(r) {
        assert!(
            contract.contains(&k.as_str()),
            "{k} is not in {contract:?}: {r}"
        );
    }
}

const RENDER_CONTRACT: &[&str] = &["resultStatus", "manifestFile", "failureMessage", "metadata"];
const DEPLOY_CONTRACT: &[&str] = &[
    "resultStatus",
    "artifactFiles",
    "failureMessage",
    "skipMessage",
    "metadata",
];

fn primary_image(cd: &CloudDeploy) -> String {
    crate::util::image(&cd.cluster.get("apps/v1", "deployments", "podinfo-primary"))
}

#[test]
fn results_json_is_exactly_the_contract_of_its_request() {
    let cd = CloudDeploy::start();
    cd.render("podinfo:1", "c/render");
    let r = cd.results("c/render");
    subset(&r, RENDER_CONTRACT);
    assert!(r.get("artifactFiles").is_none(), "{r}");
    // The report is still uploaded and named, in the metadata.
    assert_eq!(
        r["metadata"]["aviary-report"],
        "gs://pipeline-artifacts/c/render/aviary-report.json"
    );
    // A failing render too.
    let o = cd.run(
        "RENDER",
        "c/render-failed",
        &[(
            "CLOUD_DEPLOY_INPUT_GCS_PATH",
            "gs://pipeline-artifacts/releases/missing.tgz",
        )],
    );
    assert_ne!(code(&o), 0);
    let r = cd.results("c/render-failed");
    subset(&r, RENDER_CONTRACT);
    assert_eq!(r["resultStatus"], "FAILED", "{r}");

    let o = cd.deploy("c/render", "c/stable", None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("c/stable");
    subset(&r, DEPLOY_CONTRACT);
    assert!(r.get("manifestFile").is_none(), "{r}");
    assert!(
        r["artifactFiles"].as_array().is_some_and(|a| !a.is_empty()),
        "{r}"
    );
}

#[test]
fn a_canary_phase_that_only_bootstraps_or_has_nothing_to_do_is_skipped() {
    let cd = CloudDeploy::start();
    // The Canary's first rollout reaches canary-10 (a target that had releases before the
    // Canary, so Cloud Deploy does not skip the phase itself): it can only create the primary.
    cd.render("podinfo:1", "s/r1/render");
    let o = cd.deploy("s/r1/render", "s/r1/canary-10", Some(("canary-10", 10)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("s/r1/canary-10");
    assert_eq!(r["resultStatus"], "SKIPPED", "{r}");
    let why = r["skipMessage"].as_str().unwrap_or_default();
    assert!(why.contains("first rollout") && why.contains("10%"), "{r}");
    assert_eq!(r["metadata"]["aviary-verdict"], "bootstrapped");
    subset(&r, DEPLOY_CONTRACT);
    assert_eq!(primary_image(&cd), "podinfo:1");

    // canary-50 of the same release: nothing to shift.
    let o = cd.deploy("s/r1/render", "s/r1/canary-50", Some(("canary-50", 50)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("s/r1/canary-50");
    assert_eq!(r["resultStatus"], "SKIPPED", "{r}");
    assert!(
        r["skipMessage"]
            .as_str()
            .is_some_and(|m| m.contains("already runs this release")),
        "{r}"
    );

    // stable is the deploy itself: never skipped.
    let o = cd.deploy("s/r1/render", "s/r1/stable", Some(("stable", 100)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("s/r1/stable");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert!(r.get("skipMessage").is_none(), "{r}");

    // A second release does move the canary: SUCCEEDED, not SKIPPED.
    cd.render("podinfo:2", "s/r2/render");
    let o = cd.deploy("s/r2/render", "s/r2/canary-10", Some(("canary-10", 10)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("s/r2/canary-10");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert_eq!(r["metadata"]["aviary-verdict"], "advanced");
}

#[test]
fn a_canary_phase_without_a_canary_in_the_manifest_is_skipped_and_changes_nothing() {
    // A second Skaffold project in the release source: plain objects, no Canary.
    let cd = CloudDeploy::start_with(|_| {
        vec![
            (
                "plain/skaffold.yaml",
                "apiVersion: skaffold/v4beta11\nkind: Config\nmanifests:\n  rawYaml:\n    - configmap.yaml\n".to_string(),
            ),
            (
                "plain/configmap.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n  namespace: test\ndata:\n  a: b\n".to_string(),
            ),
        ]
    });
    let o = cd.run(
        "RENDER",
        "p/render",
        &[(
            "CLOUD_DEPLOY_customTarget_skaffoldFile",
            "plain/skaffold.yaml",
        )],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = cd.deploy("p/render", "p/canary-10", Some(("canary-10", 10)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("p/canary-10");
    assert_eq!(r["resultStatus"], "SKIPPED", "{r}");
    assert!(
        r["skipMessage"]
            .as_str()
            .is_some_and(|m| m.contains("no Canary")),
        "{r}"
    );
    assert!(
        cd.cluster
            .emu
            .get("v1", "configmaps", Some("test"), "plain")
            .is_none(),
        "a canary phase applied the objects"
    );
    // The stable phase applies them.
    let o = cd.deploy("p/render", "p/stable", Some(("stable", 100)));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(cd.results("p/stable")["resultStatus"], "SUCCEEDED");
    assert!(cd
        .cluster
        .emu
        .get("v1", "configmaps", Some("test"), "plain")
        .is_some());
}

#[test]
fn a_kubeconfig_path_is_read_from_the_release_source() {
    let cd = CloudDeploy::start_with(|c| {
        vec![("clusters/prod/kubeconfig", crate::util::read(&c.kubeconfig))]
    });
    cd.render("podinfo:1", "k/render");
    // As Cloud Deploy runs a deploy: its input is the render's output directory, not the source.
    let deploy = |out: &str, kubeconfig: &str| {
        cd.run(
            "DEPLOY",
            out,
            &[
                (
                    "CLOUD_DEPLOY_MANIFEST_GCS_PATH",
                    "gs://pipeline-artifacts/k/render/manifest.yaml",
                ),
                (
                    "CLOUD_DEPLOY_INPUT_GCS_PATH",
                    "gs://pipeline-artifacts/k/render",
                ),
                ("CLOUD_DEPLOY_PHASE", "stable"),
                ("CLOUD_DEPLOY_customTarget_kubeconfig", kubeconfig),
            ],
        )
    };
    let o = deploy("k/stable", "clusters/prod/kubeconfig");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("k/stable");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert_eq!(primary_image(&cd), "podinfo:1");

    // A path that is not there, or not in the source: FAILED, naming the parameter and the path.
    let o = deploy("k/missing", "clusters/dev/kubeconfig");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    cd.assert_failed(
        "k/missing",
        "customTarget/kubeconfig (clusters/dev/kubeconfig)",
    );
    let o = deploy("k/outside", "../kubeconfig");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    cd.assert_failed("k/outside", "customTarget/kubeconfig (../kubeconfig)");
}

#[test]
fn a_render_without_images_says_nothing_was_substituted() {
    let cd = CloudDeploy::start();
    let o = cd.run("RENDER", "i/render", &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("i/render");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    let warning = r["metadata"]["aviary-warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("no image was substituted")
            && warning.contains("customTarget/images")
            && warning.contains("--images"),
        "{r}"
    );
    assert!(
        stderr(&o).contains("no image was substituted"),
        "{}",
        stderr(&o)
    );
    subset(&r, RENDER_CONTRACT);
    // With customTarget/images: no warning.
    cd.render("podinfo:1", "i/render-images");
    let r = cd.results("i/render-images");
    assert!(r["metadata"].get("aviary-warning").is_none(), "{r}");
}

/// `openssl` with `args`, in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").args(args).current_dir(dir).output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("openssl: {e}"),
    }
}

/// A TLS front for the emulator (the emulator speaks plain HTTP): a CA, a server certificate for
/// 127.0.0.1 signed by it, and a Python TLS proxy forwarding bytes to `upstream`. The first
/// request head of each connection is appended to `heads.log`, to check the bearer token.
struct TlsFront {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The CA, base64 PEM (as the GKE API's `clusterCaCertificate`).
    ca_b64: String,
    heads: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PROXY: &str = r#"
import socket, ssl, sys, threading
port, upstream, cert, key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
host, uport = upstream.rsplit(":", 1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
lock = threading.Lock()
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(raw):
    try:
        c = ctx.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError):
        raw.close()
        return
    u = socket.create_connection((host, int(uport)))
    first = b""
    try:
        while b"\r\n\r\n" not in first:
            d = c.recv(65536)
            if not d:
                break
            first += d
    except OSError:
        pass
    with lock:
        with open(log, "ab") as f:
            f.write(first.split(b"\r\n\r\n")[0] + b"\n---\n")
    u.sendall(first)
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
    pipe(c, u)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
print("ready", flush=True)
while True:
    s, _ = srv.accept()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
"#;

impl TlsFront {
    fn start(upstream: &str) -> TlsFront {
        let tmp = tempdir();
        let dir = tmp.path();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=aviary-test-ca",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        crate::util::write(
            dir,
            "ext.cnf",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let ca = std::fs::read(dir.join("ca.pem")).unwrap_or_default();
        let ca_b64 = base64(&ca);
        let port = match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => panic!("bind: {e}"),
        };
        let heads = dir.join("heads.log");
        let mut child = match Command::new("python3")
            .arg("-c")
            .arg(PROXY)
            .arg(port.to_string())
            .arg(upstream)
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&heads)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("python3: {e}"),
        };
        let mut ready = [0u8; 5];
        if let Some(out) = child.stdout.as_mut() {
            let _ = out.read_exact(&mut ready);
        }
        assert_eq!(&ready, b"ready", "the TLS proxy did not start");
        TlsFront {
            child,
            addr: format!("127.0.0.1:{port}"),
            ca_b64,
            heads,
            _dir: tmp,
        }
    }
}

/// Standard base64 (the tests have no base64 crate).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_standard() {
    assert_eq!(base64(b"hello"), "aGVsbG8=");
    assert_eq!(base64(b"hi"), "aGk=");
    assert_eq!(base64(b"abc"), "YWJj");
}

#[test]
fn a_gke_cluster_is_reached_with_the_execution_service_accounts_token_over_tls() {
    use wiremock::matchers::{bearer_token, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let cd = CloudDeploy::start();
    let front = TlsFront::start(cd.cluster.emu.url().trim_start_matches("http://"));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    const TOKEN: &str = "ya29.test-access-token-0123456789";
    let (metadata, gke) = rt.block_on(async {
        let metadata = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(
                "/computeMetadata/v1/instance/service-accounts/default/token",
            ))
            .and(header("Metadata-Flavor", "Google"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"
            })))
            .mount(&metadata)
            .await;
        let gke = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(
                "/v1/projects/acme-shop/locations/europe-west1/clusters/prod",
            ))
            .and(bearer_token(TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "name": "prod",
                "endpoint": front.addr,
                "masterAuth": {"clusterCaCertificate": front.ca_b64},
            })))
            .mount(&gke)
            .await;
        (metadata, gke)
    });
    cd.render("podinfo:1", "g/render");
    let cluster = "projects/acme-shop/locations/europe-west1/clusters/prod";
    let manifest = "gs://pipeline-artifacts/g/render/manifest.yaml";
    let metadata_host = metadata.address().to_string();
    let gke_uri = gke.uri();
    let o = cd.run(
        "DEPLOY",
        "g/stable",
        &[
            ("CLOUD_DEPLOY_MANIFEST_GCS_PATH", manifest),
            ("CLOUD_DEPLOY_PHASE", "stable"),
            // No kubeconfig: the cluster is GKE's.
            ("CLOUD_DEPLOY_customTarget_kubeconfig", ""),
            ("CLOUD_DEPLOY_customTarget_gkeCluster", cluster),
            ("CLOUD_DEPLOY_customTarget_namespace", "test"),
            ("GCE_METADATA_HOST", metadata_host.as_str()),
            ("AVIARY_GKE_API", gke_uri.as_str()),
            ("RUST_LOG", "debug"),
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = cd.results("g/stable");
    assert_eq!(r["resultStatus"], "SUCCEEDED", "{r}");
    assert_eq!(primary_image(&cd), "podinfo:1");
    // Through the TLS front, with the metadata server's token as bearer.
    let heads = crate::util::read(&front.heads);
    assert!(
        heads.to_ascii_lowercase().contains(&format!(
            "authorization: bearer {}",
            TOKEN.to_ascii_lowercase()
        )),
        "{heads}"
    );
    assert!(
        !stderr(&o).contains(TOKEN) && !crate::util::stdout(&o).contains(TOKEN),
        "the token was logged"
    );

    // A CA that is not the cluster's: refused (TLS is verified), FAILED.
    let other = TlsFront::start(cd.cluster.emu.url().trim_start_matches("http://"));
    rt.block_on(async {
        gke.reset().await;
        Mock::given(method("GET"))
            .and(path(
                "/v1/projects/acme-shop/locations/europe-west1/clusters/prod",
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "endpoint": front.addr,
                "masterAuth": {"clusterCaCertificate": other.ca_b64},
            })))
            .mount(&gke)
            .await;
    });
    let started = Instant::now();
    let o = cd.run(
        "DEPLOY",
        "g/wrong-ca",
        &[
            ("CLOUD_DEPLOY_MANIFEST_GCS_PATH", manifest),
            ("CLOUD_DEPLOY_PHASE", "stable"),
            ("CLOUD_DEPLOY_customTarget_kubeconfig", ""),
            ("CLOUD_DEPLOY_customTarget_gkeCluster", cluster),
            ("GCE_METADATA_HOST", metadata_host.as_str()),
            ("AVIARY_GKE_API", gke_uri.as_str()),
        ],
    );
    assert_ne!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(cd.results("g/wrong-ca")["resultStatus"], "FAILED");
    assert!(started.elapsed() < Duration::from_secs(90));

    // A bad cluster name is bad input, named as the parameter.
    let o = cd.run(
        "DEPLOY",
        "g/bad-name",
        &[
            ("CLOUD_DEPLOY_MANIFEST_GCS_PATH", manifest),
            ("CLOUD_DEPLOY_customTarget_kubeconfig", ""),
            ("CLOUD_DEPLOY_customTarget_gkeCluster", "prod"),
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    cd.assert_failed("g/bad-name", "customTarget/gkeCluster");
    drop(other);
    let _ = std::io::stderr().flush();
}
