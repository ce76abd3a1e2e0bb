//! Shared setup: nginx on 127.0.0.1 serving fixed files, and raw HTTP/1.1 helpers that
//! time each request.

#![allow(
    dead_code,
    reason = "each test module uses a different subset of these helpers"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Timing tests hold a read lock and the CPU contention test holds the write lock, so
/// busy threads never run while a latency or rate is measured.
static CPU_HOG: RwLock<()> = RwLock::new(());

/// Returns a guard to hold while measuring time.
pub fn timing() -> RwLockReadGuard<'static, ()> {
    CPU_HOG
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Returns a guard to hold while burning CPU.
pub fn hogging() -> RwLockWriteGuard<'static, ()> {
    CPU_HOG
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Size of `/big.bin`.
pub const BIG_BYTES: usize = 1024 * 1024;
/// Size of `/medium.bin`.
pub const MEDIUM_BYTES: usize = 20 * 1024;

/// An nginx process serving `/small.txt`, `/medium.bin` and `/big.bin` on 127.0.0.1,
/// logging `METHOD URI` per request to `access.log`. Killed when dropped.
pub struct Nginx {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    pub fn start() -> Nginx {
        let nginx = which("nginx").unwrap_or_else(|| {
            panic!("`nginx` not found: install it with `apt-get update && apt-get install -y nginx` (or run .ci/install-fault-deps)")
        });
        let dir = tempfile::tempdir().expect("nginx directory");
        let www = dir.path().join("www");
        std::fs::create_dir(&www).expect("www directory");
        std::fs::write(www.join("small.txt"), b"hello from nginx\n").expect("small file");
        std::fs::write(www.join("medium.bin"), pattern(MEDIUM_BYTES)).expect("medium file");
        std::fs::write(www.join("big.bin"), pattern(BIG_BYTES)).expect("big file");

        for _ in 0..5 {
            let port = free_port();
            let config = config(dir.path(), port);
            let config_path = dir.path().join("nginx.conf");
            std::fs::write(&config_path, config).expect("nginx config");
            let mut child = Command::new(&nginx)
                .arg("-c")
                .arg(&config_path)
                .arg("-p")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if wait_for_port(addr, &mut child) {
                return Nginx { addr, dir, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start; see its error.log");
    }

    /// Lines of the access log: `GET /small.txt`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Lines of the access log once it holds at least `count`, or what it holds after 5 s.
    /// nginx writes a line after it sends the response, so a client that has the response
    /// can read the log before the line is there.
    pub fn requests_when(&self, count: usize) -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let requests = self.requests();
            if requests.len() >= count || started.elapsed() > std::time::Duration::from_secs(5) {
                return requests;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops nginx now, for tests of a dead upstream.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\nevents {{ worker_connections 512; }}\n\
         http {{\n  log_format line '$request_method $request_uri';\n\
         access_log {dir}/access.log line;\n\
         client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
         keepalive_requests 100000;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {dir}/www;\n\
         location = /post {{ client_max_body_size 1m; return 200 \"posted\\n\"; }}\n  }}\n}}\n"
    )
}

/// Deterministic bytes, so a truncated or reordered transfer is detected.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub fn which(binary: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

fn wait_for_port(addr: SocketAddr, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Outcome of one raw HTTP exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Bytes received, headers included.
    pub received: Vec<u8>,
    pub elapsed: Duration,
    /// The error that ended reading, if any (a reset, a read timeout).
    pub error: Option<std::io::ErrorKind>,
    /// Number of reads that returned data.
    pub reads: usize,
}

impl Exchange {
    pub fn body(&self) -> &[u8] {
        let start = self
            .received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.received.len(), |p| p + 4);
        &self.received[start..]
    }

    pub fn status_ok(&self) -> bool {
        self.received.starts_with(b"HTTP/1.1 200")
    }
}

/// Sends `GET path` with `Connection: close` to `addr` and reads until the server closes,
/// an error, or `timeout` without data.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Exchange {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    read_all(&mut stream, started)
}

fn read_all(stream: &mut TcpStream, started: Instant) -> Exchange {
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut reads = 0;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                reads += 1;
                received.extend_from_slice(&buffer[..n]);
            }
            Err(error) => {
                return Exchange {
                    received,
                    elapsed: started.elapsed(),
                    error: Some(error.kind()),
                    reads,
                };
            }
        }
    }
    Exchange {
        received,
        elapsed: started.elapsed(),
        error: None,
        reads,
    }
}

/// A keep-alive HTTP/1.1 connection that sends `GET /small.txt` and times the response.
pub struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        KeepAlive { stream }
    }

    /// Sends one request for `/small.txt` and returns the time until the full response.
    pub fn request(&mut self) -> Duration {
        self.send("GET", "/small.txt", "").0
    }

    /// Sends one request and returns the time until the full response, and the response.
    pub fn send(&mut self, method: &str, path: &str, body: &str) -> (Duration, Vec<u8>) {
        let started = Instant::now();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .write_all(request.as_bytes())
            .expect("send request");
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !response_complete(&received) {
            let n = self.stream.read(&mut buffer).expect("read response");
            assert!(n > 0, "connection closed mid-response");
            received.extend_from_slice(&buffer[..n]);
        }
        (started.elapsed(), received)
    }
}

fn response_complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let headers = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    received.len() >= end + 4 + length
}

/// Median of `samples`.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Times `count` requests on one keep-alive connection and returns the median.
pub fn median_request(connection: &mut KeepAlive, count: usize) -> Duration {
    median((0..count).map(|_| connection.request()).collect())
}

/// Runs `body` on a multi-threaded runtime, so the proxy keeps running while the test
/// thread blocks on its raw sockets.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Asserts `low <= value <= high` and names the quantity.
#[track_caller]
pub fn assert_between(quantity: &str, value: Duration, low: Duration, high: Duration) {
    assert!(
        value >= low && value <= high,
        "{quantity} = {value:?}, expected between {low:?} and {high:?}"
    );
}
