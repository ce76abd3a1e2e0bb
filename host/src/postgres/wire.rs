//! The load workers' own PostgreSQL connection: prepared statements written straight to
//! the socket by the worker that runs them.
//!
//! tokio-postgres hands every statement to a connection task over a channel and returns
//! the response over a new channel per request. At a single-row read's rate that client
//! work takes CPU from the server under test, and the executor fell to half of pgbench's
//! rate. A load worker needs only a subset of the protocol: log in, prepare statements,
//! bind integer and text parameters, and learn whether each statement succeeded. Its rows
//! are discarded. [`LoadConnection`] speaks that subset over one socket owned by the
//! worker, with `postgres-protocol` encoding and decoding the messages, and one write and
//! usually one read per statement, as pgbench does in its prepared mode.
//!
//! Parameters go as text, so the server infers their types when it prepares a statement.
//! Setup, metrics and the failure scenarios keep using tokio-postgres.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{
    BACKEND_KEY_DATA_TAG, BIND_COMPLETE_TAG, COMMAND_COMPLETE_TAG, DATA_ROW_TAG, DataRowBody,
    EMPTY_QUERY_RESPONSE_TAG, ErrorResponseBody, Message, NO_DATA_TAG, NOTICE_RESPONSE_TAG,
    NOTIFICATION_RESPONSE_TAG, PARAMETER_STATUS_TAG, PARSE_COMPLETE_TAG, READY_FOR_QUERY_TAG,
    ROW_DESCRIPTION_TAG,
};
use postgres_protocol::message::frontend;
use thiserror::Error;
use tokio_postgres::error::SqlState;

use crate::postgres::cluster::{CONNECT_TIMEOUT, ClusterSpec};
use crate::postgres::shadow::SHADOW_MARKER_SETTING;
use crate::postgres::sql_report::SqlErrorClass;
use crate::postgres::transport::{Transport, block_on};
use crate::postgres::workload::SqlParam;

/// Receives the rows of a statement.
type RowSink<'a> = &'a mut (dyn FnMut(&DataRowBody) -> Result<(), WireError> + Send);

/// Transaction status byte of `ReadyForQuery` outside a transaction block.
const IDLE: u8 = b'I';

/// Failure of a load connection or of one of its statements.
#[derive(Debug, Error)]
pub(crate) enum WireError {
    /// Connecting, reading or writing failed, or the server closed the connection.
    #[error("connection to the PostgreSQL server failed")]
    Io(#[from] io::Error),
    /// The server returned an error.
    #[error("PostgreSQL reported {severity} {code}: {message}")]
    Server {
        severity: String,
        code: String,
        message: String,
    },
    /// The server asked for a way of logging in that the load client does not speak.
    #[error(
        "the server asked for {0} authentication; load connections support trust, password, md5 and SCRAM-SHA-256"
    )]
    UnsupportedAuthentication(&'static str),
    /// The server asked for a password and the cluster spec has none.
    #[error("the server asked for a password and the cluster has none: set `password`")]
    MissingPassword,
    /// The server sent a message that makes no sense at this point.
    #[error("unexpected message from the PostgreSQL server while {0}")]
    Protocol(&'static str),
    /// A cancelled statement left the connection in an unknown state.
    #[error("the connection was abandoned in the middle of a statement")]
    Abandoned,
}

impl WireError {
    /// Class under which the load report counts this failure.
    pub(crate) fn class(&self) -> SqlErrorClass {
        match self {
            // A blocking receive that reached its timeout; connecting and logging in
            // report `TimedOut` instead.
            WireError::Io(error) if error.kind() == io::ErrorKind::WouldBlock => {
                SqlErrorClass::ClientTimeout
            }
            WireError::Server { code, .. } => {
                SqlErrorClass::of_state(Some(&SqlState::from_code(code)))
            }
            _ => SqlErrorClass::Connection,
        }
    }

    fn server(body: &ErrorResponseBody) -> WireError {
        let mut severity = String::new();
        let mut code = String::new();
        let mut message = String::new();
        let mut fields = body.fields();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => severity = value,
                b'C' => code = value,
                b'M' => message = value,
                _ => {}
            }
        }
        WireError::Server {
            severity,
            code,
            message,
        }
    }

    /// Returns whether the server ends the session after this error.
    fn ends_session(&self) -> bool {
        match self {
            WireError::Server { severity, .. } => severity == "FATAL" || severity == "PANIC",
            _ => true,
        }
    }
}

