//! GKE cluster access for Cloud Deploy's deploy action, the way Google's custom target samples
//! reach a cluster: the deploy parameter `customTarget/gkeCluster`
//! (`projects/P/locations/L/clusters/C`) names the cluster, its endpoint and CA come from the GKE
//! API, and the bearer token is the execution service account's, from the metadata server Cloud
//! Build provides. No kubeconfig is stored anywhere.
//!
//! - Token: `GET http://<GCE_METADATA_HOST or metadata.google.internal>/computeMetadata/v1/
//!   instance/service-accounts/default/token` with `Metadata-Flavor: Google` → `access_token`,
//!   `expires_in`. `GCE_METADATA_HOST` is the standard override of Google's client libraries.
//! - Cluster: `GET <AVIARY_GKE_API or https://container.googleapis.com>/v1/projects/P/locations/L/
//!   clusters/C` with that token → `endpoint`, `masterAuth.clusterCaCertificate` (base64 PEM).
//!
//! Every call has a whole-request deadline ([`DEFAULT_TIMEOUT`], `AVIARY_GKE_TIMEOUT`) and reads
//! at most a capped body. The kube client then talks to `https://<endpoint>`, verifying the
//! server against that CA only, with the token as bearer. The token lives in an in-memory file
//! ([`SecretFile`]) that the kubeconfig names as `tokenFile` (the kube client re-reads it every
//! minute); a background thread fetches a new token before the old one expires and swaps it in
//! atomically. The token is never logged, and no error message carries it.

use std::sync::mpsc;
use std::time::Duration;

use reqwest_object_store as reqwest;
use serde::Deserialize;

use crate::cloud_deploy::SecretFile;
use crate::Env;

/// Where the metadata server is when `GCE_METADATA_HOST` does not say.
pub const METADATA_HOST: &str = "metadata.google.internal";
/// The GKE API when `AVIARY_GKE_API` does not say.
pub const GKE_API: &str = "https://container.googleapis.com";
/// Each call to the metadata server or the GKE API (`AVIARY_GKE_TIMEOUT` overrides it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest token answer read (a token is ~2 KB).
pub const TOKEN_MAX: usize = 64 * 1024;
/// The largest cluster object read (tens of KB with every node pool).
pub const CLUSTER_MAX: usize = 4 * 1024 * 1024;
/// How much of a failing answer a message shows.
const EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum GkeError {
    /// `customTarget/gkeCluster` is not a cluster's resource name (bad input).
    #[error("customTarget/gkeCluster: {value:?} is not projects/PROJECT/locations/LOCATION/clusters/CLUSTER")]
    BadName { value: String },
    /// A call failed or answered something unusable (the machine's, not the input's).
    #[error("{what}: {why}")]
    Call { what: String, why: String },
}

impl GkeError {
    /// Whether the input is at fault (exit 2) rather than the network or the API (exit 3).
    pub fn is_input(&self) -> bool {
        matches!(self, GkeError::BadName { .. })
    }
}

/// A cluster's resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName {
    pub project: String,
    pub location: String,
    pub cluster: String,
}

impl ClusterName {
    pub fn parse(value: &str) -> Result<ClusterName, GkeError> {
        let bad = || GkeError::BadName {
            value: value.to_string(),
        };
        let parts: Vec<&str> = value.trim().trim_matches('/').split('/').collect();
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        };
        match parts.as_slice() {
            ["projects", p, "locations", l, "clusters", c] if ok(p) && ok(l) && ok(c) => {
                Ok(ClusterName {
                    project: p.to_string(),
                    location: l.to_string(),
                    cluster: c.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "projects/{}/locations/{}/clusters/{}",
            self.project, self.location, self.cluster
        )
    }
}

/// Where the metadata server and the GKE API are, and how long a call may take: read once from
/// the step's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `host[:port]` of the metadata server (plain HTTP, as on every Google runtime).
    pub metadata_host: String,
    /// The GKE API's base URL.
    pub api: String,
    pub timeout: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Settings {
        let set = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Settings {
            metadata_host: set("GCE_METADATA_HOST").unwrap_or_else(|| METADATA_HOST.into()),
            api: set("AVIARY_GKE_API")
                .unwrap_or_else(|| GKE_API.into())
                .trim_end_matches('/')
                .to_string(),
            timeout: aviary_kube::http::timeout_from(
                "AVIARY_GKE_TIMEOUT",
                env("AVIARY_GKE_TIMEOUT"),
                DEFAULT_TIMEOUT,
            ),
        }
    }

    fn token_url(&self) -> String {
        format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
            self.metadata_host.trim_end_matches('/')
        )
    }

    fn cluster_url(&self, name: &ClusterName) -> String {
        format!("{}/v1/{name}", self.api)
    }
}

