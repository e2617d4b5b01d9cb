//! The cutover's read-only probes of the hub: `GET /health` on a given port (no token is
//! sent, so any responder may be asked), and the binary-runs check.
//!
//! `/health` is asked on the port the unit will use, not the one in `hub-instance.json`,
//! because detection must notice a hub answering on the cutover's port whatever wrote the
//! instance file. Authenticated calls (`GET /api/modules`) go through [`crate::client::Hub`],
//! which first proves the responder is this home's hub before the token leaves the process.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

use crate::api::wire::Health;

/// The largest `/health` body read.
const MAX_BODY: usize = 64 * 1024;

/// `GET /health` on `127.0.0.1:port`; `Some` only when a Parachute hub answered 200 with
/// the expected shape within `timeout`.
pub async fn health(port: u16, timeout: Duration) -> Option<Health> {
    let (status, body) = tokio::time::timeout(timeout, get(port, "/health")).await.ok()?.ok()?;
    if status != StatusCode::OK {
        return None;
    }
    serde_json::from_slice::<Health>(&body).ok().filter(|h| h.service == crate::model::names::HUB_SERVICE)
}

async fn get(port: u16, path: &str) -> Result<(StatusCode, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    }
    .await;
    driver.abort();
    result
}

/// Runs `<exec> --version` and returns its first output line, or why it failed.
pub async fn exec_version(exec: &Path, timeout: Duration) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(exec);
    cmd.arg("--version").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => return Err(format!("it did not finish within {timeout:?}")),
        Ok(Err(e)) => return Err(format!("it cannot be run: {e}")),
        Ok(Ok(o)) => o,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let first = super::legacy::sanitize(text.lines().next().unwrap_or("").trim());
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("it exited with {} ({})", out.status, super::legacy::sanitize(err.trim())));
    }
    if first.is_empty() {
        return Err("it printed no version".to_owned());
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_is_none_when_nothing_listens_or_a_non_hub_answers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(health(port, Duration::from_secs(1)).await.is_none());
        // A plain HTTP server that is not a hub.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ =
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}").await;
            }
        });
        assert!(health(port, Duration::from_secs(2)).await.is_none());
    }

    #[tokio::test]
    async fn exec_version_reports_missing_and_failing_binaries() {
        let e = exec_version(Path::new("/nonexistent/parachute"), Duration::from_secs(2)).await.unwrap_err();
        assert!(e.contains("cannot be run"), "{e}");
        let e = exec_version(Path::new("/bin/false"), Duration::from_secs(2)).await.unwrap_err();
        assert!(e.contains("exited"), "{e}");
    }
}
