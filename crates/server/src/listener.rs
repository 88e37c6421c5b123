//! Accepting connections and serving HTTP/1.1 on them.
//!
//! Each connection gets TCP_NODELAY and a header read timeout. A plain-HTTP port that receives a TLS
//! ClientHello answers `400 Bad Request` in plain HTTP instead of dropping the connection: that answer
//! is what makes the docker CLI fall back from HTTPS to HTTP for an insecure registry.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new connection may stay silent before its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long in-flight requests may run on after a shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const TLS_ON_PLAIN_PORT: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 48\r\n\r\nClient sent an HTTPS request to an HTTP server.\n";

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight connections.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Some(stream) = starts_with_http(stream).await else { return };
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
                b
            };
            let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after the drain timeout"),
    }
}

/// Waits for the first byte; answers a TLS handshake with a plain 400 and returns `None` for it (and
/// for a connection that closes or stays silent).
async fn starts_with_http(mut stream: TcpStream) -> Option<TcpStream> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {
            if stream.write_all(TLS_ON_PLAIN_PORT).await.is_ok() && stream.shutdown().await.is_ok() {
                // Read what the client sent before closing: closing with unread bytes makes the kernel
                // send a reset, which can destroy the answer before the client reads it.
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            None
        }
        Ok(Ok(1)) => Some(stream),
        _ => None,
    }
}