/// One logged-in session with the statements a worker prepared on it.
pub(crate) struct LoadConnection {
    transport: Transport,
    output: BytesMut,
    input: BytesMut,
    /// Transaction status from the last `ReadyForQuery`.
    status: u8,
    /// Set while a statement waits for its response, and left set when that wait is
    /// cancelled, so that the connection is not used again.
    in_flight: bool,
    /// Set once the stream broke or the server ended the session.
    broken: bool,
}

impl LoadConnection {
    /// Connects to `spec` as `application_name` and logs in.
    ///
    /// A host that starts with `/` is a directory holding the server's Unix socket, as
    /// for libpq.
    pub(crate) async fn connect(
        spec: &ClusterSpec,
        application_name: &str,
    ) -> Result<LoadConnection, WireError> {
        let transport = tokio::time::timeout(CONNECT_TIMEOUT, Transport::open_async(spec))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let mut connection = LoadConnection::over(transport);
        tokio::time::timeout(CONNECT_TIMEOUT, connection.log_in(spec, application_name))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "login timed out"))??;
        Ok(connection)
    }

    /// Connects like [`Self::connect`] over a blocking socket, for a worker on a thread of
    /// its own. A receive that waits longer than `timeout` fails, and its error's class
    /// is [`SqlErrorClass::ClientTimeout`].
    pub(crate) fn connect_blocking(
        spec: &ClusterSpec,
        application_name: &str,
        timeout: Duration,
    ) -> Result<LoadConnection, WireError> {
        let transport = Transport::open_blocking(spec, CONNECT_TIMEOUT)?;
        transport.set_receive_timeout(CONNECT_TIMEOUT)?;
        let mut connection = LoadConnection::over(transport);
        block_on(connection.log_in(spec, application_name)).map_err(|error| match error {
            WireError::Io(error) if error.kind() == io::ErrorKind::WouldBlock => {
                io::Error::new(io::ErrorKind::TimedOut, "login timed out").into()
            }
            error => error,
        })?;
        connection.transport.set_receive_timeout(timeout)?;
        Ok(connection)
    }

    fn over(transport: Transport) -> LoadConnection {
        LoadConnection {
            transport,
            output: BytesMut::with_capacity(1024),
            input: BytesMut::with_capacity(8192),
            status: IDLE,
            in_flight: false,
            broken: false,
        }
    }

    /// Returns whether the connection can run further statements.
    pub(crate) fn is_usable(&self) -> bool {
        !self.broken && !self.in_flight
    }

    /// Returns whether the last statement left a transaction block open, failed or not.
    pub(crate) fn in_transaction(&self) -> bool {
        self.status != IDLE
    }

    /// Returns whether the server is an Umbra shadow, from its `umbra.shadow` setting.
    pub(crate) async fn is_shadow(&mut self) -> Result<bool, WireError> {
        // The setting name is a constant of ours, so it can go into the literal as is.
        let sql = format!("SELECT current_setting('{SHADOW_MARKER_SETTING}', true)");
        let value = self.simple_query_value(&sql).await?;
        Ok(value.as_deref() == Some("on"))
    }

    /// Prepares each `(name, sql)` pair as a named statement, in one round trip.
    pub(crate) async fn prepare(&mut self, statements: &[(&str, &str)]) -> Result<(), WireError> {
        for &(name, sql) in statements {
            frontend::parse(name, sql, std::iter::empty(), &mut self.output)?;
        }
        frontend::sync(&mut self.output);
        self.round_trip("preparing statements", None).await?;
        Ok(())
    }

    /// Runs the prepared statement `name` with `params`, each drawn from `random`, and
    /// discards its rows.
    pub(crate) async fn execute(
        &mut self,
        name: &str,
        params: &[SqlParam],
        random: &mut fastrand::Rng,
    ) -> Result<(), WireError> {
        let bound = frontend::bind(
            "",
            name,
            std::iter::empty(),
            params,
            |param, buf| {
                write_text(param, random, buf);
                Ok(IsNull::No)
            },
            std::iter::empty(),
            &mut self.output,
        );
        if bound.is_err() {
            self.output.clear();
            return Err(WireError::Protocol("binding parameters"));
        }
        frontend::execute("", 0, &mut self.output)?;
        frontend::sync(&mut self.output);
        self.round_trip("running a statement", None).await
    }

    /// Sends `sql` as a simple query, outside the prepared statements.
    pub(crate) async fn simple_query(&mut self, sql: &str) -> Result<(), WireError> {
        frontend::query(sql, &mut self.output)?;
        self.round_trip("running a query", None).await
    }

    /// Ends the session politely, so that the server logs no broken connection.
    pub(crate) async fn close(mut self) {
        if self.is_usable() {
            frontend::terminate(&mut self.output);
            let _ = self.transport.write_all(&self.output).await;
            self.transport.shutdown().await;
        }
    }

    async fn log_in(
        &mut self,
        spec: &ClusterSpec,
        application_name: &str,
    ) -> Result<(), WireError> {
        let parameters = [
            ("user", spec.user.as_str()),
            ("database", spec.database.as_str()),
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(parameters, &mut self.output)?;
        self.flush().await?;

        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.read_message().await? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    let password = password(spec)?;
                    frontend::password_message(password, &mut self.output)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(spec.user.as_bytes(), password(spec)?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.output)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = false;
                    while let Some(mechanism) = mechanisms.next()? {
                        offered |= mechanism == SCRAM_SHA_256;
                    }
                    if !offered {
                        return Err(WireError::UnsupportedAuthentication("SASL"));
                    }
                    let exchange = ScramSha256::new(password(spec)?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        exchange.message(),
                        &mut self.output,
                    )?;
                    scram = Some(exchange);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let exchange = scram.as_mut().ok_or(WireError::Protocol("logging in"))?;
                    exchange.update(body.data())?;
                    frontend::sasl_response(exchange.message(), &mut self.output)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let exchange = scram.as_mut().ok_or(WireError::Protocol("logging in"))?;
                    exchange.finish(body.data())?;
                    continue;
                }
                Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                    return Err(WireError::UnsupportedAuthentication("GSSAPI"));
                }
                Message::AuthenticationSspi => {
                    return Err(WireError::UnsupportedAuthentication("SSPI"));
                }
                Message::AuthenticationKerberosV5 | Message::AuthenticationScmCredential => {
                    return Err(WireError::UnsupportedAuthentication("legacy"));
                }
                Message::ErrorResponse(body) => return Err(self.fail(&body)),
                _ => return Err(WireError::Protocol("logging in")),
            }
            self.flush().await?;
        }

        // Parameter statuses and the key for cancel requests follow; neither is needed.
        self.in_flight = true;
        self.finish("starting the session", None).await
    }

    /// Sends the buffered messages, then reads up to `ReadyForQuery`, passing every row
    /// to `row` when given and returning the first error the server reported.
    async fn round_trip(
        &mut self,
        step: &'static str,
        row: Option<RowSink<'_>>,
    ) -> Result<(), WireError> {
        if !self.is_usable() {
            self.output.clear();
            return Err(WireError::Abandoned);
        }
        self.in_flight = true;
        self.flush().await?;
        self.finish(step, row).await
    }

    async fn finish(
        &mut self,
        step: &'static str,
        mut row: Option<RowSink<'_>>,
    ) -> Result<(), WireError> {
        let mut failure = None;
        loop {
            let wants_rows = row.is_some() && failure.is_none();
            if let Some(status) = skip_plain(&mut self.input, wants_rows) {
                self.status = status;
                self.in_flight = false;
                return failure.map_or(Ok(()), Err);
            }
            let message = match Message::parse(&mut self.input) {
                Ok(Some(message)) => message,
                Ok(None) => {
                    self.fill().await?;
                    continue;
                }
                Err(error) => {
                    self.broken = true;
                    return Err(error.into());
                }
            };
            match message {
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    self.in_flight = false;
                    return failure.map_or(Ok(()), Err);
                }
                Message::ErrorResponse(body) => {
                    let error = self.fail(&body);
                    if self.broken {
                        return Err(error);
                    }
                    failure.get_or_insert(error);
                }
                Message::DataRow(body) => {
                    if let Some(row) = row.as_mut()
                        && failure.is_none()
                    {
                        row(&body)?;
                    }
                }
                _ => {
                    self.broken = true;
                    return Err(WireError::Protocol(step));
                }
            }
        }
    }

    /// Runs `sql` as a simple query and returns the first column of its first row as
    /// text, `None` for no row or SQL NULL.
    async fn simple_query_value(&mut self, sql: &str) -> Result<Option<String>, WireError> {
        frontend::query(sql, &mut self.output)?;
        let mut value = None;
        let mut first = true;
        let mut keep_first = |row: &DataRowBody| {
            if std::mem::take(&mut first) {
                value = first_column(row);
            }
            Ok(())
        };
        self.round_trip("reading a setting", Some(&mut keep_first))
            .await?;
        Ok(value)
    }

    fn fail(&mut self, body: &ErrorResponseBody) -> WireError {
        let error = WireError::server(body);
        if error.ends_session() {
            self.broken = true;
        }
        error
    }

    async fn flush(&mut self) -> Result<(), WireError> {
        let written = self.transport.write_all(&self.output).await;
        self.output.clear();
        if written.is_err() {
            self.broken = true;
        }
        Ok(written?)
    }

    async fn read_message(&mut self) -> Result<Message, WireError> {
        loop {
            match Message::parse(&mut self.input) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => self.fill().await?,
                Err(error) => {
                    self.broken = true;
                    return Err(error.into());
                }
            }
        }
    }

    /// Reads what the socket has into the input buffer.
    async fn fill(&mut self) -> Result<(), WireError> {
        match self.transport.read_into(&mut self.input).await {
            Ok(0) => {
                self.broken = true;
                Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
            }
            Ok(_) => Ok(()),
            Err(error) => {
                self.broken = true;
                Err(error.into())
            }
        }
    }
}

