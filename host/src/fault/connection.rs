//! One proxied connection: two directions, each a reader task and a writer task.
//!
//! The reader moves bytes from the source socket into a small bounded channel, stamped
//! with their arrival time. The writer applies the direction's [`ActiveFaults`] and writes
//! to the destination. Splitting the two lets latency delay each chunk from its arrival
//! without capping throughput, and lets a stall or bandwidth limit push back on the
//! sender through TCP flow control once the channel is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fault::active::{ActiveFaults, PublishedRef};
use crate::fault::spec::Direction;
use crate::fault::stats::Counters;

/// Size of one read from a socket.
const READ_BYTES: usize = 64 * 1024;
/// Chunks buffered between reader and writer of one direction.
const CHANNEL_CHUNKS: usize = 8;
/// Bursts per second of a bandwidth limit, so one burst is at most 1/50 of a second's bytes.
const BANDWIDTH_SLICES_PER_SECOND: u64 = 50;

struct Chunk {
    bytes: Bytes,
    arrived: Instant,
}

/// State shared by the four tasks of one connection.
struct Shared {
    cancel: CancellationToken,
    reset: AtomicBool,
    counters: Arc<Counters>,
}

impl Shared {
    /// Ends the connection with a TCP reset on both sockets.
    fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// Proxies `client` to `upstream` until both directions are done, the connection is
/// reset, or `cancel` fires.
pub(crate) async fn run(
    client: TcpStream,
    upstream: TcpStream,
    faults: watch::Receiver<PublishedRef>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let shared = Arc::new(Shared {
        cancel,
        reset: AtomicBool::new(false),
        counters,
    });
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();

    let upstream_pipe = pipe(
        client_read,
        upstream_write,
        Direction::Upstream,
        faults.clone(),
        shared.clone(),
    );
    let downstream_pipe = pipe(
        upstream_read,
        client_write,
        Direction::Downstream,
        faults,
        shared.clone(),
    );
    tokio::join!(upstream_pipe, downstream_pipe);
}

async fn pipe(
    source: OwnedReadHalf,
    destination: OwnedWriteHalf,
    direction: Direction,
    faults: watch::Receiver<PublishedRef>,
    shared: Arc<Shared>,
) {
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let reader = read_chunks(source, sender, shared.clone());
    let writer = Writer {
        destination,
        direction,
        faults,
        shared: shared.clone(),
        active: ActiveFaults::default(),
        forwarded_since_roll: 0,
        last_release: Instant::now(),
        next_send: Instant::now(),
    };
    // The read half must outlive the write half's reset, so it is returned and dropped last.
    let (source, ()) = tokio::join!(reader, writer.run(receiver));
    drop(source);
}

async fn read_chunks(
    mut source: OwnedReadHalf,
    sender: mpsc::Sender<Chunk>,
    shared: Arc<Shared>,
) -> OwnedReadHalf {
    loop {
        let mut buffer = BytesMut::with_capacity(READ_BYTES);
        let read = tokio::select! {
            _ = shared.cancel.cancelled() => return source,
            read = source.read_buf(&mut buffer) => read,
        };
        match read {
            Ok(0) | Err(_) => return source,
            Ok(_) => {}
        }
        let chunk = Chunk {
            bytes: buffer.freeze(),
            arrived: Instant::now(),
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return source,
            sent = sender.send(chunk) => if sent.is_err() { return source },
        }
    }
}

/// Outcome of a writer's wait, which decides its next step.
enum Wait {
    Done,
    Changed,
    Cancelled,
    Close,
}

struct Writer {
    destination: OwnedWriteHalf,
    direction: Direction,
    faults: watch::Receiver<PublishedRef>,
    shared: Arc<Shared>,
    active: ActiveFaults,
    forwarded_since_roll: u64,
    /// Release time of the previous chunk, so that jitter never reorders chunks.
    last_release: Instant,
    /// Earliest time the bandwidth limit lets the next byte out.
    next_send: Instant,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Chunk>) {
        self.refresh();
        // False once the proxy dropped its fault sender, whose `changed` then fails at once.
        let mut watching = true;
        loop {
            let close_at = self.timeout_close_at();
            let chunk = tokio::select! {
                _ = self.shared.cancel.cancelled() => return self.finish_cancelled(),
                changed = self.faults.changed(), if watching => {
                    match changed {
                        Ok(()) => self.refresh(),
                        Err(_) => watching = false,
                    }
                    continue;
                }
                _ = sleep_until_opt(close_at) => return self.close_timed_out(),
                chunk = receiver.recv() => chunk,
            };
            let Some(chunk) = chunk else {
                return self.close().await;
            };

            match self.forward(chunk).await {
                Wait::Done | Wait::Changed => {}
                Wait::Cancelled => return self.finish_cancelled(),
                Wait::Close => return self.close_timed_out(),
            }
        }
    }

