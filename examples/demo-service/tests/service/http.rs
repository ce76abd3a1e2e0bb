//! HTTP helpers: single requests, concurrent bursts and `/metrics` scrapes, all sent to
//! 127.0.0.1.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Method;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Maximum time for one HTTP exchange, connection set-up included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Status and body of one HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Sends one request to the service on 127.0.0.1 over a new connection.
pub async fn request(port: u16, method: Method, path: &str) -> Result<Reply> {
    let mut sender = connect(port).await?;
    tokio::time::timeout(REQUEST_TIMEOUT, send(&mut sender, port, method, path))
        .await
        .map_err(|_| anyhow!("`{path}` did not respond within {REQUEST_TIMEOUT:?}"))?
}

/// Sends `GET path` once over each of `count` connections, all opened before the first
/// request goes out, and returns the status codes.
pub async fn burst(port: u16, path: &str, count: usize) -> Result<Vec<u16>> {
    let mut senders = Vec::with_capacity(count);
    for _ in 0..count {
        senders.push(connect(port).await?);
    }

    let mut requests = JoinSet::new();
    for mut sender in senders {
        let path = path.to_owned();
        requests.spawn(async move {
            let exchange = send(&mut sender, port, Method::GET, &path);
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(reply) => reply.map(|reply| reply.status),
                Err(_) => Err(anyhow!(
                    "`{path}` did not respond within {REQUEST_TIMEOUT:?}"
                )),
            }
        });
    }

    let mut statuses = Vec::with_capacity(count);
    while let Some(joined) = requests.join_next().await {
        statuses.push(joined??);
    }
    Ok(statuses)
}

async fn connect(port: u16) -> Result<SendRequest<Empty<Bytes>>> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("failed to connect to `{address}`"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    port: u16,
    method: Method,
    path: &str,
) -> Result<Reply> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::new())?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();

    Ok(Reply {
        status,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// Samples of one `/metrics` scrape, keyed by series such as `demo_requests_total{code="200"}`.
#[derive(Debug)]
pub struct Samples(HashMap<String, f64>);

impl Samples {
    /// Value of a series, or an error naming it if the scrape did not contain it.
    pub fn value(&self, series: &str) -> Result<f64> {
        self.0
            .get(series)
            .copied()
            .ok_or_else(|| anyhow!("series `{series}` missing from /metrics"))
    }

    /// Sum of `demo_requests_total` over every status code.
    pub fn requests_total(&self) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| series.starts_with("demo_requests_total{"))
            .map(|(_, value)| value)
            .sum()
    }
}

/// Scrapes `/metrics` and parses the samples of the text exposition format.
pub async fn scrape(port: u16) -> Result<Samples> {
    let reply = request(port, Method::GET, "/metrics").await?;
    ensure!(reply.status == 200, "/metrics returned {}", reply.status);

    let mut samples = HashMap::new();
    for line in reply.body.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("malformed sample line `{line}`"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("malformed value in `{line}`"))?;
        samples.insert(series.to_owned(), value);
    }
    Ok(Samples(samples))
}

/// Polls `/metrics` every 20 ms until `series` has the value `expected`, for up to 2 s.
pub async fn wait_for_sample(port: u16, series: &str, expected: f64) -> Result<()> {
    let mut last = None;
    for _ in 0..100 {
        let value = scrape(port).await?.value(series)?;
        if value == expected {
            return Ok(());
        }
        last = Some(value);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("`{series}` did not reach {expected} within 2 s, last value {last:?}")
}
