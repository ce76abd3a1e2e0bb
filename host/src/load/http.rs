//! HTTP/1.1 keep-alive client: one connection per worker, reconnected after a failure.
//!
//! The client is built on hyper's low-level `client::conn::http1`. It does not spawn a
//! task for the connection: the worker drives the connection future itself while it
//! waits for a response, so a request costs no cross-task wake-up and a finished worker
//! leaves nothing running behind it.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::load::report::{ErrorClass, Outcome};
use crate::load::target::{PathPicker, RequestTemplate};

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// An open connection: the handle that sends requests and the future that performs the
/// I/O for them.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Pin<Box<Driver>>,
}

/// Result of polling the connection and the response together.
enum Exchange {
    Finished(Result<u16, hyper::Error>),
    DriverStopped,
}

/// One worker's HTTP client.
pub(crate) struct HttpClient {
    template: Arc<RequestTemplate>,
    picker: PathPicker,
    connection: Option<Connection>,
}

impl HttpClient {
    /// Creates a client that has not connected yet. `worker` shifts the start of the
    /// path rotation so that workers spread over the paths.
    pub(crate) fn new(template: Arc<RequestTemplate>, worker: usize) -> Self {
        let picker = template.path_picker(worker);
        HttpClient {
            template,
            picker,
            connection: None,
        }
    }

    /// Per-request timeout of the target.
    pub(crate) fn timeout(&self) -> Duration {
        self.template.timeout
    }

    /// Sends one request and reads the whole response body, failing with a timeout at
    /// `deadline`. Connects first when there is no usable connection.
    pub(crate) async fn send(&mut self, deadline: Instant) -> Outcome {
        let request = self.template.request(self.picker.next_index());

        match tokio::time::timeout_at(deadline.into(), self.exchange(request)).await {
            Ok(outcome) => outcome,
            Err(_elapsed) => {
                // The response may still arrive on this connection, so it cannot carry
                // the next request.
                self.connection = None;
                Outcome::Failed(ErrorClass::Timeout)
            }
        }
    }

    /// Closes the connection, if any.
    pub(crate) fn disconnect(&mut self) {
        self.connection = None;
    }

    async fn exchange(&mut self, request: hyper::Request<Full<Bytes>>) -> Outcome {
        if let Err(class) = self.ensure_connected().await {
            return Outcome::Failed(class);
        }
        let Some(connection) = self.connection.as_mut() else {
            return Outcome::Failed(ErrorClass::Connect);
        };

        let response = connection.sender.send_request(request);
        let mut response = pin!(read_response(response));
        let step = poll_with_driver(&mut connection.driver, &mut response).await;

        let result = match step {
            Exchange::Finished(result) => result,
            Exchange::DriverStopped => {
                // The connection ended, possibly right after a complete response that
                // announced `Connection: close`. Dropping it releases whatever the
                // response future still waits for, so the future finishes at once.
                self.connection = None;
                response.await
            }
        };

        match result {
            Ok(status) => Outcome::Status(status),
            Err(error) => {
                debug!(addr = %self.template.addr, %error, "request failed");
                self.connection = None;
                Outcome::Failed(classify(&error))
            }
        }
    }

    /// Makes sure `self.connection` is open and ready for a request. A connection that
    /// the server closed while it was idle is replaced without counting an error.
    async fn ensure_connected(&mut self) -> Result<(), ErrorClass> {
        if let Some(connection) = self.connection.as_mut() {
            if connection.ready().await {
                return Ok(());
            }
            debug!(addr = %self.template.addr, "idle connection closed, reconnecting");
            self.connection = None;
        }

        let connection = connect(&self.template).await?;
        self.connection = Some(connection);
        Ok(())
    }
}

impl Connection {
    /// Polls the driver once so that it notices a close by the server, then waits until
    /// the connection can take a request. Returns false when the connection is unusable.
    async fn ready(&mut self) -> bool {
        let ready = self.sender.ready();
        tokio::select! {
            biased;
            _ = self.driver.as_mut() => false,
            ready = ready => ready.is_ok(),
        }
    }
}

async fn connect(template: &RequestTemplate) -> Result<Connection, ErrorClass> {
    let stream = TcpStream::connect(template.addr).await.map_err(|error| {
        debug!(addr = %template.addr, %error, "connect failed");
        ErrorClass::Connect
    })?;
    // Requests are small and latency-sensitive: send them without Nagle's delay.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(addr = %template.addr, %error, "failed to set TCP_NODELAY");
    }

    let (sender, driver) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| {
            debug!(addr = %template.addr, %error, "HTTP/1.1 handshake failed");
            ErrorClass::Connect
        })?;
    Ok(Connection {
        sender,
        driver: Box::pin(driver),
    })
}

/// Awaits the response head, then reads and discards the body. Returns the status code.
async fn read_response(
    response: impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) -> Result<u16, hyper::Error> {
    let response = response.await?;
    let status = response.status().as_u16();

    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

/// Polls the connection driver and the response together until the response is complete
/// or the driver stops. The driver goes first, so a response that arrived in this wake-up
/// is seen in the same poll.
async fn poll_with_driver<F>(driver: &mut Pin<Box<Driver>>, response: &mut Pin<&mut F>) -> Exchange
where
    F: Future<Output = Result<u16, hyper::Error>>,
{
    tokio::select! {
        biased;
        _ = driver.as_mut() => Exchange::DriverStopped,
        result = response.as_mut() => Exchange::Finished(result),
    }
}

fn classify(error: &hyper::Error) -> ErrorClass {
    if error.is_parse() || error.is_parse_status() || error.is_user() {
        ErrorClass::Protocol
    } else {
        ErrorClass::Connection
    }
}
