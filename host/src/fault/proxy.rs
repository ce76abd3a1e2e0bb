//! The fault-injecting TCP proxy that Umbra places in front of a shadow.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fault::active::{Published, PublishedRef};
use crate::fault::connection;
use crate::fault::error::ProxyError;
use crate::fault::ledger::{FaultLedger, ProxyRecord};
use crate::fault::spec::FaultSet;
use crate::fault::stats::{Counters, ProxyStats};

/// Time allowed to connect to the upstream server before the client is disconnected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP proxy on 127.0.0.1 that forwards to one upstream address and injects the
/// faults of its current [`FaultSet`].
///
/// Changing the set with [`FaultProxy::set_faults`] or [`FaultProxy::clear`] acts on open
/// connections as well as new ones. Dropping the proxy stops it and closes every
/// connection; so does the end of the process, which is why no fault can outlive Umbra.
pub struct FaultProxy {
    listen_addr: SocketAddr,
    upstream: SocketAddr,
    faults: Arc<watch::Sender<PublishedRef>>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    accept_task: Option<JoinHandle<()>>,
    record: Option<(FaultLedger, String)>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen_addr", &self.listen_addr)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a port of 127.0.0.1 that the OS chooses.
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy, ProxyError> {
        FaultProxy::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream).await
    }

    /// Starts a proxy to `upstream` on `listen`, for example to take over the port of a
    /// proxy that a crashed run left behind. `listen` must be a loopback address.
    pub async fn start_on(
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<FaultProxy, ProxyError> {
        if !listen.ip().is_loopback() {
            return Err(ProxyError::Bind(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{listen}` is not a loopback address"),
            )));
        }
        let listener = TcpListener::bind(listen).await.map_err(ProxyError::Bind)?;
        let listen_addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let (faults, receiver) = watch::channel(Arc::new(Published::default()));
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();

        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            receiver,
            counters.clone(),
            cancel.clone(),
        ));
        info!(%listen_addr, %upstream, "fault proxy started");
        Ok(FaultProxy {
            listen_addr,
            upstream,
            faults: Arc::new(faults),
            counters,
            cancel,
            accept_task: Some(accept_task),
            record: None,
        })
    }

    /// Starts a proxy like [`FaultProxy::start`] and records it in `ledger` under `name`
    /// (such as the shadow's id) until it is shut down, so that the next start can report
    /// what a crash left behind.
    pub async fn start_recorded(
        ledger: &FaultLedger,
        name: &str,
        upstream: SocketAddr,
    ) -> Result<FaultProxy, ProxyError> {
        let mut proxy = FaultProxy::start(upstream).await?;
        ledger.record_proxy(
            name,
            &ProxyRecord {
                listen_addr: proxy.listen_addr,
                upstream,
            },
        )?;
        proxy.record = Some((ledger.clone(), name.to_owned()));
        Ok(proxy)
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The address the proxy forwards to.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// Replaces the faults in force. An invalid set is rejected and changes nothing.
    pub fn set_faults(&self, set: FaultSet) -> Result<(), ProxyError> {
        set.validate()?;
        let rules = set.rules.len();
        self.publish(set);
        info!(listen_addr = %self.listen_addr, rules, "fault set applied");
        Ok(())
    }

    /// Applies `set` for `duration`, then clears it unless the set was changed meanwhile.
    /// The timer is a task on the current Tokio runtime, so call this from within one. It
    /// ends with the proxy.
    pub fn set_faults_for(&self, set: FaultSet, duration: Duration) -> Result<(), ProxyError> {
        self.set_faults(set)?;
        let generation = self.faults.borrow().generation;
        let faults = Arc::downgrade(&self.faults);
        let cancel = self.cancel.clone();
        let listen_addr = self.listen_addr;
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(duration) => {
                    let Some(faults) = faults.upgrade() else { return };
                    if faults.borrow().generation == generation {
                        publish(&faults, FaultSet::default());
                        info!(%listen_addr, "fault set expired");
                    }
                }
            }
        });
        Ok(())
    }

    /// Removes every fault: open and new connections are forwarded unchanged.
    pub fn clear(&self) {
        self.publish(FaultSet::default());
        info!(listen_addr = %self.listen_addr, "fault set cleared");
    }

    /// The faults in force.
    pub fn faults(&self) -> FaultSet {
        self.faults.borrow().set.clone()
    }

    /// The proxy's counters.
    pub fn stats(&self) -> ProxyStats {
        self.counters.snapshot()
    }

    /// Stops accepting, closes every connection, waits for the accept loop and removes
    /// the proxy's ledger record.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        self.forget_record();
    }

    fn publish(&self, set: FaultSet) {
        publish(&self.faults, set);
    }

    fn forget_record(&mut self) {
        if let Some((ledger, name)) = self.record.take()
            && let Err(error) = ledger.forget_proxy(&name)
        {
            warn!(%name, error = &error as &dyn std::error::Error, "failed to remove proxy record");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.forget_record();
    }
}

fn publish(sender: &watch::Sender<PublishedRef>, set: FaultSet) {
    sender.send_modify(|published| {
        let generation = published.generation + 1;
        *published = Arc::new(Published {
            applied_at: Some(Instant::now()),
            set,
            generation,
        });
    });
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<PublishedRef>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of file descriptors or similar: back off instead of spinning.
                warn!(
                    error = &error as &dyn std::error::Error,
                    "fault proxy accept failed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        counters.connections_open.fetch_add(1, Ordering::Relaxed);

        let faults = faults.clone();
        let counters = counters.clone();
        let cancel = cancel.child_token();
        tokio::spawn(async move {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream));
            let upstream_stream = tokio::select! {
                _ = cancel.cancelled() => None,
                connected = connect => match connected {
                    Ok(Ok(stream)) => Some(stream),
                    Ok(Err(error)) => {
                        debug!(%upstream, error = &error as &dyn std::error::Error, "upstream connect failed");
                        None
                    }
                    Err(_) => None,
                },
            };
            match upstream_stream {
                Some(stream) => {
                    connection::run(client, stream, faults, counters.clone(), cancel).await;
                }
                None => {
                    counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            counters.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    info!(listen_addr = ?listener.local_addr().ok(), "fault proxy stopped");
}
