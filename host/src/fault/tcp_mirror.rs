//! Plain-TCP mirroring proxy for request/response protocols whose messages are framed
//! by lines or by a length prefix.
//!
//! Each client connection gets its own connection to live, and bytes go both ways
//! unchanged, as soon as they arrive: the proxy never holds a request back to find
//! where it ends. After a chunk from the client is written to live, the proxy splits it
//! into requests ([`Framing`]) and offers each one to the connection's bounded queue
//! with `try_send`, so a full queue drops the copy (and counts it) instead of slowing
//! live. A shadow session per client connection writes the copies, in order, to its
//! own connection to the shadow, with at most `shadow_in_flight` unanswered, and reads
//! the shadow's responses, framed the same way, to count and discard them.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::fault::error::ProxyError;
use crate::fault::framing::{Frame, Splitter};
use crate::fault::mirror_config::{MirrorCounters, MirrorStats, ShadowTarget, TcpMirrorConfig};

/// Time allowed to connect to live or to the shadow.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of one read from a socket.
const CHUNK_BYTES: usize = 64 * 1024;

/// A copy of one request, waiting for the shadow session of its connection.
struct Copy {
    frame: Bytes,
    generation: u64,
}

struct Shared {
    live: SocketAddr,
    config: TcpMirrorConfig,
    counters: Arc<MirrorCounters>,
    target: Arc<ShadowTarget>,
}

/// A running plain-TCP mirroring proxy. Dropping it stops it and closes every
/// connection.
pub struct TcpMirrorProxy {
    listen_addr: SocketAddr,
    counters: Arc<MirrorCounters>,
    target: Arc<ShadowTarget>,
    cancel: CancellationToken,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TcpMirrorProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpMirrorProxy")
            .field("listen_addr", &self.listen_addr)
            .finish_non_exhaustive()
    }
}

impl TcpMirrorProxy {
    /// Starts a proxy on a port of 127.0.0.1 chosen by the OS that forwards to `live` and
    /// copies to `shadow`.
    pub async fn start(
        live: SocketAddr,
        shadow: SocketAddr,
        config: TcpMirrorConfig,
    ) -> Result<TcpMirrorProxy, ProxyError> {
        TcpMirrorProxy::start_on(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            live,
            Some(shadow),
            config,
        )
        .await
    }

    /// Starts a proxy on `listen` that forwards to `live` and copies to `shadow`; with
    /// `None`, copying starts paused.
    pub async fn start_on(
        listen: SocketAddr,
        live: SocketAddr,
        shadow: Option<SocketAddr>,
        config: TcpMirrorConfig,
    ) -> Result<TcpMirrorProxy, ProxyError> {
        config.validate().map_err(ProxyError::InvalidMirrorConfig)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| ProxyError::BindOn(listen, error))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|error| ProxyError::BindOn(listen, error))?;
        let counters = Arc::new(MirrorCounters::default());
        let target = Arc::new(ShadowTarget::new(shadow));
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            live,
            config,
            counters: counters.clone(),
            target: target.clone(),
        });
        let acceptor = tokio::spawn(accept_loop(listener, shared, cancel.clone()));
        info!(%listen_addr, %live, ?shadow, "TCP mirroring proxy started");
        Ok(TcpMirrorProxy {
            listen_addr,
            counters,
            target,
            cancel,
            acceptor: Some(acceptor),
        })
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The proxy's counters. `requests_total` counts framed requests from clients, and
    /// `live_errors_total` counts client connections that live refused.
    pub fn stats(&self) -> MirrorStats {
        self.counters.snapshot()
    }

    /// Sends copies of later requests to `shadow`, or pauses copying with `None`. Each
    /// connection's session closes its connection to the previous shadow and connects
    /// to the new one for its next copy.
    pub fn set_shadow(&self, shadow: Option<SocketAddr>) {
        self.target.set(shadow);
    }

    /// The address copies go to, `None` while copying is paused.
    pub fn shadow(&self) -> Option<SocketAddr> {
        self.target.get().1
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.acceptor.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TcpMirrorProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve(client, shared.clone(), cancel.clone()) => {}
            }
        });
    }
}