/// An access token. `Debug` never shows it.
#[derive(Clone, Deserialize)]
pub struct Token {
    pub access_token: String,
    /// Seconds it is still valid.
    #[serde(default)]
    pub expires_in: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What the kube client needs of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host (an IP, or a DNS name) of the control plane.
    pub host: String,
    /// The cluster CA, base64 PEM, as the GKE API gives it (and a kubeconfig takes it).
    pub ca: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterObject {
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    master_auth: MasterAuth,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MasterAuth {
    #[serde(default)]
    cluster_ca_certificate: String,
}

fn client() -> Result<reqwest::Client, GkeError> {
    aviary_kube::http::client_builder()
        .build()
        .map_err(|e| GkeError::Call {
            what: "GKE access".into(),
            why: aviary_kube::http::describe(&e),
        })
}

/// One GET within `timeout`, its body read up to `cap`: the body of a 2xx answer, else an error
/// with the status and the start of the answer.
async fn get(
    request: reqwest::RequestBuilder,
    what: &str,
    timeout: Duration,
    cap: usize,
) -> Result<Vec<u8>, GkeError> {
    let call = |why: String| GkeError::Call {
        what: what.to_string(),
        why,
    };
    let run = async {
        let response = request
            .send()
            .await
            .map_err(|e| call(aviary_kube::http::describe(&e)))?;
        let status = response.status();
        let body = aviary_kube::http::body_stream(response);
        if !status.is_success() {
            let excerpt = aviary_kube::http::read_at_most(body, 4096)
                .await
                .map(|x| x.text(EXCERPT))
                .unwrap_or_default();
            return Err(call(format!("answered {status}: {excerpt}")));
        }
        aviary_kube::http::read_capped(body, cap)
            .await
            .map_err(|e| match e {
                aviary_kube::http::CappedError::TooLarge { cap } => call(format!(
                    "the answer is larger than {} (aviary reads at most that of it)",
                    aviary_kube::http::size(cap)
                )),
                aviary_kube::http::CappedError::Read(e) => call(aviary_kube::http::describe(&e)),
            })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(call(format!(
            "no answer within {}; set AVIARY_GKE_TIMEOUT for a longer limit",
            aviary_core::spec::duration::format_human(timeout)
        ))),
    }
}

/// The default service account's access token, from the metadata server.
pub async fn token(settings: &Settings) -> Result<Token, GkeError> {
    let what = format!(
        "the access token from the metadata server ({})",
        settings.metadata_host
    );
    let client = client()?;
    let request = client
        .get(settings.token_url())
        .header("Metadata-Flavor", "Google");
    let body = get(request, &what, settings.timeout, TOKEN_MAX).await?;
    let token: Token = serde_json::from_slice(&body).map_err(|e| GkeError::Call {
        what: what.clone(),
        why: format!("not a token answer: {e}"),
    })?;
    let usable = !token.access_token.is_empty()
        && token
            .access_token
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"');
    if !usable {
        return Err(GkeError::Call {
            what,
            why: "the answer has no usable access_token".into(),
        });
    }
    Ok(token)
}

/// The endpoint and CA of `name`, from the GKE API.
pub async fn endpoint(
    settings: &Settings,
    name: &ClusterName,
    token: &Token,
) -> Result<Endpoint, GkeError> {
    let what = format!("GKE cluster {name}");
    let client = client()?;
    let request = client
        .get(settings.cluster_url(name))
        .bearer_auth(&token.access_token);
    let body = get(request, &what, settings.timeout, CLUSTER_MAX).await?;
    let cluster: ClusterObject = serde_json::from_slice(&body).map_err(|e| GkeError::Call {
        what: what.clone(),
        why: format!("not a cluster object: {e}"),
    })?;
    let host = cluster.endpoint.trim().to_string();
    // A host name, an IPv4 address or a bracketed IPv6 one, with an optional port: nothing that
    // would change the URL's meaning.
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !host_ok {
        return Err(GkeError::Call {
            what,
            why: format!("the cluster has no usable endpoint ({host:?})"),
        });
    }
    let ca = cluster
        .master_auth
        .cluster_ca_certificate
        .trim()
        .to_string();
    let ca_ok = !ca.is_empty()
        && ca
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    if !ca_ok {
        return Err(GkeError::Call {
            what,
            why: "the cluster has no masterAuth.clusterCaCertificate (base64 PEM)".into(),
        });
    }
    Ok(Endpoint { host, ca })
}

/// The kubeconfig of `endpoint`: the server `https://<host>` verified against the cluster CA, the
/// bearer token read from `token_file`, and `namespace` as the context's namespace.
pub fn kubeconfig(endpoint: &Endpoint, token_file: &str, namespace: Option<&str>) -> String {
    let mut context = serde_json::json!({"cluster": "gke", "user": "gke"});
    if let Some(ns) = namespace {
        context["namespace"] = serde_json::Value::String(ns.to_string());
    }
    // JSON is YAML: the kube client reads it as a kubeconfig.
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gke", "cluster": {
            "server": format!("https://{}", endpoint.host),
            "certificate-authority-data": endpoint.ca,
        }}],
        "users": [{"name": "gke", "user": {"tokenFile": token_file}}],
        "contexts": [{"name": "gke", "context": context}],
        "current-context": "gke",
    })
    .to_string()
}

