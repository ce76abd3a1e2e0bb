//! A real HTTP/1.1 test server on 127.0.0.1 with configurable delay, errors and a stall.
//!
//! The server runs on its own thread and current-thread runtime, so the tests' own
//! runtime contains only the load generator's tasks and can check that none is left.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A one-time pause: requests that arrive in the window wait until it ends.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    /// Start of the window, measured from the first request the server receives.
    pub after: Duration,
    pub length: Duration,
}

/// How the test server responds.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Wait before every response.
    pub delay: Duration,
    /// Requests to `/slow` wait this long before the response.
    pub slow_path_delay: Duration,
    /// Every n-th request (counting from 1) gets a 500 response.
    pub error_every: Option<u64>,
    pub stall: Option<Stall>,
    /// Send `Connection: close` with every response.
    pub close_connections: bool,
}

/// Counters the server keeps while it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub requests: AtomicU64,
    pub server_errors: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    first_request: OnceLock<Instant>,
}

impl ServerStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// A running test server. Dropping it stops the server and joins its thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> TestServer {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback listener");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("listener address");
        let stats = Arc::new(ServerStats::default());
        let (shutdown, shutdown_received) = oneshot::channel();

        let thread_stats = stats.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(serve(std_listener, config, thread_stats, shutdown_received));
        });

        TestServer {
            addr,
            stats,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> u64 {
        ServerStats::get(&self.stats.requests)
    }

    /// Waits up to `limit` for every connection to close. Returns whether they did.
    pub async fn wait_for_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ServerStats::get(&self.stats.connections_open) == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Returns an address on 127.0.0.1 where nothing listens, so connects are refused.
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback listener");
    listener.local_addr().expect("listener address")
}

async fn serve(
    std_listener: std::net::TcpListener,
    config: ServerConfig,
    stats: Arc<ServerStats>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(std_listener).expect("tokio listener");
    let config = Arc::new(config);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };

        stats.connections_accepted.fetch_add(1, Ordering::SeqCst);
        let open = Gauge::enter(&stats, |stats| &stats.connections_open);
        let config = config.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _open = open;
            let service =
                service_fn(move |request| respond(request, config.clone(), stats.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    config: Arc<ServerConfig>,
    stats: Arc<ServerStats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let number = stats.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let first_request = *stats.first_request.get_or_init(Instant::now);
    let _in_flight = Gauge::enter(&stats, |stats| &stats.in_flight);
    let in_flight = ServerStats::get(&stats.in_flight);
    stats.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);

    if let Some(stall) = config.stall {
        let start = first_request + stall.after;
        let end = start + stall.length;
        let now = Instant::now();
        if now >= start && now < end {
            tokio::time::sleep_until(end.into()).await;
        }
    }
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    if request.uri().path() == "/slow" {
        tokio::time::sleep(config.slow_path_delay).await;
    }

    let status = if request.uri().path() == "/missing" {
        StatusCode::NOT_FOUND
    } else if config
        .error_every
        .is_some_and(|every| number.is_multiple_of(every))
    {
        stats.server_errors.fetch_add(1, Ordering::SeqCst);
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };

    let mut response = Response::new(Full::new(Bytes::from_static(b"shadow ok\n")));
    *response.status_mut() = status;
    if config.close_connections {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

/// Increments a counter now and decrements it when dropped, also when hyper drops an
/// abandoned request or connection.
struct Gauge {
    stats: Arc<ServerStats>,
    counter: fn(&ServerStats) -> &AtomicU64,
}

impl Gauge {
    fn enter(stats: &Arc<ServerStats>, counter: fn(&ServerStats) -> &AtomicU64) -> Gauge {
        counter(stats).fetch_add(1, Ordering::SeqCst);
        Gauge {
            stats: stats.clone(),
            counter,
        }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.counter)(&self.stats).fetch_sub(1, Ordering::SeqCst);
    }
}

/// Asserts that `value` lies within `tolerance` (a fraction) of `expected`.
#[track_caller]
pub fn assert_near(what: &str, value: f64, expected: f64, tolerance: f64) {
    let low = expected * (1.0 - tolerance);
    let high = expected * (1.0 + tolerance);
    assert!(
        value >= low && value <= high,
        "{what} = {value}, expected {expected} ± {:.0} %",
        tolerance * 100.0
    );
}

/// Number of tasks alive on the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits up to 500 ms for the runtime to be back to `count` alive tasks. A finished
/// task's `JoinHandle` resolves a moment before the runtime releases the task, so an
/// immediate count can still include it. Returns whether the count came back.
pub async fn tasks_finish(count: usize) -> bool {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if alive_tasks() == count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}