/// Relays one client connection to live and copies its requests.
async fn serve(client: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let _ = client.set_nodelay(true);
    let live = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.live)).await {
        Ok(Ok(live)) => live,
        _ => {
            MirrorCounters::add(&shared.counters.live_errors);
            return;
        }
    };
    let _ = live.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (live_read, live_write) = live.into_split();
    let (copies, queue) = mpsc::channel(shared.config.queue_capacity);
    let session = tokio::spawn(shadow_session(queue, shared.clone(), cancel.child_token()));
    let upstream = requests_to_live(client_read, live_write, copies, &shared);
    let downstream = responses_to_client(live_read, client_write);
    tokio::join!(upstream, downstream);
    // The session drains what is queued, bounded by the shadow timeout.
    let _ = session.await;
}

/// Forwards client bytes to live, then offers each complete request to the queue.
async fn requests_to_live(
    mut client: OwnedReadHalf,
    mut live: OwnedWriteHalf,
    copies: mpsc::Sender<Copy>,
    shared: &Shared,
) {
    let counters = &shared.counters;
    let mut splitter = Splitter::new(
        shared.config.framing,
        shared.config.max_frame_bytes as usize,
    );
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match client.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if live.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        splitter.push(&buffer[..n], |frame| {
            MirrorCounters::add(&counters.requests);
            let Frame::Whole(frame) = frame else {
                MirrorCounters::add(&counters.skipped);
                return;
            };
            let (generation, shadow) = shared.target.get();
            if shadow.is_none() {
                MirrorCounters::add(&counters.unrouted);
                return;
            }
            match copies.try_send(Copy { frame, generation }) {
                Ok(()) => {
                    MirrorCounters::add(&counters.depth);
                    MirrorCounters::add(&counters.queued);
                }
                Err(_) => MirrorCounters::add(&counters.dropped),
            }
        });
    }
    let _ = live.shutdown().await;
}

async fn responses_to_client(mut live: OwnedReadHalf, mut client: OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut live, &mut client).await;
    let _ = client.shutdown().await;
}

/// One connection to the shadow: its write half, and the reader that counts responses.
struct ShadowConnection {
    generation: u64,
    writer: OwnedWriteHalf,
    /// Send times of the requests not answered yet, oldest first.
    pending: Arc<Mutex<VecDeque<Instant>>>,
    /// One permit per request that may still be sent before an answer.
    slots: Arc<Semaphore>,
    reader: JoinHandle<()>,
}