/// When to fetch the next token: four minutes before this one expires (the metadata server
/// hands out a new one in its last five), at least 30 s from now.
fn refresh_after(token: &Token) -> Duration {
    Duration::from_secs(token.expires_in.saturating_sub(240).max(30))
}

/// Access to a GKE cluster for the life of the value: the kubeconfig to connect with, and the
/// token it names kept fresh. Dropping it stops the refresh and frees both files.
pub struct GkeAccess {
    /// The kubeconfig (an in-memory file) naming the cluster, its CA and the token file.
    pub kubeconfig: SecretFile,
    pub cluster: ClusterName,
    pub host: String,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
    // Declared last: dropped after the refresher stopped.
    _token: std::sync::Arc<SecretFile>,
}

impl GkeAccess {
    /// Reads the token and the cluster, and writes the kubeconfig.
    pub fn connect(
        rt: &tokio::runtime::Runtime,
        settings: &Settings,
        name: &ClusterName,
        namespace: Option<&str>,
    ) -> Result<GkeAccess, GkeError> {
        let token = rt.block_on(self::token(settings))?;
        let endpoint = rt.block_on(self::endpoint(settings, name, &token))?;
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| GkeError::Call {
                what,
                why: e.to_string(),
            }
        };
        let token_file = std::sync::Arc::new(
            SecretFile::new("gke-token", token.access_token.as_bytes())
                .map_err(io("the token file"))?,
        );
        let text = kubeconfig(&endpoint, &token_file.path.to_string_lossy(), namespace);
        let kubeconfig =
            SecretFile::new("kubeconfig", text.as_bytes()).map_err(io("the kubeconfig"))?;
        tracing::info!(
            "GKE cluster {name}: https://{} (token of the execution service account, valid {}s)",
            endpoint.host,
            token.expires_in
        );
        let (stop, stopped) = mpsc::channel::<()>();
        let refresher = {
            let settings = settings.clone();
            let file = token_file.clone();
            let first = refresh_after(&token);
            std::thread::Builder::new()
                .name("gke-token".into())
                .spawn(move || refresh(settings, file, first, stopped))
                .map_err(io("the token refresh"))?
        };
        Ok(GkeAccess {
            kubeconfig,
            cluster: name.clone(),
            host: endpoint.host,
            stop: Some(stop),
            refresher: Some(refresher),
            _token: token_file,
        })
    }
}

impl Drop for GkeAccess {
    fn drop(&mut self) {
        // Closing the channel wakes the refresher, which returns.
        drop(self.stop.take());
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
    }
}

