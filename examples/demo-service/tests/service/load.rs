//! Open-model load generator for the demo service, on loopback only.
//!
//! Requests start at a fixed arrival rate whether or not earlier ones have finished, as
//! real clients do, so an overloaded service cannot slow the client down. Latency is
//! measured from the time a request was scheduled to start, so a client that falls
//! behind still counts the delay (no coordinated omission). Ids cycle through
//! `0..key_space` in a shuffled order.
//!
//! The integration tests use this module, and `examples/load.rs` includes it with
//! `#[path]` to measure the shipped configurations.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Maximum time for one request, connection set-up included, before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One run: where to send, how fast and for how long.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    /// Port of the service on 127.0.0.1.
    pub port: u16,
    /// Arrival rate in requests per second.
    pub rate_per_second: f64,
    /// Time over which requests start. The run lasts longer by the slowest response.
    pub duration: Duration,
    /// Number of distinct item ids to request.
    pub key_space: u64,
}

/// Outcome of a run.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Responses by HTTP status code.
    pub status_counts: BTreeMap<u16, u64>,
    /// Requests that got no response: connection errors and timeouts.
    pub failures: u64,
    /// Latency of every response with status 200, sorted.
    pub ok_latencies: Vec<Duration>,
    /// Time from the first scheduled start to the last response.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Number of responses with this status code.
    pub fn count(&self, status: u16) -> u64 {
        self.status_counts.get(&status).copied().unwrap_or(0)
    }

    /// Number of requests sent.
    pub fn sent(&self) -> u64 {
        self.status_counts.values().sum::<u64>() + self.failures
    }

    /// Latency of 200 responses at quantile `q` in `[0, 1]`, by the nearest-rank method.
    pub fn ok_latency_quantile(&self, q: f64) -> Option<Duration> {
        let last = self.ok_latencies.len().checked_sub(1)?;
        let rank = (q * last as f64).round() as usize;
        self.ok_latencies.get(rank.min(last)).copied()
    }
}

/// Idle keep-alive connections, reused before a new one is opened.
type ConnectionPool = Arc<Mutex<Vec<SendRequest<Empty<Bytes>>>>>;

/// Runs `plan` and returns the report once every request has finished or timed out.
pub async fn run(plan: LoadPlan) -> LoadReport {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, plan.port));
    let total = (plan.rate_per_second * plan.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / plan.rate_per_second);
    let ids = shuffled_ids(plan.key_space);
    let pool = ConnectionPool::default();
    let mut requests = JoinSet::new();

    let started = Instant::now();
    for index in 0..total {
        let scheduled = started + interval.mul_f64(index as f64);
        tokio::time::sleep_until(scheduled).await;

        let path = format!("/api/items/{}", ids[(index % plan.key_space) as usize]);
        let pool = Arc::clone(&pool);
        requests.spawn(async move {
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, send(address, &pool, &path)).await;
            (outcome.ok().flatten(), scheduled.elapsed())
        });
    }

    let mut report = LoadReport::default();
    while let Some(joined) = requests.join_next().await {
        match joined {
            Ok((Some(status), latency)) => {
                *report.status_counts.entry(status).or_default() += 1;
                if status == 200 {
                    report.ok_latencies.push(latency);
                }
            }
            Ok((None, _)) | Err(_) => report.failures += 1,
        }
    }
    report.elapsed = started.elapsed();
    report.ok_latencies.sort();

    report
}

/// Sends one GET and returns its status code, or `None` if the exchange failed.
async fn send(address: SocketAddr, pool: &ConnectionPool, path: &str) -> Option<u16> {
    let mut sender = match take_idle(pool) {
        Some(sender) => sender,
        None => connect(address).await?,
    };
    sender.ready().await.ok()?;

    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(Empty::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;

    pool.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(sender);
    Some(status)
}

fn take_idle(pool: &ConnectionPool) -> Option<SendRequest<Empty<Bytes>>> {
    let mut idle = pool.lock().unwrap_or_else(|poison| poison.into_inner());
    while let Some(sender) = idle.pop() {
        if !sender.is_closed() {
            return Some(sender);
        }
    }
    None
}

async fn connect(address: SocketAddr) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(address).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// Returns `0..key_space` in a fixed pseudo-random order, so consecutive requests ask for
/// unrelated ids while every id is requested equally often.
fn shuffled_ids(key_space: u64) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..key_space).collect();
    // xorshift64 with a fixed seed: reproducible, and good enough to spread ids.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    ids
}