impl ShadowConnection {
    async fn open(
        shadow: SocketAddr,
        generation: u64,
        shared: &Arc<Shared>,
    ) -> Option<ShadowConnection> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shadow)).await {
            Ok(Ok(stream)) => stream,
            _ => return None,
        };
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        let slots = Arc::new(Semaphore::new(shared.config.shadow_in_flight));
        let reader = tokio::spawn(read_responses(
            read,
            pending.clone(),
            slots.clone(),
            shared.clone(),
        ));
        Some(ShadowConnection {
            generation,
            writer,
            pending,
            slots,
            reader,
        })
    }

    fn unanswered(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Closes the connection; every request it has not answered is a shadow error.
    fn close(self, counters: &MirrorCounters) {
        self.reader.abort();
        let unanswered = lock(&self.pending).drain(..).count();
        MirrorCounters::add_n(&counters.shadow_errors, unanswered as u64);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends the copies of one client connection to the shadow, in order.
async fn shadow_session(
    mut queue: mpsc::Receiver<Copy>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let counters = &shared.counters;
    let timeout = Duration::from_millis(shared.config.shadow_timeout_ms);
    let mut connection: Option<ShadowConnection> = None;
    loop {
        let copy = tokio::select! {
            _ = cancel.cancelled() => None,
            copy = queue.recv() => copy,
        };
        let Some(copy) = copy else { break };
        counters.dequeued();
        let (generation, shadow) = shared.target.get();
        let Some(shadow) = shadow.filter(|_| generation == copy.generation) else {
            MirrorCounters::add(&counters.unrouted);
            continue;
        };
        // A connection to an earlier shadow, or one the reader gave up on, is replaced.
        if let Some(open) = connection.take() {
            if open.generation == generation && !open.reader.is_finished() {
                connection = Some(open);
            } else {
                open.close(counters);
            }
        }
        if connection.is_none() {
            connection = ShadowConnection::open(shadow, generation, &shared).await;
        }
        let Some(slots) = connection.as_ref().map(|open| open.slots.clone()) else {
            MirrorCounters::add(&counters.shadow_errors);
            continue;
        };
        // Wait for a free slot; a shadow that answers nothing within the timeout is
        // given up on, and the copy counts as an error.
        let slot = tokio::select! {
            _ = cancel.cancelled() => break,
            slot = tokio::time::timeout(timeout, slots.acquire_owned()) => slot,
        };
        let (Ok(Ok(slot)), Some(open)) = (slot, connection.as_mut()) else {
            MirrorCounters::add(&counters.shadow_errors);
            if let Some(open) = connection.take() {
                open.close(counters);
            }
            give_up_queued(&mut queue, counters);
            continue;
        };
        slot.forget();
        lock(&open.pending).push_back(Instant::now());
        let written = tokio::time::timeout(timeout, open.writer.write_all(&copy.frame)).await;
        if !matches!(written, Ok(Ok(()))) {
            debug!("a shadow connection failed while writing a copy");
            if let Some(open) = connection.take() {
                open.close(counters);
            }
            if written.is_err() {
                give_up_queued(&mut queue, counters);
            }
        }
    }
    // Let the shadow answer what it was sent, then close.
    if let Some(mut open) = connection {
        let _ = open.writer.shutdown().await;
        let deadline = Instant::now() + timeout;
        while open.unanswered() > 0 && !open.reader.is_finished() && Instant::now() < deadline {
            if cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        open.close(counters);
    }
}

/// Counts every copy waiting in `queue` as a shadow error and removes it. A shadow that
/// let one copy time out would make each waiting copy wait as long, so a session whose
/// client has gone would otherwise hold its queue for `queue_capacity` timeouts.
fn give_up_queued(queue: &mut mpsc::Receiver<Copy>, counters: &MirrorCounters) {
    while queue.try_recv().is_ok() {
        counters.dequeued();
        MirrorCounters::add(&counters.shadow_errors);
    }
}

/// Reads the shadow's responses, counts and discards them, and gives up on the
/// connection when the oldest request waits longer than the timeout. When it gives up,
/// or the shadow closes the connection, the unanswered requests are shadow errors.
async fn read_responses(
    shadow: OwnedReadHalf,
    pending: Arc<Mutex<VecDeque<Instant>>>,
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
) {
    count_responses(shadow, &pending, &slots, &shared).await;
    let unanswered = lock(&pending).drain(..).count();
    MirrorCounters::add_n(&shared.counters.shadow_errors, unanswered as u64);
}

async fn count_responses(
    mut shadow: OwnedReadHalf,
    pending: &Mutex<VecDeque<Instant>>,
    slots: &Semaphore,
    shared: &Shared,
) {
    let counters = &shared.counters;
    let timeout = Duration::from_millis(shared.config.shadow_timeout_ms);
    let check_every = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(250));
    // Responses are only counted, so an oversized one is as good as a whole one.
    let mut splitter = Splitter::new(shared.config.framing, 64 * 1024);
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = tokio::time::timeout(check_every, shadow.read(&mut buffer)).await;
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                let oldest = lock(pending).front().copied();
                if oldest.is_some_and(|sent| sent.elapsed() > timeout) {
                    debug!("the shadow did not answer in time; closing its connection");
                    return;
                }
                continue;
            }
        };
        splitter.push(&buffer[..n], |_| {
            // An answer to nothing sent (a protocol that answers twice) is ignored.
            if lock(pending).pop_front().is_some() {
                MirrorCounters::add(&counters.shadow_responses);
                slots.add_permits(1);
            }
        });
    }
}
