//! HTTP/1.1 server: the accept loop and the graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::routes::App;

/// Maximum time that open connections get to finish their requests after a shutdown
/// signal. It stays below two seconds so the whole shutdown, state file included, does.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Pause after a failed `accept`, such as when the process runs out of file descriptors,
/// so that a persistent failure does not spin a CPU or flood the log.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Serves connections from `listener` until `shutdown` completes, then stops accepting
/// and waits up to [`SHUTDOWN_GRACE`] for open connections to finish.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let http = http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                warn!(%error, "failed to accept a connection, retrying");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "failed to set TCP_NODELAY");
        }

        let app = Arc::clone(&app);
        let service = service_fn(move |request| {
            let app = Arc::clone(&app);
            async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Clients that reset or half-close their connection end up here, which is
                // routine under load, so it is not worth a warning.
                debug!(%peer, %error, "connection closed with an error");
            }
        });
    }

    drop(listener);
    info!("stopped accepting connections, waiting for open ones to finish");
    match tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await {
        Ok(()) => info!("all connections closed"),
        Err(_) => warn!(
            grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
            "open connections did not finish within the shutdown grace period, closing them"
        ),
    }
}
