//! The plain-TCP mirroring proxy between a client and a live key-value server speaking a
//! line protocol (and an echo server speaking a length-prefixed one), copying to a
//! shadow server of the same kind.
//!
//! The servers are real TCP servers on 127.0.0.1, started by each test on threads: the
//! key-value server keeps a map (`SET k v` answers `OK`, `GET k` answers `VALUE v` or
//! `MISSING`, `DEL k` answers `DELETED` or `MISSING`) and records every request line it
//! reads, in order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use umbra_host::fault::{Framing, MirrorStats, TcpMirrorConfig, TcpMirrorProxy};

use crate::support::{TestResult, median, runtime, timing};

/// How a test server treats its clients.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers every request.
    Serve,
    /// Accepts connections and never reads or answers: a stalled process.
    Stall,
}

/// A line-protocol key-value server, or a length-prefixed echo server, on 127.0.0.1.
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(framing: Framing, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().expect("server address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(Mutex::new(HashMap::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                if mode == Mode::Stall {
                    held.push(stream);
                    continue;
                }
                let log = log.clone();
                let store = store.clone();
                std::thread::spawn(move || match framing {
                    Framing::Line => serve_lines(stream, &log, &store),
                    Framing::LengthPrefixed => serve_prefixed(stream, &log),
                });
            }
        });
        Server { addr, received }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("log").clone()
    }
}

fn serve_lines(
    stream: TcpStream,
    log: &Mutex<Vec<String>>,
    store: &Mutex<HashMap<String, String>>,
) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().expect("clone stream");
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        log.lock().expect("log").push(line.clone());
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut store = store.lock().expect("store");
        let answer = match words.as_slice() {
            ["SET", key, value] => {
                store.insert((*key).to_owned(), (*value).to_owned());
                "OK".to_owned()
            }
            ["GET", key] => match store.get(*key) {
                Some(value) => format!("VALUE {value}"),
                None => "MISSING".to_owned(),
            },
            ["DEL", key] => match store.remove(*key) {
                Some(_) => "DELETED".to_owned(),
                None => "MISSING".to_owned(),
            },
            _ => "ERROR unknown command".to_owned(),
        };
        drop(store);
        if writer.write_all(format!("{answer}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn serve_prefixed(mut stream: TcpStream, log: &Mutex<Vec<String>>) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut header = [0u8; 4];
        if stream.read_exact(&mut header).is_err() {
            return;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        if stream.read_exact(&mut payload).is_err() {
            return;
        }
        log.lock()
            .expect("log")
            .push(String::from_utf8_lossy(&payload).into_owned());
        let mut answer = b"echo ".to_vec();
        answer.extend_from_slice(&payload);
        let mut frame = (answer.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&answer);
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

/// A client on one connection that sends a line and waits for the answer line.
struct LineClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        LineClient {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    /// Sends `request` and returns the answer without its newline, and the round trip.
    fn call(&mut self, request: &str) -> (String, Duration) {
        let started = Instant::now();
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .expect("send request");
        let mut answer = String::new();
        self.reader.read_line(&mut answer).expect("read answer");
        (answer.trim_end().to_owned(), started.elapsed())
    }
}

/// A workload of sets, gets of present and missing keys, and deletes.
fn workload(count: usize) -> Vec<(String, String)> {
    let mut expected = HashMap::new();
    (0..count)
        .map(|i| {
            let key = format!("k{}", i % 7);
            let request = match i % 4 {
                0 => format!("SET {key} v{i}"),
                1 | 2 => format!("GET {key}"),
                _ => format!("DEL {key}"),
            };
            let words: Vec<&str> = request.split(' ').collect();
            let answer = match words.as_slice() {
                ["SET", key, value] => {
                    expected.insert((*key).to_owned(), (*value).to_owned());
                    "OK".to_owned()
                }
                ["GET", key] => expected
                    .get(*key)
                    .map_or("MISSING".to_owned(), |v| format!("VALUE {v}")),
                ["DEL", key] => expected
                    .remove(*key)
                    .map_or("MISSING".to_owned(), |_| "DELETED".to_owned()),
                _ => unreachable!("the workload only builds known commands"),
            };
            (request, answer)
        })
        .collect()
}

/// Waits up to 5 s for `done` to hold on the proxy's counters and returns them.
fn wait_for(proxy: &TcpMirrorProxy, done: impl Fn(&MirrorStats) -> bool) -> MirrorStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = proxy.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shadow_sees_live_line_sequence() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::Line, Mode::Serve);
    let shadow = Server::start(Framing::Line, Mode::Serve);
    let rt = runtime();
    let proxy = rt.block_on(TcpMirrorProxy::start(
        live.addr,
        shadow.addr,
        TcpMirrorConfig::new(Framing::Line),
    ))?;

    let requests = workload(200);
    let mut client = LineClient::connect(proxy.listen_addr());
    for (request, expected) in &requests {
        let (answer, _) = client.call(request);
        assert_eq!(&answer, expected, "live's answer to `{request}`");
    }
    // A second connection gets its own shadow connection, in its own order.
    wait_for(&proxy, |s| s.shadow_responses_total == 200);
    let mut second = LineClient::connect(proxy.listen_addr());
    assert_eq!(second.call("GET nothing").0, "MISSING");

    let stats = wait_for(&proxy, |s| s.shadow_responses_total == 201);
    let sent: Vec<String> = requests.iter().map(|(r, _)| r.clone()).collect();
    let mut all = sent.clone();
    all.push("GET nothing".to_owned());
    assert_eq!(live.received(), all);
    assert_eq!(shadow.received(), all, "{stats:?}");
    assert_eq!(stats.requests_total, 201);
    assert_eq!(stats.copies_queued_total, 201);
    assert_eq!(stats.shadow_responses_total, 201);
    assert_eq!(stats.copies_dropped_total + stats.shadow_errors_total, 0);
    assert_eq!(stats.queue_depth, 0);
    Ok(())
}

#[test]
fn prefixed_frames_copied_whole() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::LengthPrefixed, Mode::Serve);
    let shadow = Server::start(Framing::LengthPrefixed, Mode::Serve);
    let rt = runtime();
    let config = TcpMirrorConfig {
        max_frame_bytes: 1000,
        ..TcpMirrorConfig::new(Framing::LengthPrefixed)
    };
    let proxy = rt.block_on(TcpMirrorProxy::start(live.addr, shadow.addr, config))?;

    let mut stream = TcpStream::connect(proxy.listen_addr())?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let payloads = [
        "alpha".to_owned(),
        "x".repeat(2000),
        String::new(),
        "omega".to_owned(),
    ];
    for payload in &payloads {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload.as_bytes());
        // Header and payload in separate writes, with a pause, so they arrive apart.
        let (head, rest) = frame.split_at(3);
        stream.write_all(head)?;
        std::thread::sleep(Duration::from_millis(5));
        stream.write_all(rest)?;
        let mut header = [0u8; 4];
        stream.read_exact(&mut header)?;
        let mut answer = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut answer)?;
        assert_eq!(answer, format!("echo {payload}").as_bytes());
    }

    // The 2000-byte frame is over the 1000-byte limit: live gets it, the shadow does not.
    let stats = wait_for(&proxy, |s| s.shadow_responses_total == 3);
    assert_eq!(live.received(), payloads);
    let copied: Vec<String> = payloads
        .iter()
        .filter(|p| p.len() <= 1000)
        .cloned()
        .collect();
    assert_eq!(shadow.received(), copied);
    assert_eq!(stats.copies_skipped_total, 1);
    assert_eq!(stats.requests_total, 4);
    Ok(())
}

