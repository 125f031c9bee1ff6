//! `ward demo-app`: a small HTTP service (HTTP/1.1 and h2c) for demos and
//! tests. It answers JSON naming itself, the method, the path and the
//! caller identity its proxy verified (from `x-forwarded-client-cert`).
//! `GET /call/<name>/<path>` makes it call another service through the
//! outbound listener configured for `<name>` and include the answer.

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
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
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
                "body_bytes": bytes,
            }),
        ))
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
    shutdown: impl std::future::Future<Output = ()>,
) {
    let app = Arc::new(App {
        name,
        calls,
        client: Client::builder(TokioExecutor::new()).build_http(),
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
