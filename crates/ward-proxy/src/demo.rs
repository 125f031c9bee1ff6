//! `ward demo-app`: a small HTTP service (HTTP/1.1 and h2c) for demos and
//! tests. It answers JSON naming itself, the method, the path and the
//! caller identity its proxy verified (from `x-forwarded-client-cert`).
//! `GET /call/<name>/<path>` makes it call another service through the
//! outbound listener configured for `<name>` and include the answer.
//! `GET /vault[?secret=PATH]` (with [`VaultDemo`] set) makes it log in to
//! the vault with its own JWT-SVID from the Workload API and read its
//! secret and a dynamic database credential, answering what it got but
//! never a value.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The verified caller in an `x-forwarded-client-cert` value (`URI=`).
pub fn caller_from_xfcc(value: &str) -> Option<&str> {
    value
        .split(';')
        .find_map(|kv| kv.trim().strip_prefix("URI="))
}

struct App {
    name: String,
    calls: BTreeMap<String, String>,
    client: Client<HttpConnector, Empty<Bytes>>,
    vault: Option<(VaultDemo, reqwest::Client)>,
}

/// Where the demo app finds the vault and its own identity.
#[derive(Debug, Clone)]
pub struct VaultDemo {
    /// The server, `https://HOST:PORT`.
    pub addr: String,
    /// The CA of the server's HTTPS certificate (PEM).
    pub cacert_pem: Vec<u8>,
    /// The Workload API socket (`unix:/path`).
    pub socket: String,
    /// The JWT-SVID audience the vault accepts.
    pub audience: String,
    /// The KV path (below `secret/`) the service reads.
    pub secret: String,
    /// A database role to get a credential from.
    pub db_role: Option<String>,
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The claims of a JWT, read without checking (the sidecar checked it).
fn token_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl App {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let caller = req
            .headers()
            .get("x-forwarded-client-cert")
            .and_then(|v| v.to_str().ok())
            .and_then(caller_from_xfcc)
            .map(str::to_owned);
        // The internal token, as the sidecar checked it and passed it on
        // (only the sidecar can set this header): the user behind the call.
        let token = req
            .headers()
            .get("x-ward-internal-token")
            .and_then(|v| v.to_str().ok())
            .and_then(token_claims);
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        if path == "/vault" {
            let secret = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("secret=")))
                .map(str::to_owned);
            return Ok(self.vault(secret).await);
        }
        if let Some(rest) = path.strip_prefix("/call/") {
            let (target, rest) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(self.call(target, rest, caller).await);
        }
        // Read (and count) the body, so uploads stream through the proxy.
        let mut body = req.into_body();
        let mut bytes = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "service": self.name,
                "method": method,
                "path": path,
                "caller": caller,
                "token": token,
                "body_bytes": bytes,
            }),
        ))
    }

    /// Logs in with this process's JWT-SVID and reads from the vault.
    async fn vault(&self, secret: Option<String>) -> Response<Full<Bytes>> {
        let Some((cfg, http)) = &self.vault else {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"service": self.name, "error": "no vault configured (--vault-addr)"}),
            );
        };
        let asked = secret.is_some();
        let path = secret.unwrap_or_else(|| cfg.secret.clone());
        // Only a plain KV path: the app's own token must not be pointed at
        // another API path through dot segments or encodings.
        let plain = !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            && path
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !plain {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"service": self.name, "error": "secret must be a plain KV path (letters, digits, -_./, no dot segments)"}),
            );
        }
        let answer = async {
            let client = spiffe::WorkloadApiClient::connect_to(&cfg.socket)
                .await
                .map_err(|e| format!("Workload API: {e}"))?;
            let jwt = client
                .fetch_jwt_token([cfg.audience.as_str()], None)
                .await
                .map_err(|e| format!("no JWT-SVID from the Workload API: {e}"))?;
            let login: serde_json::Value = http
                .post(format!("{}/v1/auth/jwt/login", cfg.addr))
                .json(&serde_json::json!({"role": "demo", "jwt": jwt}))
                .send()
                .await
                .map_err(|e| format!("login: {e}"))?
                .json()
                .await
                .map_err(|e| format!("login: {e}"))?;
            let token = login["auth"]["client_token"]
                .as_str()
                .ok_or_else(|| format!("login refused: {}", login["errors"]))?
                .to_owned();
            let me = login["auth"]["metadata"]["spiffe_id"].clone();
            let get = |p: String| {
                let token = token.clone();
                async move {
                    let r = http
                        .get(format!("{}/v1/{p}", cfg.addr))
                        .header("X-Vault-Token", token)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    Ok::<_, String>((status, body))
                }
            };
            let (status, body) = get(format!("secret/data/{path}")).await?;
            // What was read, never the values themselves.
            let kv = if status == 200 {
                let keys: Vec<&String> = body["data"]["data"]
                    .as_object()
                    .map(|m| m.keys().collect())
                    .unwrap_or_default();
                serde_json::json!({"path": path, "status": status, "version": body["data"]["metadata"]["version"], "keys": keys})
            } else {
                serde_json::json!({"path": path, "status": status, "error": body["errors"]})
            };
            let db = match (&cfg.db_role, asked) {
                (Some(role), false) => {
                    let (status, body) = get(format!("database/creds/{role}")).await?;
                    if status == 200 {
                        serde_json::json!({"role": role, "status": status, "username": body["data"]["username"], "lease_id": body["lease_id"], "lease_duration": body["lease_duration"]})
                    } else {
                        serde_json::json!({"role": role, "status": status, "error": body["errors"]})
                    }
                }
                _ => serde_json::Value::Null,
            };
            Ok::<_, String>(serde_json::json!({"service": self.name, "spiffe_id": me, "secret": kv, "database": db}))
        }
        .await;
        match answer {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => json(
                StatusCode::BAD_GATEWAY,
                &serde_json::json!({"service": self.name, "error": e}),
            ),
        }
    }

    async fn call(
        &self,
        target: &str,
        rest: &str,
        caller: Option<String>,
    ) -> Response<Full<Bytes>> {
        let Some(base) = self.calls.get(target) else {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"service": self.name, "error": format!("no --call {target}=URL configured")}),
            );
        };
        let url = format!("{}/{rest}", base.trim_end_matches('/'));
        let answer = async {
            let uri: http::Uri = url
                .parse()
                .map_err(|e: http::uri::InvalidUri| e.to_string())?;
            let resp = tokio::time::timeout(Duration::from_secs(10), self.client.get(uri))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let body = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).trim().to_string())
            });
            Ok::<_, String>((status, body))
        }
        .await;
        let v = match answer {
            Ok((status, body)) => serde_json::json!({
                "service": self.name, "caller": caller, "called": target, "status": status, "response": body,
            }),
            Err(e) => serde_json::json!({"service": self.name, "called": target, "error": e}),
        };
        json(StatusCode::OK, &v)
    }
}

/// Serves until `shutdown` resolves; returns once listening has stopped.
pub async fn run(
    listener: TcpListener,
    name: String,
    calls: BTreeMap<String, String>,
    vault: Option<VaultDemo>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let vault = vault.and_then(|v| {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(vault_tls(&v.cacert_pem)?)
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        Some((v, http))
    });
    let app = Arc::new(App {
        name,
        calls,
        client: Client::builder(TokioExecutor::new()).build_http(),
        vault,
    });
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let (tcp, _): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let (app, builder) = (app.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| app.clone().handle(req));
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// rustls trusting only the server's CA (reqwest is built without a
/// default crypto provider, so its TLS is configured here).
fn vault_tls(ca_pem: &[u8]) -> Option<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Some(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_caller_is_read_from_xfcc() {
        assert_eq!(
            super::caller_from_xfcc("By=spiffe://td/b;Hash=ab;URI=spiffe://td/a"),
            Some("spiffe://td/a")
        );
        assert_eq!(super::caller_from_xfcc("By=x"), None);
    }
}
