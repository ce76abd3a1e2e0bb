//! Sockets under a load connection: a Tokio socket for the open model's workers, or a
//! blocking one owned by a thread for the closed model's.
//!
//! The open model shares a runtime between a dispatcher and its workers, so its sockets
//! are Tokio's. Each statement then costs a send, a receive that finds nothing yet, a
//! wait in `epoll` and the receive of the response. A closed-model worker does nothing but
//! wait for its connection, as a pgbench client does, so it runs on a thread of its own
//! with a blocking socket: one send and one receive per statement. The protocol code is
//! the same for both; it is async, and on a blocking socket its futures finish on their
//! first poll, which [`block_on`] does.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::postgres::cluster::ClusterSpec;

/// Maximum bytes read by one blocking receive. A response to a load statement is far
/// smaller, and longer ones take several receives.
const READ_CHUNK: usize = 4096;

pub(crate) trait AsyncSocket: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncSocket for T {}

/// The socket of one load connection.
pub(crate) enum Transport {
    /// Driven by the Tokio runtime.
    Async(Box<dyn AsyncSocket>),
    /// Blocking, with a receive timeout; only for a thread of its own.
    Blocking(BlockingSocket),
}

pub(crate) enum BlockingSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// Path of the server's Unix socket when `spec.host` is a directory, as for libpq.
fn unix_path(spec: &ClusterSpec) -> Option<String> {
    spec.host
        .starts_with('/')
        .then(|| format!("{}/.s.PGSQL.{}", spec.host, spec.port))
}

impl Transport {
    /// Connects a Tokio socket to `spec`.
    pub(crate) async fn open_async(spec: &ClusterSpec) -> io::Result<Transport> {
        if let Some(path) = unix_path(spec) {
            let stream = tokio::net::UnixStream::connect(path).await?;
            return Ok(Transport::Async(Box::new(stream)));
        }
        let stream = tokio::net::TcpStream::connect((spec.host.as_str(), spec.port)).await?;
        // Every statement is one small write followed by a wait for the response.
        stream.set_nodelay(true)?;
        Ok(Transport::Async(Box::new(stream)))
    }

    /// Connects a blocking socket to `spec`, trying each address of the host for at most
    /// `timeout`.
    pub(crate) fn open_blocking(spec: &ClusterSpec, timeout: Duration) -> io::Result<Transport> {
        if let Some(path) = unix_path(spec) {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            return Ok(Transport::Blocking(BlockingSocket::Unix(stream)));
        }
        let mut last_error = None;
        for address in (spec.host.as_str(), spec.port).to_socket_addrs()? {
            match std::net::TcpStream::connect_timeout(&address, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(Transport::Blocking(BlockingSocket::Tcp(stream)));
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address")))
    }

    /// Makes a blocking receive give up after `timeout` with `WouldBlock`. Tokio sockets
    /// have their timeouts in the caller.
    pub(crate) fn set_receive_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        match self {
            Transport::Async(_) => Ok(()),
            Transport::Blocking(BlockingSocket::Tcp(stream)) => stream.set_read_timeout(timeout),
            Transport::Blocking(BlockingSocket::Unix(stream)) => stream.set_read_timeout(timeout),
        }
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Async(socket) => socket.write_all(bytes).await,
            Transport::Blocking(BlockingSocket::Tcp(stream)) => stream.write_all(bytes),
            Transport::Blocking(BlockingSocket::Unix(stream)) => stream.write_all(bytes),
        }
    }

    /// Appends what the socket has to `input` and returns how many bytes came; 0 means
    /// the server closed the connection.
    pub(crate) async fn read_into(&mut self, input: &mut BytesMut) -> io::Result<usize> {
        let stream: &mut dyn Read = match self {
            Transport::Async(socket) => return socket.read_buf(input).await,
            Transport::Blocking(BlockingSocket::Tcp(stream)) => stream,
            Transport::Blocking(BlockingSocket::Unix(stream)) => stream,
        };
        let start = input.len();
        input.resize(start + READ_CHUNK, 0);
        let read = stream.read(&mut input[start..]);
        input.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = match self {
            Transport::Async(socket) => socket.shutdown().await,
            Transport::Blocking(BlockingSocket::Tcp(stream)) => {
                stream.shutdown(std::net::Shutdown::Both)
            }
            Transport::Blocking(BlockingSocket::Unix(stream)) => {
                stream.shutdown(std::net::Shutdown::Both)
            }
        };
    }
}

/// Runs `future` on the calling thread. Meant for connections on a blocking socket, whose
/// futures finish on their first poll; anything else is polled again after a yield.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}
