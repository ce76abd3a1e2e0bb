//! Overhead of the fault proxy (no faults) and of the mirroring proxy on the live path,
//! against a direct connection in the same run.
//!
//! `cargo bench -p umbra-host --bench fault` prints a Markdown table for
//! `docs/BENCHMARKS.md`. Set `UMBRA_BENCH_REQUESTS` (default 20000) and
//! `UMBRA_BENCH_BULK_MIB` (default 1024) to change the run's size.
//!
//! The servers are blocking threads on 127.0.0.1: a minimal HTTP/1.1 responder (a fixed
//! 2-byte body) and a bulk sender that writes a fixed number of bytes and closes. The
//! client is a blocking keep-alive connection that sends one request at a time, so each
//! latency is one full round trip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use umbra_host::fault::{FaultProxy, MirrorConfig, MirrorProxy};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const REQUEST: &[u8] = b"GET /item HTTP/1.1\r\nHost: bench\r\n\r\n";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts a thread-per-connection HTTP responder and returns its address.
fn start_http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind http server");
    let addr = listener.local_addr().expect("http server address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || respond_forever(stream));
        }
    });
    addr
}

fn respond_forever(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut pending = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buffer[..n]);
        // One response per complete request head; benchmark requests have no body.
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if stream.write_all(RESPONSE).is_err() {
                return;
            }
        }
    }
}

/// Starts a server that sends `bytes` bytes to each connection and closes it.
fn start_bulk_server(bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind bulk server");
    let addr = listener.local_addr().expect("bulk server address");
    std::thread::spawn(move || {
        let block = vec![0x5au8; 256 * 1024];
        for mut stream in listener.incoming().flatten() {
            let mut left = bytes;
            while left > 0 {
                let take = left.min(block.len());
                if stream.write_all(&block[..take]).is_err() {
                    break;
                }
                left -= take;
            }
        }
    });
    addr
}

/// Sends `count` sequential requests on one connection and returns sorted latencies.
fn measure_latency(addr: SocketAddr, count: usize) -> Vec<Duration> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buffer = [0u8; 4096];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        stream.write_all(REQUEST).expect("send request");
        let mut received = 0;
        // Proxies may rewrite headers, so read until the body `ok` ends the response.
        let mut tail = Vec::new();
        while !tail.ends_with(b"\r\n\r\nok") {
            let n = stream.read(&mut buffer).expect("read response");
            assert!(n > 0, "server closed the connection");
            received += n;
            tail.extend_from_slice(&buffer[..n]);
        }
        samples.push(started.elapsed());
        assert!(received >= 2);
    }
    samples.sort();
    samples
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Reads everything the bulk server sends through `addr` three times and returns the
/// best rate in bytes per second.
fn measure_throughput(addr: SocketAddr, bytes: usize) -> f64 {
    let mut best = 0.0f64;
    let mut buffer = vec![0u8; 256 * 1024];
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let started = Instant::now();
        let mut received = 0;
        loop {
            let n = stream.read(&mut buffer).expect("read bulk");
            if n == 0 {
                break;
            }
            received += n;
        }
        assert_eq!(received, bytes, "transfer truncated");
        best = best.max(received as f64 / started.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let requests = env_number("UMBRA_BENCH_REQUESTS", 20_000);
    let bulk_bytes = env_number("UMBRA_BENCH_BULK_MIB", 1024) * 1024 * 1024;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let live = start_http_server();
    let shadow = start_http_server();
    let bulk = start_bulk_server(bulk_bytes);
    let http_proxy = runtime
        .block_on(FaultProxy::start(live))
        .expect("start fault proxy");
    let bulk_proxy = runtime
        .block_on(FaultProxy::start(bulk))
        .expect("start bulk proxy");
    let mirror = runtime
        .block_on(MirrorProxy::start(live, shadow, MirrorConfig::default()))
        .expect("start mirror proxy");

    let warmup = (requests / 10).max(100);
    let paths = [
        ("direct", live),
        ("fault proxy, no faults", http_proxy.listen_addr()),
        ("mirroring proxy", mirror.listen_addr()),
    ];
    println!("| path | p50 (µs) | p99 (µs) | added p50 (µs) | added p99 (µs) |");
    println!("|---|---:|---:|---:|---:|");
    let mut direct = (Duration::ZERO, Duration::ZERO);
    for (name, addr) in paths {
        measure_latency(addr, warmup);
        let samples = measure_latency(addr, requests);
        let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
        if name == "direct" {
            direct = (p50, p99);
        }
        let added =
            |value: Duration, base: Duration| value.as_secs_f64() * 1e6 - base.as_secs_f64() * 1e6;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            added(p50, direct.0),
            added(p99, direct.1),
        );
    }

    let direct_rate = measure_throughput(bulk, bulk_bytes);
    let proxy_rate = measure_throughput(bulk_proxy.listen_addr(), bulk_bytes);
    println!();
    println!(
        "| bulk transfer ({} MiB) | GB/s |",
        bulk_bytes / (1024 * 1024)
    );
    println!("|---|---:|");
    println!("| direct | {:.2} |", direct_rate / 1e9);
    println!("| fault proxy, no faults | {:.2} |", proxy_rate / 1e9);
    println!();
    println!("mirror counters: {:?}", mirror.stats());
}
