//! Sandbox limits shared by the WebAssembly and Rhai back-ends: deadlines,
//! memory caps, and rate-limited capture of guest output.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Resource limits applied to every policy call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Wall-clock deadline of one decision, in milliseconds.
    pub deadline_ms: u64,
    /// Maximum linear memory of a WebAssembly policy instance, in bytes.
    pub memory_limit_bytes: usize,
    /// Maximum Rhai operations per decision (a second guard besides the deadline).
    pub rhai_max_operations: u64,
    /// Guest log lines (host `log` calls, stdout, stderr, Rhai `print`) let
    /// through to the host's log per policy per second; the rest are counted.
    pub log_lines_per_second: u32,
    /// Keep one instance per policy and reuse it across calls (fast), or
    /// instantiate afresh for every call (no state carried between calls).
    /// An instance that failed is always discarded.
    pub reuse_instances: bool,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            deadline_ms: 5,
            memory_limit_bytes: 16 << 20,
            rhai_max_operations: 1_000_000,
            log_lines_per_second: 20,
            reuse_instances: true,
        }
    }
}

impl SandboxLimits {
    /// Maximum deadline accepted, because a decision runs on the control loop.
    pub const MAX_DEADLINE_MS: u64 = 60_000;

    /// Checks the limits and returns one message per problem.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.deadline_ms == 0 || self.deadline_ms > Self::MAX_DEADLINE_MS {
            problems.push(format!(
                "sandbox.deadline_ms: `{}` is out of range, expected 1 to {}",
                self.deadline_ms,
                Self::MAX_DEADLINE_MS
            ));
        }
        let max_memory = super::wasm::MAX_MEMORY_LIMIT_BYTES;
        if self.memory_limit_bytes < (1 << 20) || self.memory_limit_bytes > max_memory {
            problems.push(format!(
                "sandbox.memory_limit_bytes: `{}` is out of range, expected 1048576 (1 MiB) to {max_memory}",
                self.memory_limit_bytes
            ));
        }
        if self.rhai_max_operations == 0 {
            problems.push(
                "sandbox.rhai_max_operations: `0` allows no work, expected at least 1".to_owned(),
            );
        }
        problems
    }

    /// Returns the per-call deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// Maximum bytes of guest stdout and stderr kept per call; the rest is
/// discarded and counted, so a flooding guest cannot grow host memory.
const OUTPUT_CAPACITY_BYTES: usize = 16 << 10;

/// Maximum length of one guest log line; longer lines are truncated.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 1024;

/// A bounded buffer behind a guest's stdout or stderr.
#[derive(Debug, Clone, Default)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<OutputBuffer>>,
}

#[derive(Debug, Default)]
struct OutputBuffer {
    bytes: Vec<u8>,
    dropped_bytes: u64,
}

impl CapturedOutput {
    /// Appends `data`, keeping at most [`OUTPUT_CAPACITY_BYTES`].
    pub(crate) fn append(&self, data: &[u8]) {
        let mut buffer = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = OUTPUT_CAPACITY_BYTES.saturating_sub(buffer.bytes.len());
        let kept = data.len().min(room);
        buffer.bytes.extend_from_slice(&data[..kept]);
        buffer.dropped_bytes += (data.len() - kept) as u64;
    }

    /// Removes and returns the captured bytes and the count of bytes dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut buffer = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let dropped = std::mem::take(&mut buffer.dropped_bytes);
        (std::mem::take(&mut buffer.bytes), dropped)
    }
}

mod wasi_stream {
    //! `CapturedOutput` as a WASI output stream. Writes do not block or fail.
    //! Past capacity the bytes are dropped and counted, so a flood costs the
    //! guest only its own time.

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
    use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

    use super::CapturedOutput;

    impl IsTerminal for CapturedOutput {
        fn is_terminal(&self) -> bool {
            false
        }
    }

    impl StdoutStream for CapturedOutput {
        fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
            Box::new(self.clone())
        }

        fn p2_stream(&self) -> Box<dyn OutputStream> {
            Box::new(self.clone())
        }
    }

    #[wasmtime_wasi::async_trait]
    impl Pollable for CapturedOutput {
        async fn ready(&mut self) {}
    }

    impl OutputStream for CapturedOutput {
        fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
            self.append(&bytes);
            Ok(())
        }

        fn flush(&mut self) -> StreamResult<()> {
            Ok(())
        }

        fn check_write(&mut self) -> StreamResult<usize> {
            Ok(64 << 10)
        }
    }

    impl tokio::io::AsyncWrite for CapturedOutput {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.append(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

/// Rate limiter for one policy's log lines: a sliding one-second window.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    policy: String,
    per_second: u32,
    recent: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    sent: VecDeque<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(policy: &str, per_second: u32) -> Self {
        Self {
            policy: policy.to_owned(),
            per_second,
            recent: Mutex::new(LimiterState::default()),
        }
    }

    /// Logs one guest line at `level` unless the policy is over its rate; the
    /// first line let through after suppression reports how many were dropped.
    pub(crate) fn emit(&self, level: tracing::Level, line: &str) {
        let now = Instant::now();
        let mut state = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while state
            .sent
            .front()
            .is_some_and(|sent| now.duration_since(*sent) >= Duration::from_secs(1))
        {
            state.sent.pop_front();
        }
        if state.sent.len() >= self.per_second as usize {
            state.suppressed += 1;
            return;
        }
        state.sent.push_back(now);
        let suppressed = std::mem::take(&mut state.suppressed);
        drop(state);

        let line = truncate(line, MAX_LOG_LINE_BYTES);
        let policy = self.policy.as_str();
        match level {
            tracing::Level::ERROR => tracing::error!(policy, suppressed, "guest: {line}"),
            tracing::Level::WARN => tracing::warn!(policy, suppressed, "guest: {line}"),
            tracing::Level::INFO => tracing::info!(policy, suppressed, "guest: {line}"),
            _ => tracing::debug!(policy, suppressed, "guest: {line}"),
        }
    }

    /// Logs captured stdout or stderr bytes line by line.
    pub(crate) fn emit_output(&self, stream: &str, bytes: &[u8], dropped_bytes: u64) {
        if bytes.is_empty() && dropped_bytes == 0 {
            return;
        }
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            self.emit(tracing::Level::INFO, &format!("{stream}: {line}"));
        }
        if dropped_bytes > 0 {
            self.emit(
                tracing::Level::WARN,
                &format!("{stream}: {dropped_bytes} bytes dropped past the {OUTPUT_CAPACITY_BYTES}-byte capture limit"),
            );
        }
    }
}

/// Returns at most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_drops_past_capacity() {
        let output = CapturedOutput::default();
        output.append(&vec![b'x'; OUTPUT_CAPACITY_BYTES + 10]);
        let (bytes, dropped) = output.take();
        assert_eq!(bytes.len(), OUTPUT_CAPACITY_BYTES);
        assert_eq!(dropped, 10);
        assert_eq!(output.take().0.len(), 0);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
