//! A Workload API client over the unix socket, for `ward agent api …`, the
//! benchmarks and tests. It always sends the `workload.spiffe.io` header.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use crate::proto::{X509svidRequest, X509svidResponse};

/// Connects to the Workload API at `socket`.
pub async fn connect(socket: &Path) -> Result<SpiffeWorkloadApiClient<Channel>, String> {
    let path: PathBuf = socket.to_owned();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the Workload API at {}: {e}",
                socket.display()
            )
        })?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// Wraps a message in a request with the security header.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    req
}

/// One FetchX509SVID as a one-shot client does it: open the stream, read
/// the first message, drop the stream. `None` if the agent closed it empty.
pub async fn fetch_x509_once(
    client: &mut SpiffeWorkloadApiClient<Channel>,
) -> Result<Option<X509svidResponse>, tonic::Status> {
    let mut stream = client
        .fetch_x509svid(request(X509svidRequest {}))
        .await?
        .into_inner();
    stream.message().await
}
