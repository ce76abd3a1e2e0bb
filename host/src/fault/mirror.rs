//! HTTP/1.1 mirroring proxy: clients talk to live through it, and a copy of each request
//! goes to the shadow, whose responses are discarded.
//!
//! The live path never waits for the shadow. A request is forwarded to live first; its
//! copy is offered to a bounded queue with `try_send`, and a copy that finds the queue
//! full is dropped and counted. A dispatcher task takes copies from the queue and sends
//! up to `shadow_concurrency` of them at once. Only requests whose body is declared by
//! `Content-Length` and fits `max_body_bytes` (or that have no body) are buffered and
//! copied; other requests stream to live unchanged.
//!
//! The shadow's address can change while the proxy runs ([`MirrorProxy::set_shadow`]),
//! so the engine points the copies at each new shadow, and pauses them with `None`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::fault::error::ProxyError;
use crate::fault::mirror_config::{MirrorConfig, MirrorCounters, MirrorStats, ShadowTarget};

type Body = BoxBody<Bytes, hyper::Error>;
type HttpClient = Client<HttpConnector, Body>;

/// A request copy waiting for the shadow.
struct MirroredRequest {
    request: Request<Full<Bytes>>,
    /// Generation of the shadow target when the copy was made.
    generation: u64,
}

/// State shared by the connections of one mirroring proxy.
struct Shared {
    live: SocketAddr,
    config: MirrorConfig,
    client: HttpClient,
    copies: mpsc::Sender<MirroredRequest>,
    counters: Arc<MirrorCounters>,
    target: Arc<ShadowTarget>,
}

/// A running mirroring proxy. Dropping it stops it.
pub struct MirrorProxy {
    listen_addr: SocketAddr,
    counters: Arc<MirrorCounters>,
    target: Arc<ShadowTarget>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MirrorProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorProxy")
            .field("listen_addr", &self.listen_addr)
            .finish_non_exhaustive()
    }
}

impl MirrorProxy {
    /// Starts a proxy on a port of 127.0.0.1 chosen by the OS that forwards to `live` and
    /// copies to `shadow`.
    pub async fn start(
        live: SocketAddr,
        shadow: SocketAddr,
        config: MirrorConfig,
    ) -> Result<MirrorProxy, ProxyError> {
        MirrorProxy::start_on(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            live,
            Some(shadow),
            config,
        )
        .await
    }

    /// Starts a proxy on `listen` (the address the live asset's clients use) that
    /// forwards to `live` and copies to `shadow`; with `None`, copying starts paused.
    pub async fn start_on(
        listen: SocketAddr,
        live: SocketAddr,
        shadow: Option<SocketAddr>,
        config: MirrorConfig,
    ) -> Result<MirrorProxy, ProxyError> {
        config.validate().map_err(ProxyError::InvalidMirrorConfig)?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| ProxyError::BindOn(listen, error))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|error| ProxyError::BindOn(listen, error))?;

        let target = Arc::new(ShadowTarget::new(shadow));
        let counters = Arc::new(MirrorCounters::default());
        let cancel = CancellationToken::new();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let (copies, queue) = mpsc::channel(config.queue_capacity);

        let dispatcher = tokio::spawn(dispatch_copies(
            queue,
            target.clone(),
            client.clone(),
            config.clone(),
            counters.clone(),
            cancel.clone(),
        ));
        let shared = Arc::new(Shared {
            live,
            config,
            client,
            copies,
            counters: counters.clone(),
            target: target.clone(),
        });
        let acceptor = tokio::spawn(accept_loop(listener, shared, cancel.clone()));
        info!(%listen_addr, %live, ?shadow, "mirroring proxy started");

        Ok(MirrorProxy {
            listen_addr,
            counters,
            target,
            cancel,
            tasks: vec![acceptor, dispatcher],
        })
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The proxy's counters.
    pub fn stats(&self) -> MirrorStats {
        self.counters.snapshot()
    }

    /// Sends copies of later requests to `shadow`, or pauses copying with `None`.
    /// Copies still queued for the previous address are not sent; they count in
    /// `copies_unrouted_total`, like requests that arrive while copying is paused.
    pub fn set_shadow(&self, shadow: Option<SocketAddr>) {
        self.target.set(shadow);
    }

    /// The address copies go to, `None` while copying is paused.
    pub fn shadow(&self) -> Option<SocketAddr> {
        self.target.get().1
    }

    /// Stops accepting, closes client connections and abandons queued copies.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for MirrorProxy {
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
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, shared.clone()));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// Forwards one request to live and offers a copy to the shadow queue.
async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    MirrorCounters::add(&shared.counters.requests);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();

    let live_uri = Uri::try_from(format!("http://{}{path}", shared.live));
    let Ok(live_uri) = live_uri else {
        return Ok(status_response(StatusCode::BAD_REQUEST));
    };

    let copyable =
        shared.config.mirrors(&parts.method) && body_fits(&parts.headers, &shared.config);
    let live_request = if copyable {
        let Ok(collected) = body.collect().await else {
            return Ok(status_response(StatusCode::BAD_REQUEST));
        };
        let bytes = collected.to_bytes();
        offer_copy(&shared, &parts, &path, bytes.clone());
        let mut request = Request::from_parts(parts, full(bytes));
        *request.uri_mut() = live_uri;
        request
    } else {
        MirrorCounters::add(&shared.counters.skipped);
        let mut request = Request::from_parts(parts, body.boxed());
        *request.uri_mut() = live_uri;
        request
    };

    match shared.client.request(live_request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(error) => {
            MirrorCounters::add(&shared.counters.live_errors);
            debug!(
                error = &error as &dyn std::error::Error,
                "live request failed"
            );
            Ok(status_response(StatusCode::BAD_GATEWAY))
        }
    }
}