/// Consumes the complete messages at the front of `input` that need no decoding:
/// acknowledgements, row descriptions, notices, and data rows unless `rows` are
/// wanted. Returns the transaction status when it reached `ReadyForQuery`.
///
/// A statement's response is mostly such messages, and skipping them by their header
/// saves decoding each into its own buffer.
fn skip_plain(input: &mut BytesMut, rows: bool) -> Option<u8> {
    loop {
        let header = input.get(..5)?;
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let total = usize::try_from(length).ok()?.checked_add(1)?;
        // A length below 4 is malformed; `Message::parse` reports it.
        if length < 4 || input.len() < total {
            return None;
        }
        match header[0] {
            READY_FOR_QUERY_TAG if length == 5 => {
                let status = input[5];
                input.advance(total);
                return Some(status);
            }
            PARSE_COMPLETE_TAG
            | BIND_COMPLETE_TAG
            | COMMAND_COMPLETE_TAG
            | EMPTY_QUERY_RESPONSE_TAG
            | NO_DATA_TAG
            | ROW_DESCRIPTION_TAG
            | NOTICE_RESPONSE_TAG
            | NOTIFICATION_RESPONSE_TAG
            | PARAMETER_STATUS_TAG
            | BACKEND_KEY_DATA_TAG => input.advance(total),
            DATA_ROW_TAG if !rows => input.advance(total),
            _ => return None,
        }
    }
}

