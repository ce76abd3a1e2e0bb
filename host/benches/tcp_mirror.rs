//! Overhead of the plain-TCP mirroring proxy (line framing) on the live path, against a
//! direct connection in the same run.
//!
//! `cargo bench -p umbra-host --bench tcp_mirror` prints Markdown tables. Set
//! `UMBRA_BENCH_REQUESTS` (default 20000) to change the number of timed requests.
//!
//! The servers are blocking threads on 127.0.0.1 that answer each request line with
//! `OK\n`; a stalled shadow accepts connections and never reads. Latency is measured
//! with one request at a time on a keep-alive connection. Throughput pipelines 100-byte
//! request lines from a writer thread while the reader counts the answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use umbra_host::fault::{Framing, TcpMirrorConfig, TcpMirrorProxy};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts a line server; with `stall`, it accepts and never reads.
fn start_line_server(stall: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind line server");
    let addr = listener.local_addr().expect("line server address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            if stall {
                held.push(stream);
                continue;
            }
            std::thread::spawn(move || answer_lines(stream));
        }
    });
    addr
}

fn answer_lines(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut writer = std::io::BufWriter::new(stream.try_clone().expect("clone"));
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if writer.write_all(b"OK\n").is_err() {
            return;
        }
        // Answer at once unless more requests are already buffered.
        if reader.buffer().is_empty() && writer.flush().is_err() {
            return;
        }
    }
}

fn measure_latency(addr: SocketAddr, count: usize) -> Vec<Duration> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut answer = Vec::new();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let request = format!("GET key-{}\n", i % 1000);
        let started = Instant::now();
        writer.write_all(request.as_bytes()).expect("send");
        answer.clear();
        reader.read_until(b'\n', &mut answer).expect("answer");
        samples.push(started.elapsed());
        assert_eq!(answer, b"OK\n");
    }
    samples.sort();
    samples
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Pipelines `count` 100-byte request lines and returns requests per second.
fn measure_throughput(addr: SocketAddr, count: usize) -> f64 {
    let stream = TcpStream::connect(addr).expect("connect");
    let mut writer =
        std::io::BufWriter::with_capacity(64 * 1024, stream.try_clone().expect("clone"));
    let mut line = vec![b'x'; 99];
    line.push(b'\n');
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..count {
            writer.write_all(&line).expect("send");
        }
        writer.flush().expect("flush");
        writer
    });
    let mut reader = stream;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut answers = 0;
    while answers < count {
        let n = reader.read(&mut buffer).expect("read");
        assert!(n > 0, "closed early");
        answers += buffer[..n].iter().filter(|&&b| b == b'\n').count();
    }
    let elapsed = started.elapsed();
    drop(sender.join());
    count as f64 / elapsed.as_secs_f64()
}

fn main() {
    let requests = env_number("UMBRA_BENCH_REQUESTS", 20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let live = start_line_server(false);
    let shadow = start_line_server(false);
    let stalled = start_line_server(true);
    let config = TcpMirrorConfig::new(Framing::Line);
    let mirror = runtime
        .block_on(TcpMirrorProxy::start(live, shadow, config.clone()))
        .expect("start mirror");
    let stalled_mirror = runtime
        .block_on(TcpMirrorProxy::start(live, stalled, config))
        .expect("start mirror to a stalled shadow");

    let warmup = (requests / 10).max(100);
    let paths = [
        ("direct", live),
        ("TCP mirroring proxy (line)", mirror.listen_addr()),
        (
            "TCP mirroring proxy, stalled shadow",
            stalled_mirror.listen_addr(),
        ),
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

    let pipelined = requests * 20;
    println!();
    println!("| pipelined 100-byte requests ({pipelined}) | requests/s |");
    println!("|---|---:|");
    for (name, addr) in paths {
        println!("| {name} | {:.0} |", measure_throughput(addr, pipelined));
    }
    println!();
    println!("mirror counters: {:?}", mirror.stats());
    println!("stalled mirror counters: {:?}", stalled_mirror.stats());
}