#[test]
fn stalled_shadow_drops_copies_not_live_latency() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::Line, Mode::Serve);
    let stalled = Server::start(Framing::Line, Mode::Stall);
    let rt = runtime();
    let config = TcpMirrorConfig {
        queue_capacity: 8,
        shadow_in_flight: 2,
        shadow_timeout_ms: 10_000,
        ..TcpMirrorConfig::new(Framing::Line)
    };
    let proxy = rt.block_on(TcpMirrorProxy::start(live.addr, stalled.addr, config))?;

    let requests = workload(300);
    let mut direct = LineClient::connect(live.addr);
    let mut mirrored = LineClient::connect(proxy.listen_addr());
    let mut direct_samples = Vec::new();
    let mut mirrored_samples = Vec::new();
    for (request, expected) in &requests {
        let (answer, elapsed) = mirrored.call(request);
        assert_eq!(&answer, expected, "live's answer to `{request}`");
        mirrored_samples.push(elapsed);
        // The direct client reads the same keys, so it changes nothing it compares.
        let read = format!("GET {}", request.split(' ').nth(1).unwrap_or("k0"));
        direct_samples.push(direct.call(&read).1);
    }
    let slowest = mirrored_samples.iter().max().copied().unwrap_or_default();
    let direct_p50 = median(direct_samples);
    let mirrored_p50 = median(mirrored_samples);

    // A live path that waited for the stalled shadow would hold a request for the
    // shadow's 10 s timeout once its slots and queue are full. The bound is a tenth of
    // that, so a busy machine does not fail the test. `cargo bench --bench tcp_mirror`
    // measures the speed of the extra hop.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest mirrored request {slowest:?} (mirrored p50 {mirrored_p50:?}, direct p50 {direct_p50:?})"
    );
    // Two copies went out, a third waits for a free slot, eight wait in the queue, and
    // the rest were dropped.
    let stats = wait_for(&proxy, |s| s.requests_total == 300);
    assert_eq!(stats.requests_total, 300, "{stats:?}");
    assert_eq!(stats.copies_queued_total, 11, "{stats:?}");
    assert_eq!(stats.copies_dropped_total, 289, "{stats:?}");
    assert_eq!(stats.queue_depth, 8, "{stats:?}");
    assert_eq!(stats.shadow_responses_total, 0, "{stats:?}");
    assert!(stalled.received().is_empty());
    Ok(())
}