/// Returns whether the request body is absent or declared small enough to copy.
fn body_fits(headers: &HeaderMap, config: &MirrorConfig) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => true,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|length| length <= config.max_body_bytes),
    }
}

fn offer_copy(shared: &Shared, parts: &hyper::http::request::Parts, path: &str, body: Bytes) {
    let mut builder = Request::builder()
        .method(parts.method.clone())
        .uri(path)
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    let (generation, shadow) = shared.target.get();
    if shadow.is_none() {
        MirrorCounters::add(&shared.counters.unrouted);
        return;
    }
    let Ok(request) = builder.body(Full::new(body)) else {
        return;
    };
    match shared.copies.try_send(MirroredRequest {
        request,
        generation,
    }) {
        Ok(()) => {
            MirrorCounters::add(&shared.counters.depth);
            MirrorCounters::add(&shared.counters.queued);
        }
        Err(_) => MirrorCounters::add(&shared.counters.dropped),
    }
}

async fn dispatch_copies(
    mut queue: mpsc::Receiver<MirroredRequest>,
    target: Arc<ShadowTarget>,
    client: HttpClient,
    config: MirrorConfig,
    counters: Arc<MirrorCounters>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(config.shadow_concurrency));
    let timeout = Duration::from_millis(config.shadow_timeout_ms);
    loop {
        // Take a slot first, so copies wait in the bounded queue rather than in tasks.
        let slot = tokio::select! {
            _ = cancel.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { return };
        let copy = tokio::select! {
            _ = cancel.cancelled() => return,
            copy = queue.recv() => copy,
        };
        let Some(copy) = copy else { return };
        counters.dequeued();
        let shadow = match target.get() {
            (generation, Some(shadow)) if generation == copy.generation => shadow,
            _ => {
                MirrorCounters::add(&counters.unrouted);
                continue;
            }
        };

        let client = client.clone();
        let counters = counters.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let send = send_copy(&client, shadow, copy);
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = tokio::time::timeout(timeout, send) => outcome,
            };
            match outcome {
                Ok(true) => MirrorCounters::add(&counters.shadow_responses),
                _ => MirrorCounters::add(&counters.shadow_errors),
            }
        });
    }
}

/// Sends one copy and reads the shadow's response to its end. Returns whether a
/// complete response arrived.
async fn send_copy(client: &HttpClient, shadow: SocketAddr, copy: MirroredRequest) -> bool {
    let (mut parts, body) = copy.request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = Uri::try_from(format!("http://{shadow}{path}")) else {
        return false;
    };
    parts.uri = uri;
    let request = Request::from_parts(parts, body.map_err(|never| match never {}).boxed());
    match client.request(request).await {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// Removes the headers that describe one hop (RFC 9110, section 7.6.1) and the headers
/// that `Connection` names, because the proxy opens its own connections.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn status_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}
