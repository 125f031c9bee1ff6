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

/// Writes an SVID from the Workload API as `svid.pem`, `key.pem` (mode
/// 0600) and `bundle.pem` in `dir`.
pub fn write_svid_files(dir: &Path, svid: &crate::proto::X509svid) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pem = |der: &[u8]| -> String {
        ward_identity::ca::split_der_certs(der)
            .iter()
            .map(|d| ward_identity::ca::der_to_pem(d))
            .collect()
    };
    write_mode(
        &dir.join("svid.pem"),
        pem(&svid.x509_svid).as_bytes(),
        0o644,
    )?;
    write_mode(&dir.join("bundle.pem"), pem(&svid.bundle).as_bytes(), 0o644)?;
    write_mode(
        &dir.join("key.pem"),
        ward_identity::ca::pem_block("PRIVATE KEY", &svid.x509_svid_key).as_bytes(),
        0o600,
    )
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}