fn password(spec: &ClusterSpec) -> Result<&[u8], WireError> {
    spec.password
        .as_deref()
        .map(str::as_bytes)
        .ok_or(WireError::MissingPassword)
}

/// Writes the text form of a value drawn from `param`.
fn write_text(param: &SqlParam, random: &mut fastrand::Rng, buf: &mut BytesMut) {
    match param {
        SqlParam::UniformInt { min, max } => {
            let _ = write!(buf, "{}", random.i32(*min..=(*max).max(*min)));
        }
        SqlParam::Int { value } => {
            let _ = write!(buf, "{value}");
        }
        SqlParam::Text { value } => buf.extend_from_slice(value.as_bytes()),
    }
}

/// Returns the first column of a row as text, `None` for SQL NULL or no column.
fn first_column(row: &DataRowBody) -> Option<String> {
    let range = row.ranges().next().ok()??;
    let value = row.buffer().get(range?)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes one message: `tag`, its length and `body`.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn skip_plain_consumes_whole_response() {
        let mut input = BytesMut::new();
        input.extend_from_slice(&message(BIND_COMPLETE_TAG, b""));
        input.extend_from_slice(&message(DATA_ROW_TAG, &[0, 1, 0, 0, 0, 1, b'7']));
        input.extend_from_slice(&message(COMMAND_COMPLETE_TAG, b"SELECT 1\0"));
        input.extend_from_slice(&message(READY_FOR_QUERY_TAG, b"T"));
        input.extend_from_slice(b"Z\0");

        assert_eq!(skip_plain(&mut input, false), Some(b'T'));
        assert_eq!(&input[..], b"Z\0");
    }

    #[test]
    fn skip_plain_stops_at_decoded_messages() {
        let error = message(b'E', b"SERROR\0C40P01\0Mdeadlock detected\0\0");
        let mut input = BytesMut::from(&error[..]);
        assert_eq!(skip_plain(&mut input, false), None);
        assert_eq!(input.len(), error.len());

        let row = message(DATA_ROW_TAG, &[0, 0]);
        let mut input = BytesMut::from(&row[..]);
        assert_eq!(skip_plain(&mut input, true), None);
        assert_eq!(input.len(), row.len());

        let ready = message(READY_FOR_QUERY_TAG, b"I");
        let mut input = BytesMut::from(&ready[..5]);
        assert_eq!(skip_plain(&mut input, false), None);
        assert_eq!(input.len(), 5);
    }

    #[test]
    fn parameters_are_written_as_text() {
        let mut random = fastrand::Rng::with_seed(7);
        let mut buf = BytesMut::new();
        write_text(&SqlParam::Int { value: -42 }, &mut random, &mut buf);
        assert_eq!(&buf[..], b"-42");

        buf.clear();
        write_text(
            &SqlParam::UniformInt { min: 5, max: 5 },
            &mut random,
            &mut buf,
        );
        assert_eq!(&buf[..], b"5");

        buf.clear();
        let text = SqlParam::Text {
            value: "naïve".to_owned(),
        };
        write_text(&text, &mut random, &mut buf);
        assert_eq!(&buf[..], "naïve".as_bytes());
    }

    #[test]
    fn server_errors_are_classed_by_sqlstate() {
        let error = |code: &str| WireError::Server {
            severity: "ERROR".to_owned(),
            code: code.to_owned(),
            message: String::new(),
        };
        assert_eq!(error("40P01").class(), SqlErrorClass::Deadlock);
        assert_eq!(error("57014").class(), SqlErrorClass::StatementTimeout);
        assert_eq!(error("53300").class(), SqlErrorClass::TooManyConnections);
        assert_eq!(error("42P01").class(), SqlErrorClass::OtherSql);
        assert_eq!(
            WireError::MissingPassword.class(),
            SqlErrorClass::Connection
        );
    }
}