#[test]
fn unanswered_copies_time_out() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::Line, Mode::Serve);
    let stalled = Server::start(Framing::Line, Mode::Stall);
    let rt = runtime();
    let config = TcpMirrorConfig {
        shadow_in_flight: 4,
        shadow_timeout_ms: 300,
        ..TcpMirrorConfig::new(Framing::Line)
    };
    let proxy = rt.block_on(TcpMirrorProxy::start(live.addr, stalled.addr, config))?;
    let mut client = LineClient::connect(proxy.listen_addr());
    for i in 0..3 {
        assert_eq!(client.call(&format!("SET a {i}")).0, "OK");
    }
    // The oldest copy waits past 300 ms: its connection closes with 3 errors.
    let stats = wait_for(&proxy, |s| s.shadow_errors_total == 3);
    assert_eq!(stats.shadow_errors_total, 3, "{stats:?}");
    // The next copy opens a new connection to the shadow.
    assert_eq!(client.call("GET a").0, "VALUE 2");
    drop(client);
    let stats = wait_for(&proxy, |s| s.shadow_errors_total == 4);
    assert_eq!(stats.shadow_errors_total, 4, "{stats:?}");
    assert_eq!(stats.live_errors_total, 0);
    Ok(())
}

#[test]
fn stopped_shadow_leaves_live_answers_intact() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::Line, Mode::Serve);
    // A port with nothing behind it: the shadow process is gone.
    let gone = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let rt = runtime();
    let proxy = rt.block_on(TcpMirrorProxy::start(
        live.addr,
        gone,
        TcpMirrorConfig::new(Framing::Line),
    ))?;
    let mut client = LineClient::connect(proxy.listen_addr());
    for (request, expected) in workload(50) {
        assert_eq!(client.call(&request).0, expected);
    }
    let stats = wait_for(&proxy, |s| {
        s.shadow_errors_total + s.copies_dropped_total == 50
    });
    assert_eq!(stats.shadow_errors_total + stats.copies_dropped_total, 50);
    assert!(stats.shadow_errors_total > 0);
    assert_eq!(stats.live_errors_total, 0);
    Ok(())
}

#[test]
fn copies_follow_a_new_shadow_and_pause() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::Line, Mode::Serve);
    let first = Server::start(Framing::Line, Mode::Serve);
    let second = Server::start(Framing::Line, Mode::Serve);
    let rt = runtime();
    let config = TcpMirrorConfig::new(Framing::Line);
    let proxy = rt.block_on(TcpMirrorProxy::start_on(
        "127.0.0.1:0".parse()?,
        live.addr,
        None,
        config,
    ))?;
    let mut client = LineClient::connect(proxy.listen_addr());
    assert_eq!(client.call("SET a 1").0, "OK");
    wait_for(&proxy, |s| s.copies_unrouted_total == 1);

    proxy.set_shadow(Some(first.addr));
    assert_eq!(client.call("GET a").0, "VALUE 1");
    wait_for(&proxy, |s| s.shadow_responses_total == 1);
    proxy.set_shadow(Some(second.addr));
    assert_eq!(client.call("SET a 2").0, "OK");
    assert_eq!(client.call("GET a").0, "VALUE 2");
    let stats = wait_for(&proxy, |s| s.shadow_responses_total == 3);
    assert_eq!(stats.shadow_responses_total, 3, "{stats:?}");
    proxy.set_shadow(None);
    assert_eq!(client.call("DEL a").0, "DELETED");

    assert_eq!(first.received(), ["GET a"]);
    assert_eq!(second.received(), ["SET a 2", "GET a"]);
    let stats = wait_for(&proxy, |s| s.copies_unrouted_total == 2);
    assert_eq!(stats.copies_unrouted_total, 2, "{stats:?}");
    Ok(())
}

#[test]
fn stalled_queue_empties_on_timeout() -> TestResult {
    let _timing = timing();
    let live = Server::start(Framing::Line, Mode::Serve);
    let stalled = Server::start(Framing::Line, Mode::Stall);
    let rt = runtime();
    let config = TcpMirrorConfig {
        queue_capacity: 4,
        shadow_in_flight: 1,
        shadow_timeout_ms: 300,
        ..TcpMirrorConfig::new(Framing::Line)
    };
    let proxy = rt.block_on(TcpMirrorProxy::start(live.addr, stalled.addr, config))?;
    let mut client = LineClient::connect(proxy.listen_addr());
    for (request, expected) in workload(10) {
        assert_eq!(client.call(&request).0, expected);
    }
    let stats = wait_for(&proxy, |s| s.requests_total == 10);
    assert_eq!(stats.copies_queued_total, 6, "{stats:?}");
    assert_eq!(stats.copies_dropped_total, 4, "{stats:?}");

    // One copy in flight, one waiting for its slot and four queued: all six fail
    // together once the slot wait times out, and the queue is empty again.
    let stats = wait_for(&proxy, |s| s.shadow_errors_total == 6);
    assert_eq!(stats.shadow_errors_total, 6, "{stats:?}");
    assert_eq!(stats.queue_depth, 0, "{stats:?}");
    Ok(())
}