/// Keeps `file` holding a valid token until `stopped` closes.
fn refresh(
    settings: Settings,
    file: std::sync::Arc<SecretFile>,
    mut wait: Duration,
    stopped: mpsc::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("the GKE token will not be refreshed: {e}");
            return;
        }
    };
    loop {
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Stopped (or its owner is gone).
            _ => return,
        }
        wait = match rt.block_on(token(&settings)) {
            Ok(t) => match file.replace(t.access_token.as_bytes()) {
                Ok(()) => {
                    tracing::debug!("GKE token refreshed (valid {}s)", t.expires_in);
                    refresh_after(&t)
                }
                Err(e) => {
                    tracing::warn!("could not store the refreshed GKE token: {e}");
                    Duration::from_secs(30)
                }
            },
            Err(e) => {
                tracing::warn!("could not refresh the GKE token: {e}; trying again in 30s");
                Duration::from_secs(30)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{bearer_token, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[test]
    fn cluster_names_are_resource_names() {
        let n = ClusterName::parse("projects/acme/locations/europe-west1/clusters/prod");
        assert_eq!(
            n.as_ref().map(|n| n.to_string()).ok().as_deref(),
            Some("projects/acme/locations/europe-west1/clusters/prod")
        );
        for bad in [
            "prod",
            "projects/acme/zones/europe-west1-b/clusters/prod",
            "projects/acme/locations/europe-west1/clusters/",
            "projects/acme/locations/europe-west1/clusters/prod/nodePools/x",
            "projects/a?b/locations/l/clusters/c",
        ] {
            let e = ClusterName::parse(bad);
            assert!(
                matches!(&e, Err(e) if e.is_input() && e.to_string().contains("customTarget/gkeCluster")),
                "{bad}: {e:?}"
            );
        }
    }

    fn settings(server: &MockServer) -> Settings {
        let (host, uri) = (server.address().to_string(), server.uri());
        let env = move |k: &str| match k {
            "GCE_METADATA_HOST" => Some(host.clone()),
            "AVIARY_GKE_API" => Some(format!("{uri}/")),
            "AVIARY_GKE_TIMEOUT" => Some("2s".to_string()),
            _ => None,
        };
        Settings::from_env(&env)
    }

    #[tokio::test]
    async fn the_token_and_the_cluster_come_from_their_apis() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(
                "/computeMetadata/v1/instance/service-accounts/default/token",
            ))
            .and(header("Metadata-Flavor", "Google"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "ya29.s3cr3t", "expires_in": 3599, "token_type": "Bearer"
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/projects/acme/locations/eu/clusters/prod"))
            .and(bearer_token("ya29.s3cr3t"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "name": "prod", "endpoint": "10.1.2.3",
                "masterAuth": {"clusterCaCertificate": "LS0tLS1CRUdJTg=="}
            })))
            .mount(&server)
            .await;
        let s = settings(&server);
        assert_eq!(s.timeout, Duration::from_secs(2));
        let token = match token(&s).await {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(token.expires_in, 3599);
        assert!(!format!("{token:?}").contains("s3cr3t"));
        let name = match ClusterName::parse("projects/acme/locations/eu/clusters/prod") {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let ep = endpoint(&s, &name, &token).await;
        assert_eq!(
            ep.ok(),
            Some(Endpoint {
                host: "10.1.2.3".into(),
                ca: "LS0tLS1CRUdJTg==".into()
            })
        );
        let kc = kubeconfig(
            &Endpoint {
                host: "10.1.2.3".into(),
                ca: "LS0t".into(),
            },
            "/proc/self/fd/7",
            Some("shop"),
        );
        let v: serde_json::Value = serde_json::from_str(&kc).unwrap_or_default();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://10.1.2.3");
        assert_eq!(v["users"][0]["user"]["tokenFile"], "/proc/self/fd/7");
        assert_eq!(v["contexts"][0]["context"]["namespace"], "shop");
    }

    #[tokio::test]
    async fn failures_are_bounded_and_never_show_the_token() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(
                "/computeMetadata/v1/instance/service-accounts/default/token",
            ))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"access_token": "ya29.s3cr3t"}))
                    .set_delay(Duration::from_secs(10)),
            )
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/projects/acme/locations/eu/clusters/prod"))
            .respond_with(ResponseTemplate::new(403).set_body_string(
                "{\"error\": {\"message\": \"Permission denied on container.clusters.get\"}}",
            ))
            .mount(&server)
            .await;
        let s = settings(&server);
        let started = std::time::Instant::now();
        let e = token(&s).await;
        assert!(
            matches!(&e, Err(GkeError::Call { why, .. }) if why.contains("no answer within")),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let name = ClusterName {
            project: "acme".into(),
            location: "eu".into(),
            cluster: "prod".into(),
        };
        let token = Token {
            access_token: "ya29.s3cr3t".into(),
            expires_in: 100,
        };
        let e = match endpoint(&s, &name, &token).await {
            Err(e) => e.to_string(),
            Ok(ep) => panic!("{ep:?}"),
        };
        assert!(
            e.contains("403") && e.contains("container.clusters.get"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn the_refresher_swaps_a_new_token_into_the_same_file_and_stops_when_told() {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => panic!("{e}"),
        };
        let server = rt.block_on(async {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path(
                    "/computeMetadata/v1/instance/service-accounts/default/token",
                ))
                .respond_with(ResponseTemplate::new(200).set_body_json(
                    serde_json::json!({"access_token": "ya29.second", "expires_in": 3599}),
                ))
                .mount(&server)
                .await;
            server
        });
        let file = match SecretFile::new("gke-token", b"ya29.first") {
            Ok(f) => std::sync::Arc::new(f),
            Err(e) => panic!("{e}"),
        };
        let (stop, stopped) = mpsc::channel();
        let (s, f) = (settings(&server), file.clone());
        let handle = std::thread::spawn(move || refresh(s, f, Duration::from_millis(10), stopped));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read(&file.path).ok().as_deref() != Some(&b"ya29.second"[..]) {
            assert!(std::time::Instant::now() < deadline, "not refreshed");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stop);
        assert!(handle.join().is_ok());
    }

    #[test]
    fn the_next_token_is_fetched_before_this_one_expires() {
        let t = |expires_in| Token {
            access_token: String::new(),
            expires_in,
        };
        assert_eq!(refresh_after(&t(3599)), Duration::from_secs(3359));
        assert_eq!(refresh_after(&t(250)), Duration::from_secs(30));
        assert_eq!(refresh_after(&t(0)), Duration::from_secs(30));
    }
}