    /// Rebuilds the active faults if the proxy's set changed.
    fn refresh(&mut self) {
        let published = self.faults.borrow_and_update().clone();
        if published.generation == self.active.generation && self.active.since.is_some() {
            return;
        }
        self.active = ActiveFaults::roll(&published, self.direction, Instant::now());
        self.forwarded_since_roll = 0;
        if !self.active.is_empty() {
            self.shared
                .counters
                .faulted_pipes
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn timeout_close_at(&self) -> Option<Instant> {
        let close_after = self.active.timeout??;
        Some(self.active.since? + close_after)
    }

    async fn forward(&mut self, chunk: Chunk) -> Wait {
        // Hold the chunk while a timeout or stall is in force.
        loop {
            self.refresh();
            let until = if self.active.timeout.is_some() {
                self.timeout_close_at()
            } else if let Some(end) = self.active.stall_until.filter(|e| *e > Instant::now()) {
                Some(end)
            } else {
                break;
            };
            let timeout_forever = self.active.timeout.is_some() && until.is_none();
            match self.wait(until).await {
                Wait::Done if self.active.timeout.is_some() && !timeout_forever => {
                    return Wait::Close;
                }
                Wait::Done | Wait::Changed => continue,
                other => return other,
            }
        }

        if let Some(delay) = self.active.draw_latency() {
            let release = (chunk.arrived + delay).max(self.last_release);
            self.last_release = release;
            if let wait @ (Wait::Cancelled | Wait::Close) = self.wait(Some(release)).await {
                return wait;
            }
        }

        let pause = self.active.slice.map(|(_, _, pause)| pause);
        let mut offset = 0;
        let segments = self.active.segments(chunk.bytes.len());
        let count = segments.len();
        for (index, length) in segments.into_iter().enumerate() {
            let segment = chunk.bytes.slice(offset..offset + length);
            offset += length;
            if let wait @ (Wait::Cancelled | Wait::Close) = self.send(segment).await {
                return wait;
            }
            let Some(pause) = pause.filter(|p| !p.is_zero() && index + 1 < count) else {
                continue;
            };
            if let wait @ (Wait::Cancelled | Wait::Close) =
                self.wait(Some(Instant::now() + pause)).await
            {
                return wait;
            }
        }
        Wait::Done
    }

    /// Writes one segment under the bandwidth limit and the reset threshold.
    async fn send(&mut self, mut segment: Bytes) -> Wait {
        while !segment.is_empty() {
            let mut take = segment.len();
            if let Some(rate) = self.active.rate_bytes_per_second {
                let burst = (rate / BANDWIDTH_SLICES_PER_SECOND).max(1) as usize;
                take = take.min(burst);
                if let wait @ (Wait::Cancelled | Wait::Close) =
                    self.wait(Some(self.next_send)).await
                {
                    return wait;
                }
            }
            let reset_at = self.active.reset_after_bytes;
            if let Some(limit) = reset_at {
                let allowed = limit.saturating_sub(self.forwarded_since_roll);
                if allowed == 0 {
                    self.shared.counters.resets.fetch_add(1, Ordering::Relaxed);
                    self.shared.reset();
                    return Wait::Cancelled;
                }
                take = take.min(allowed as usize);
            }

            let piece = segment.split_to(take);
            let written = tokio::select! {
                _ = self.shared.cancel.cancelled() => return Wait::Cancelled,
                written = self.destination.write_all(&piece) => written,
            };
            if written.is_err() {
                self.shared.cancel.cancel();
                return Wait::Cancelled;
            }
            self.forwarded_since_roll += take as u64;
            self.shared.counters.add_bytes(self.direction, take as u64);

            if let Some(rate) = self.active.rate_bytes_per_second {
                let cost = Duration::from_secs_f64(take as f64 / rate as f64);
                self.next_send = self.next_send.max(Instant::now()) + cost;
            }
            if reset_at.is_some_and(|limit| self.forwarded_since_roll >= limit) {
                self.shared.counters.resets.fetch_add(1, Ordering::Relaxed);
                self.shared.reset();
                return Wait::Cancelled;
            }
        }
        Wait::Done
    }

    /// Waits until `until` (forever when `None`), a change of the fault set, or the end
    /// of the connection.
    async fn wait(&mut self, until: Option<Instant>) -> Wait {
        if until.is_some_and(|u| u <= Instant::now()) {
            return Wait::Done;
        }
        tokio::select! {
            _ = self.shared.cancel.cancelled() => Wait::Cancelled,
            _ = sleep_until_opt(until) => Wait::Done,
            changed = self.faults.changed() => match changed {
                Ok(()) => { self.refresh(); Wait::Changed }
                Err(_) => Wait::Cancelled,
            },
        }
    }

    /// Passes the sender's close on, after the slow-close delay.
    async fn close(mut self) {
        if let Some(delay) = self.active.slow_close {
            tokio::select! {
                _ = self.shared.cancel.cancelled() => return self.finish_cancelled(),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let _ = self.destination.shutdown().await;
    }

    /// Closes the whole connection because a timeout fault's `close_after_ms` passed.
    fn close_timed_out(self) {
        self.shared
            .counters
            .timeouts
            .fetch_add(1, Ordering::Relaxed);
        self.shared.cancel.cancel();
    }

    fn finish_cancelled(self) {
        if self.shared.reset.load(Ordering::SeqCst) {
            // A zero linger makes the final close send RST. Forgetting the write half
            // skips its FIN, which would otherwise reach the peer before the reset.
            let _ = self.destination.as_ref().set_zero_linger();
            self.destination.forget();
        }
    }
}

async fn sleep_until_opt(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until.into()).await,
        None => std::future::pending().await,
    }
}
