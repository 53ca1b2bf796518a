//! HTTP ingest endpoint for a streaming run: clients POST rows, the server makes them durable in
//! a local write-ahead log (WAL), one checksummed record per request holding the rows in the
//! form they arrived in (JSON lines, or an Arrow IPC stream), and only then answers `200`. The
//! streaming driver reads the log by offset, so the stream can be replayed from it. The log is
//! a directory of segments ([`wal`](super::wal), which describes the record format): the server
//! starts a new one past a size, and segments wholly before a committed checkpoint are deleted.
//!
//! # Requests
//! - `POST /ingest` with JSON lines (`application/x-ndjson`, `application/jsonl`,
//!   `application/json`, `text/plain` or no content type): every non-empty line must be a JSON
//!   object. The lines are appended as sent, each ending in `\n`, as one JSON-lines record;
//!   empty lines are dropped.
//! - `POST /ingest` with `application/vnd.apache.arrow.stream`: an Arrow IPC stream. It is
//!   decoded whole first — its schema and every batch must read, nothing may follow its end,
//!   and once the run knows its schema ([`IngestServer::set_schema`]) every batch must cast to
//!   it (columns matched by name; see [`conform`]) — and then appended byte for byte as one
//!   Arrow record, which the driver reads back as record batches, with no detour through JSON.
//! - `GET /health`: `200 ok`.
//!
//! A `200` carries `{"accepted": N, "offset": END}`, END being the log offset after the append.
//! Errors are plain text: `400` (a bad row, stream or schema; nothing of the request is appended),
//! `404`, `405`, `408` (the body stalled), `413` (body over the limit), `415` (unknown content
//! type), `500` (the log could not be written) and `503` with `Retry-After: 1` (backpressure,
//! below).
//!
//! # Durability
//! A request is validated whole before anything is written, then its bytes go to the log in one
//! `write_all` and are `fdatasync`ed before the answer: an acknowledged row survives `kill -9`
//! and power loss. One fsync runs at a time and covers every append written before it started,
//! so requests arriving together share one (group commit); the driver reads the log only up to
//! the last fsynced append ([`IngestServer::durable_end`]). A failed fsync cuts the log back to
//! that point, answers `500` to every request it covered, and refuses appends until a restart.
//! A crash between the write and the answer can leave rows that were never acknowledged; a
//! client that retries then sends them twice (at-least-once). A crash in the middle of a write
//! leaves a torn last record, which the next start cuts off; a damaged record anywhere else
//! stops the start with an error naming its segment and offset. The log is locked
//! (its `LOCK` file) while a server runs, as a second writer would break both guarantees. A new
//! segment's directory entry is fsynced before anything is appended to it.
//!
//! # Backpressure
//! The driver reports how far it has read ([`IngestServer::set_read_offset`]); while the log
//! holds more than `max_unread_bytes` past that, requests get `503` and nothing is appended, so
//! a stalled driver cannot let the log grow without bound.
//!
//! # Connections and limits
//! The HTTP layer ([`http`](super::http)) caps connections, closes idle ones, and keeps
//! accepting through a shortage of file descriptors. Bodies are checked and appended on a few
//! blocking threads ([`IngestConfig::handlers`]) side by side, appends taking turns; a body
//! that stalls for [`IngestConfig::idle_timeout`] gets `408`. A request holds its body (at most
//! `max_body_bytes`) and the record made of it in memory, and an Arrow body one decoded batch
//! at a time. Should the server thread ever end
//! unbidden, the streaming run stops ([`IngestServer::is_serving`]) rather than stay up deaf.

use std::fmt;
use std::net::SocketAddr;
use std::panic;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::array::Array;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response};

use super::decode::conform;
use super::http::{answer, HttpError, HttpLimits, HttpServer};
use super::wal::{frame, RecordKind, WalError, WalWriter, MAX_BODY_BYTES};

/// Content types whose body is JSON lines; no content type at all counts too.
const JSON_LINES_TYPES: [&str; 4] = [
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
    "text/plain",
];

/// Content type of an Arrow IPC stream body.
const ARROW_STREAM_TYPE: &str = "application/vnd.apache.arrow.stream";

/// How much of a refused body is still read and thrown away so the client gets the answer
/// rather than a connection reset (closing a socket with unread data resets it).
const DRAIN_LIMIT: u64 = 1 << 20;

/// Settings of an [`IngestServer`].
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Address to listen on, e.g. `127.0.0.1:0` (port 0 picks a free port, see
    /// [`IngestServer::local_addr`]).
    pub addr: String,
    /// The write-ahead log's directory: created if missing (with its parents), appended to
    /// otherwise.
    pub wal: PathBuf,
    /// A new segment is started once the newest one has passed this many bytes.
    pub segment_bytes: u64,
    /// Threads checking request bodies and appending them side by side (at least 1).
    pub handlers: usize,
    /// Connections open at once; see [`HttpLimits::max_connections`].
    pub max_connections: usize,
    /// A connection is closed when no request head arrives for this long (an idle keep-alive
    /// connection too); a request whose body stalls this long gets `408`.
    pub idle_timeout: Duration,
    /// Request bodies larger than this get `413`.
    pub max_body_bytes: u64,
    /// Backpressure: while the log holds more than this many bytes that the driver has not read
    /// yet, requests get `503` with `Retry-After: 1` and nothing is appended. An Arrow body whose
    /// rows would take more memory than both this and `max_body_bytes` once cast to the run's
    /// schema (a dictionary-encoded column can make them far larger than the body) gets `413`.
    pub max_unread_bytes: u64,
    /// The run's schema, if it has one already: an Arrow body whose batches do not cast to it
    /// gets `400`. A run that takes its schema from its first rows gives it later
    /// ([`IngestServer::set_schema`]).
    pub schema: Option<SchemaRef>,
}

/// Why an [`IngestServer`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The log cannot be opened or appended to as it is: locked by another server, written by
    /// an older version, or damaged.
    #[error(transparent)]
    Log(#[from] WalError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// State shared between the server and its handle.
#[derive(Debug, Default)]
struct Shared {
    read_offset: AtomicU64,
    /// The log's durable end: set after each fsynced append. Backpressure is judged by it
    /// without waiting for an append, and the driver reads no further.
    log_end: AtomicU64,
    rows_accepted: AtomicU64,
    /// Fsyncs of the log's appends so far.
    syncs: AtomicU64,
    /// `POST /ingest` answers so far, by outcome.
    accepted: AtomicU64,
    refused: AtomicU64,
    backpressure: AtomicU64,
    failed: AtomicU64,
    /// The run's schema, once it has one: Arrow bodies must fit it.
    schema: OnceLock<SchemaRef>,
}

/// What an [`IngestServer`] has done since it started, for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// `POST /ingest` requests answered `200`.
    pub accepted: u64,
    /// Requests refused for what they sent (`4xx`: a bad row, type or size, a stalled body).
    pub refused: u64,
    /// Requests refused because the stream was behind (`503`).
    pub backpressure: u64,
    /// Requests that failed on the server's side (`500`: the log could not be written).
    pub failed: u64,
    /// Rows acknowledged.
    pub rows: u64,
    /// Fsyncs of the write-ahead log (concurrent requests share them).
    pub fsyncs: u64,
}

/// A running ingest endpoint; see the module docs for the protocol. Stopped when dropped.
pub struct IngestServer {
    wal: PathBuf,
    shared: Arc<Shared>,
    http: HttpServer,
}

impl fmt::Debug for IngestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestServer")
            .field("addr", &self.http.local_addr())
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}

impl IngestServer {
    /// Opens (and if need be repairs) the log, binds the address and starts the server thread;
    /// returns at once.
    pub fn start(config: IngestConfig) -> Result<IngestServer, IngestError> {
        let wal = WalWriter::open(&config.wal, config.segment_bytes)?;
        let shared = Arc::new(Shared::default());
        shared.log_end.store(wal.end(), Ordering::Relaxed);
        if let Some(schema) = config.schema.clone() {
            let _ = shared.schema.set(schema);
        }
        let wal_end = wal.end();
        let worker = Arc::new(Worker {
            wal: Mutex::new(wal),
            sync_turn: Mutex::new(()),
            shared: shared.clone(),
            max_body_bytes: config.max_body_bytes,
            max_unread_bytes: config.max_unread_bytes,
            idle_timeout: config.idle_timeout,
        });
        let limits = HttpLimits {
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout,
            blocking_threads: config.handlers,
        };
        let http = HttpServer::start("ingest", &config.addr, limits, move |request| {
            worker.clone().handle(request)
        })?;
        tracing::info!(
            addr = %http.local_addr(),
            wal = %config.wal.display(),
            wal_end,
            "ingest server listening"
        );
        Ok(IngestServer {
            wal: config.wal,
            shared,
            http,
        })
    }

    /// The address the server is bound to (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The run's schema is known (the first time this is called): from now on an Arrow body
    /// whose batches do not cast to it gets `400`, rather than stopping the run when it is read.
    pub fn set_schema(&self, schema: SchemaRef) {
        let _ = self.shared.schema.set(schema);
    }

    /// The driver reports how far it has read the log (a log offset), for backpressure.
    pub fn set_read_offset(&self, offset: u64) {
        self.shared.read_offset.store(offset, Ordering::Relaxed);
    }

    /// Whether the server is still taking connections (see [`HttpServer::is_serving`]): the
    /// run should stop rather than stay up deaf.
    pub fn is_serving(&self) -> bool {
        self.http.is_serving()
    }

    /// The log offset up to which the log is durable: everything before it was fsynced
    /// (or was there when the server started). Bytes after it may be cut back, so the driver
    /// reads no further.
    pub fn durable_end(&self) -> u64 {
        self.shared.log_end.load(Ordering::Acquire)
    }

    /// Requests, rows and fsyncs since the server started.
    pub fn stats(&self) -> IngestStats {
        let s = &self.shared;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        IngestStats {
            accepted: get(&s.accepted),
            refused: get(&s.refused),
            backpressure: get(&s.backpressure),
            failed: get(&s.failed),
            rows: get(&s.rows_accepted),
            fsyncs: get(&s.syncs),
        }
    }

    /// Stops accepting connections, lets requests in flight finish (for up to 10 s) and waits
    /// for the server thread. Dropping the server does the same.
    pub fn stop(self) {
        self.http.stop();
    }
}

/// How a request body is read.
#[derive(Debug, Clone, Copy)]
enum Format {
    JsonLines,
    ArrowStream,
}

/// A refusal: the status and the text to answer with.
type Refusal = (u16, String);

/// What the connections share: the log and the limits.
struct Worker {
    wal: Mutex<WalWriter>,
    /// Held by the one sync running at a time; requests waiting for it are covered together.
    sync_turn: Mutex<()>,
    shared: Arc<Shared>,
    max_body_bytes: u64,
    max_unread_bytes: u64,
    idle_timeout: Duration,
}

impl Worker {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        match (path, request.method()) {
            ("/ingest", &Method::POST) => {}
            ("/ingest", _) => return not_allowed("POST"),
            ("/health", &Method::GET | &Method::HEAD) => return answer(200, "ok".into()),
            ("/health", _) => return not_allowed("GET, HEAD"),
            _ => return answer(404, "not found: POST rows to /ingest\n".into()),
        }
        let result = self.clone().ingest(request).await;
        let outcome = match &result {
            Ok(_) => &self.shared.accepted,
            Err((503, _)) => &self.shared.backpressure,
            Err((status, _)) if *status >= 500 => &self.shared.failed,
            Err(_) => &self.shared.refused,
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok((rows, offset)) => {
                let body = serde_json::json!({ "accepted": rows, "offset": offset });
                let mut response = answer(200, body.to_string());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err((status, text)) => {
                let mut response = answer(status, text);
                let headers = response.headers_mut();
                match status {
                    503 => {
                        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    }
                    408 => {
                        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    _ => {}
                }
                response
            }
        }
    }

    /// Handles `POST /ingest`; returns the rows accepted and the log's new length.
    async fn ingest(self: Arc<Self>, request: Request<Incoming>) -> Result<(u64, u64), Refusal> {
        let (parts, mut body) = request.into_parts();
        let format = match self.admit(&parts.headers, body.size_hint().exact()) {
            Ok(format) => format,
            Err(refusal) => {
                drain(&mut body, self.idle_timeout).await;
                return Err(refusal);
            }
        };
        let bytes = read_body(&mut body, self.max_body_bytes, self.idle_timeout).await?;
        // Parsing and the fsync block: off the thread that serves every connection.
        let worker = self.clone();
        tokio::task::spawn_blocking(move || worker.append(format, &bytes))
            .await
            .unwrap_or_else(|e| Err((500, format!("the ingest handler failed: {e}\n"))))
    }

    /// What can be refused before reading the body: its type, its declared length, and
    /// backpressure.
    fn admit(&self, headers: &HeaderMap, length: Option<u64>) -> Result<Format, Refusal> {
        let format = body_format(headers)?;
        let limit = self.max_body_bytes;
        if length.is_some_and(|len| len > limit) {
            return Err(too_large(limit));
        }
        let end = self.shared.log_end.load(Ordering::Relaxed);
        let read = self.shared.read_offset.load(Ordering::Relaxed);
        let unread = end.saturating_sub(read);
        if unread > self.max_unread_bytes {
            return Err((
                503,
                format!(
                    "the stream is behind by {unread} bytes (more than {}); retry later\n",
                    self.max_unread_bytes
                ),
            ));
        }
        Ok(format)
    }

    /// Checks a whole body and appends it to the log as one record.
    fn append(&self, format: Format, body: &[u8]) -> Result<(u64, u64), Refusal> {
        let (record, rows) = match format {
            Format::JsonLines => {
                let (lines, rows) = checked_json_lines(body)?;
                (framed(RecordKind::JsonLines, &lines)?, rows)
            }
            Format::ArrowStream => {
                let limit = self.max_body_bytes.max(self.max_unread_bytes);
                let rows = checked_arrow(body, self.shared.schema.get(), limit)?;
                (framed(RecordKind::ArrowStream, body)?, rows)
            }
        };
        let written = {
            let mut wal = self.wal();
            if rows == 0 {
                return Ok((0, wal.durable));
            }
            let written = wal.write(&record);
            // A segment's roll fsyncs it, moving the durable end.
            self.publish(&wal);
            written
        };
        match written.and_then(|end| self.sync_to(end).map(|()| end)) {
            Ok(offset) => {
                self.shared.rows_accepted.fetch_add(rows, Ordering::Relaxed);
                Ok((rows, offset))
            }
            Err(msg) => {
                tracing::error!("{msg}");
                Err((500, format!("{msg}\n")))
            }
        }
    }

    /// The log, even if a handler panicked holding it (its methods keep it consistent).
    fn wal(&self) -> std::sync::MutexGuard<'_, WalWriter> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the driver and backpressure how far the log is durable.
    fn publish(&self, wal: &WalWriter) {
        self.shared.log_end.store(wal.durable, Ordering::Release);
    }

    /// Returns once the log is durable up to `end` (group commit): one fsync at a time, each
    /// covering every append written before it started, so requests that arrive together
    /// share one.
    fn sync_to(&self, end: u64) -> Result<(), String> {
        let _turn = self.sync_turn.lock().unwrap_or_else(|p| p.into_inner());
        let (file, target, path) = {
            let wal = self.wal();
            if wal.durable >= end {
                return Ok(());
            }
            if let Some(refusal) = wal.refusal() {
                return Err(refusal);
            }
            (wal.file.clone(), wal.end(), wal.path.clone())
        };
        // Outside the log's lock: appends go on meanwhile, to be covered by the next sync.
        let synced = file.sync_data();
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        let mut wal = self.wal();
        match synced {
            Ok(()) => {
                wal.durable = wal.durable.max(target);
                self.publish(&wal);
                Ok(())
            }
            Err(e) => Err(wal.sync_failed(&format!(
                "{}: cannot fsync the write-ahead log: {e}",
                path.display()
            ))),
        }
    }
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = answer(405, format!("method not allowed; use {allow}\n"));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn too_large(limit: u64) -> Refusal {
    (
        413,
        format!("the request body is larger than {limit} bytes\n"),
    )
}

fn body_format(headers: &HeaderMap) -> Result<Format, Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|value| {
            let value = String::from_utf8_lossy(value.as_bytes());
            // Parameters such as `charset` do not change how the body is read.
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if content_type.is_empty() || JSON_LINES_TYPES.contains(&content_type.as_str()) {
        Ok(Format::JsonLines)
    } else if content_type == ARROW_STREAM_TYPE {
        Ok(Format::ArrowStream)
    } else {
        Err((
            415,
            format!(
                "unsupported content type {content_type:?}; send JSON lines ({}) or {ARROW_STREAM_TYPE}\n",
                JSON_LINES_TYPES.join(", ")
            ),
        ))
    }
}

/// The next piece of the body: `Ok(None)` at its end, `Err` with the refusal when it fails or
/// nothing arrives for `idle`.
async fn next_data(body: &mut Incoming, idle: Duration) -> Result<Option<Bytes>, Refusal> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                let waited = idle.as_millis();
                let text = format!("the request body stalled: nothing arrived for {waited} ms\n");
                return Err((408, text));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err((400, format!("cannot read the request body: {e}\n"))),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry no rows.
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// Reads the body, refusing it past `limit` bytes (a chunked body has no length up front).
async fn read_body(body: &mut Incoming, limit: u64, idle: Duration) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    while let Some(data) = next_data(body, idle).await? {
        if (out.len() + data.len()) as u64 > limit {
            drain(body, idle).await;
            return Err(too_large(limit));
        }
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// Reads and drops up to [`DRAIN_LIMIT`] more bytes of a refused body.
async fn drain(body: &mut Incoming, idle: Duration) {
    let mut left = DRAIN_LIMIT;
    while let Ok(Some(data)) = next_data(body, idle).await {
        left = left.saturating_sub(data.len() as u64);
        if left == 0 {
            break;
        }
    }
}

/// Checks that every non-empty line is a JSON object; returns those lines, each ending in
/// `\n`, and how many there are.
fn checked_json_lines(body: &[u8]) -> Result<(Vec<u8>, u64), Refusal> {
    let mut out = Vec::with_capacity(body.len() + 1);
    let mut rows = 0;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let problem = match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => None,
            Ok(other) => Some(format!("expected a JSON object, found {}", kind(&other))),
            Err(e) => Some(parse_problem(&e)),
        };
        if let Some(problem) = problem {
            return Err((
                400,
                format!(
                    "line {} of the request: {problem}; nothing from this request was written\n",
                    i + 1
                ),
            ));
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        rows += 1;
    }
    Ok((out, rows))
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The parse error with its column; its "line 1" would only confuse, as a row is one line.
fn parse_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("column {}: {message}", e.column()),
        None => text,
    }
}

/// `payload` as a record of the log, refused if it is too large for one.
fn framed(kind: RecordKind, payload: &[u8]) -> Result<Vec<u8>, Refusal> {
    if payload.len() as u64 > MAX_BODY_BYTES {
        return Err(too_large(MAX_BODY_BYTES));
    }
    Ok(frame(kind, payload))
}

/// Checks an Arrow IPC stream whole: it decodes, every batch reads, nothing follows its end,
/// and every batch casts to the run's `schema` if there is one, taking at most `max_bytes` of
/// memory then. Returns its rows.
fn checked_arrow(body: &[u8], schema: Option<&SchemaRef>, max_bytes: u64) -> Result<u64, Refusal> {
    // The body comes from the network: a decoder bug it triggers must cost this request, not
    // the server thread.
    panic::catch_unwind(panic::AssertUnwindSafe(|| {
        check_arrow(body, schema, max_bytes)
    }))
    .unwrap_or_else(|_| {
        Err((
            400,
            "the Arrow IPC stream is malformed (its decoder failed)\n".to_string(),
        ))
    })
}

fn check_arrow(body: &[u8], schema: Option<&SchemaRef>, max_bytes: u64) -> Result<u64, Refusal> {
    let bad_stream = |e: ArrowError| (400, format!("cannot decode the Arrow IPC stream: {e}\n"));
    let mut reader = StreamReader::try_new(body, None).map_err(bad_stream)?;
    let mut rows = 0u64;
    let mut bytes = 0u64;
    for batch in &mut reader {
        let batch = batch.map_err(bad_stream)?;
        if let Some(schema) = schema {
            let cast = conform(&batch, schema).map_err(|why| {
                (
                    400,
                    format!(
                        "the Arrow rows do not fit the stream's schema: {why}; nothing from this request was written\n"
                    ),
                )
            })?;
            bytes += cast
                .columns()
                .iter()
                .map(|c| c.get_array_memory_size() as u64)
                .sum::<u64>();
            if bytes > max_bytes {
                return Err((
                    413,
                    format!(
                        "the Arrow rows take more than {max_bytes} bytes of memory once cast to the stream's schema; send fewer rows per request\n"
                    ),
                ));
            }
        }
        rows += batch.num_rows() as u64;
    }
    let after = reader.get_ref().len();
    if after > 0 {
        return Err((
            400,
            format!(
                "{after} bytes follow the end of the Arrow IPC stream; send one stream per request\n"
            ),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Read, Write};
    use std::path::Path;

    use super::*;
    use crate::chunk::Chunk;
    use crate::decode::Decoder;
    use crate::wal::{segment_name, segments, WalReader, HEADER_BYTES};
    use quiver_data::io::Format as DataFormat;
    use quiver_exec::policy::OnMalformed;

    use std::collections::HashMap;
    use std::net::TcpStream;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    use super::super::http::tests::read_all;

    use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::StreamWriter;

    /// A fresh directory per test, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ingest-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config(wal: &Path) -> IngestConfig {
        IngestConfig {
            addr: "127.0.0.1:0".into(),
            wal: wal.to_path_buf(),
            max_body_bytes: 1 << 20,
            max_unread_bytes: 1 << 30,
            segment_bytes: 1 << 30,
            handlers: 4,
            max_connections: 64,
            idle_timeout: Duration::from_secs(30),
            schema: None,
        }
    }

    /// The whole log: its segments one after the other.
    fn log_bytes(dir: &Path) -> Vec<u8> {
        segments(dir)
            .unwrap()
            .iter()
            .flat_map(|(_, p)| fs::read(p).unwrap())
            .collect()
    }

    /// Bytes of a record's header.
    const H: u64 = HEADER_BYTES as u64;

    /// The log's records, read back: their kind and payload.
    fn log_records(dir: &Path) -> Vec<(RecordKind, Vec<u8>)> {
        records_of(&log_bytes(dir))
    }

    /// The records `bytes` consist of, which must be whole and sound.
    fn records_of(bytes: &[u8]) -> Vec<(RecordKind, Vec<u8>)> {
        let scan = quiver_durable::records::scan(bytes);
        assert_eq!(scan.end, quiver_durable::records::End::Clean);
        scan.records
            .iter()
            .map(|r| {
                let (kind, body) = crate::wal::unprefix(r.payload).unwrap();
                let at = r.offset as usize;
                assert_eq!(frame(kind, body), bytes[at..at + HEADER_BYTES + body.len()]);
                (kind, body.to_vec())
            })
            .collect()
    }

    /// The lines of the log's records, which must all be JSON lines.
    fn log_text(dir: &Path) -> String {
        log_records(dir)
            .into_iter()
            .map(|(kind, payload)| {
                assert_eq!(kind, RecordKind::JsonLines);
                String::from_utf8(payload).unwrap()
            })
            .collect()
    }

    /// The record holding `payload` as JSON lines.
    fn json_record(payload: &str) -> Vec<u8> {
        frame(RecordKind::JsonLines, payload.as_bytes())
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The `(accepted, offset)` of a `200`.
        fn accepted(&self) -> (u64, u64) {
            assert_eq!(self.status, 200, "{}", self.body);
            let v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
            (
                v["accepted"].as_u64().unwrap(),
                v["offset"].as_u64().unwrap(),
            )
        }
    }

    /// Sends one request over a fresh connection; `extra` holds raw header lines.
    fn send(addr: SocketAddr, method: &str, path: &str, extra: &[&str], body: &[u8]) -> Answer {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        if !extra.iter().any(|h| h.starts_with("Transfer-Encoding")) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        for h in extra {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(body).unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Answer {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn post(addr: SocketAddr, content_type: Option<&str>, body: &[u8]) -> Answer {
        let ct = content_type.map(|ct| format!("Content-Type: {ct}"));
        let extra: Vec<&str> = ct.iter().map(String::as_str).collect();
        send(addr, "POST", "/ingest", &extra, body)
    }

    fn ndjson(addr: SocketAddr, body: &str) -> Answer {
        post(addr, Some("application/x-ndjson"), body.as_bytes())
    }

    #[test]
    fn json_lines_are_appended_byte_for_byte_in_request_order() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();

        let first = "{\"a\":1}\n{\"a\": 2, \"s\": \"x y\"}\n";
        let (n, off) = ndjson(addr, first).accepted();
        assert_eq!((n, off), (2, H + first.len() as u64));
        assert_eq!(log_bytes(&wal).len() as u64, off);

        // No final newline: one is added.
        let (n, off) = post(addr, None, b"{\"b\":[1,2]}").accepted();
        assert_eq!(n, 1);
        assert_eq!(log_bytes(&wal).len() as u64, off);

        // Empty lines are dropped; other content types also mean JSON lines.
        let (n, off) = post(
            addr,
            Some("application/jsonl; charset=utf-8"),
            b"\n{\"c\":3}\n\n  \n{\"c\":4}\n",
        )
        .accepted();
        assert_eq!(n, 2);
        let (n, off2) = post(addr, Some("text/plain"), b"{\"d\":null}\n").accepted();
        assert_eq!(n, 1);
        assert!(off2 > off);
        let (n, same) = post(addr, Some("application/json"), b"\n\n").accepted();
        assert_eq!((n, same), (0, off2));

        let expected =
            format!("{first}{{\"b\":[1,2]}}\n{{\"c\":3}}\n{{\"c\":4}}\n{{\"d\":null}}\n");
        assert_eq!(log_text(&wal), expected);
        // One record per request that had rows.
        assert_eq!(log_records(&wal).len(), 4);
        assert_eq!(off2, 4 * H + expected.len() as u64);
        assert_eq!(server.stats().rows, 6);
        server.stop();
    }

    #[test]
    fn a_bad_line_is_refused_naming_it_and_nothing_of_the_request_is_written() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();
        ndjson(addr, "{\"ok\":1}\n").accepted();
        let before = log_bytes(&wal);

        let a = ndjson(addr, "{\"a\":1}\n\n{\"a\":2,}\n{\"a\":3}\n");
        assert_eq!(a.status, 400);
        assert!(a.body.contains("line 3"), "{}", a.body);
        assert!(a.body.contains("column"), "{}", a.body);

        let a = ndjson(addr, "{\"a\":1}\n[1,2]\n");
        assert_eq!(a.status, 400);
        assert!(a.body.contains("line 2"), "{}", a.body);
        assert!(a.body.contains("an array"), "{}", a.body);

        assert_eq!(log_bytes(&wal), before);
        assert_eq!(server.stats().rows, 1);
    }

    fn sample_batches() -> (Arc<Schema>, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = |ids: Vec<Option<i64>>, xs: Vec<Option<f64>>, names: Vec<Option<&str>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(Float64Array::from(xs)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .unwrap()
        };
        let batches = vec![
            batch(
                vec![Some(1), None, Some(-7)],
                vec![Some(1.5), Some(-0.25), None],
                vec![Some("a"), None, Some("quote \" and\nnewline")],
            ),
            batch(vec![Some(i64::MAX)], vec![Some(1e-300)], vec![Some("ü")]),
        ];
        (schema, batches)
    }

    fn ipc(schema: &Schema, batches: &[RecordBatch]) -> Vec<u8> {
        let mut writer = StreamWriter::try_new(Vec::new(), schema).unwrap();
        for b in batches {
            writer.write(b).unwrap();
        }
        writer.finish().unwrap();
        writer.into_inner().unwrap()
    }

    /// Every row of the log, read back as the driver reads it: one micro-batch of `schema`.
    fn read_back(wal: &Path, schema: &SchemaRef) -> (Vec<Chunk>, RecordBatch) {
        let mut reader = WalReader::open(wal, None).unwrap();
        let mut chunks = Vec::new();
        loop {
            let more = reader.poll(1000).unwrap();
            if more.is_empty() {
                break;
            }
            chunks.extend(more);
        }
        let decoder = Decoder::new(schema.clone(), DataFormat::Jsonl, None, b',');
        let (batch, bad) = decoder.decode(&chunks, OnMalformed::Fail).unwrap();
        assert!(bad.is_empty());
        (chunks, batch.unwrap())
    }

    #[test]
    fn an_arrow_stream_is_kept_as_its_ipc_bytes_that_read_back_to_the_same_rows() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();
        let (schema, batches) = sample_batches();
        let body = ipc(&schema, &batches);

        let (n, off) = post(addr, Some(ARROW_STREAM_TYPE), &body).accepted();
        assert_eq!(n, 4);
        assert_eq!(off, H + body.len() as u64);
        assert_eq!(log_bytes(&wal).len() as u64, off);
        // The body as it arrived, byte for byte.
        assert_eq!(
            log_records(&wal),
            vec![(RecordKind::ArrowStream, body.clone())]
        );

        // Read back as record batches, with no detour through JSON.
        let (chunks, got) = read_back(&wal, &schema);
        let [Chunk::Arrow(rows)] = &chunks[..] else {
            panic!("{chunks:?}");
        };
        assert_eq!((rows.offset, rows.rows, rows.batches.len()), (0, 4, 2));
        assert_eq!(rows.batches, batches);
        let want = concat_batches(&schema, &batches).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.column(0).null_count(), 1);

        // Garbage, a cut stream and bytes after the stream's end are refused and append
        // nothing.
        let a = post(addr, Some(ARROW_STREAM_TYPE), b"definitely not arrow");
        assert_eq!(a.status, 400);
        assert!(a.body.contains("Arrow IPC"), "{}", a.body);
        let mut cut = body.clone();
        cut.truncate(cut.len() - 30);
        assert_eq!(post(addr, Some(ARROW_STREAM_TYPE), &cut).status, 400);
        let mut trailing = body.clone();
        trailing.extend_from_slice(b"{\"a\":1}\n");
        let a = post(addr, Some(ARROW_STREAM_TYPE), &trailing);
        assert_eq!(a.status, 400);
        assert!(a.body.contains("8 bytes follow the end"), "{}", a.body);
        assert_eq!(log_bytes(&wal).len() as u64, off);
        assert_eq!(server.stats().rows, 4);
    }

    /// JSON lines and Arrow bodies side by side: each a record of its kind, read back in order
    /// as one micro-batch of the run's schema.
    #[test]
    fn json_and_arrow_requests_read_back_in_order_as_one_micro_batch() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();
        let (schema, batches) = sample_batches();
        ndjson(addr, "{\"id\":10,\"x\":0.5,\"name\":\"j1\"}\n").accepted();
        post(addr, Some(ARROW_STREAM_TYPE), &ipc(&schema, &batches[..1])).accepted();
        ndjson(addr, "{\"id\":11}\n{\"id\":12,\"name\":\"j3\"}\n").accepted();
        post(addr, Some(ARROW_STREAM_TYPE), &ipc(&schema, &batches[1..])).accepted();
        let kinds: Vec<RecordKind> = log_records(&wal).into_iter().map(|(k, _)| k).collect();
        use RecordKind::{ArrowStream as A, JsonLines as J};
        assert_eq!(kinds, [J, A, J, A]);
        let (chunks, got) = read_back(&wal, &schema);
        assert_eq!(chunks.len(), 4);
        let ids: Vec<Option<i64>> = got
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(
            ids,
            vec![
                Some(10),
                Some(1),
                None,
                Some(-7),
                Some(11),
                Some(12),
                Some(i64::MAX)
            ]
        );
        let names = got
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "j1");
        assert_eq!(names.value(5), "j3");
        assert_eq!(names.value(6), "ü");
    }

    /// Once the run has a schema, an Arrow body must cast to it: refused with `400` naming the
    /// column otherwise, before anything is written.
    #[test]
    fn an_arrow_body_that_does_not_fit_the_run_schema_is_refused() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();
        let (schema, batches) = sample_batches();
        server.set_schema(schema.clone());

        let other = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("extra", DataType::Int64, true),
        ]));
        let b = |ids: Vec<&str>| {
            RecordBatch::try_new(
                other.clone(),
                vec![
                    Arc::new(StringArray::from(ids.clone())),
                    Arc::new(Int64Array::from(vec![1; ids.len()])),
                ],
            )
            .unwrap()
        };
        let a = post(addr, Some(ARROW_STREAM_TYPE), &ipc(&other, &[b(vec!["1"])]));
        assert_eq!(a.status, 400);
        assert!(a.body.contains("`extra`"), "{}", a.body);
        // Ids as text cast to the run's Int64 when they are numbers ...
        let text_ids = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let t = |ids: Vec<&str>| {
            let batch =
                RecordBatch::try_new(text_ids.clone(), vec![Arc::new(StringArray::from(ids))])
                    .unwrap();
            ipc(&text_ids, &[batch])
        };
        let a = post(addr, Some(ARROW_STREAM_TYPE), &t(vec!["5", "oops"]));
        assert_eq!(a.status, 400);
        assert!(
            a.body.contains("column `id`") && a.body.contains("oops"),
            "{}",
            a.body
        );
        assert_eq!(log_bytes(&wal).len(), 0);
        assert_eq!(
            post(addr, Some(ARROW_STREAM_TYPE), &t(vec!["5", "6"]))
                .accepted()
                .0,
            2
        );
        assert_eq!(
            post(addr, Some(ARROW_STREAM_TYPE), &ipc(&schema, &batches))
                .accepted()
                .0,
            4
        );
        let stats = server.stats();
        assert_eq!((stats.accepted, stats.refused, stats.rows), (2, 2, 6));
    }

    #[test]
    fn a_log_written_by_an_older_version_is_refused_at_start() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        fs::create_dir_all(&wal).unwrap();
        fs::write(wal.join("00000000000000000000.jsonl"), "{\"a\":1}\n").unwrap();
        let err = IngestServer::start(config(&wal)).unwrap_err();
        assert!(
            matches!(err, IngestError::Log(WalError::OldFormat { .. })),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("the write-ahead log in {}", wal.display()))
                && msg.contains("older Quiver")
                && msg.contains("--stop-at-end"),
            "{msg}"
        );
        assert!(segments(&wal).unwrap().is_empty());
    }

    #[test]
    fn wrong_paths_methods_content_types_and_sizes_are_refused() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(IngestConfig {
            max_body_bytes: 2000,
            ..config(&wal)
        })
        .unwrap();
        let addr = server.local_addr();

        let a = send(addr, "GET", "/health", &[], b"");
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        assert_eq!(send(addr, "POST", "/nope", &[], b"{}").status, 404);
        assert_eq!(send(addr, "GET", "/", &[], b"").status, 404);

        let a = send(addr, "GET", "/ingest", &[], b"");
        assert_eq!(a.status, 405);
        assert_eq!(a.header("Allow"), Some("POST"));
        assert_eq!(send(addr, "PUT", "/ingest", &[], b"{}").status, 405);

        let a = post(addr, Some("text/csv"), b"a,b\n1,2\n");
        assert_eq!(a.status, 415);
        assert!(a.body.contains("text/csv"), "{}", a.body);

        // Over the limit by Content-Length ...
        let row = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(100));
        let big = row.repeat(30);
        assert_eq!(ndjson(addr, &big).status, 413);
        // ... and by what arrives when there is none (chunked).
        let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
        let a = send(
            addr,
            "POST",
            "/ingest",
            &["Transfer-Encoding: chunked"],
            chunked.as_bytes(),
        );
        assert_eq!(a.status, 413);
        // A chunked body within the limit is fine.
        let small = format!("{:x}\r\n{row}\r\n0\r\n\r\n", row.len());
        let a = send(
            addr,
            "POST",
            "/ingest",
            &["Transfer-Encoding: chunked"],
            small.as_bytes(),
        );
        assert_eq!(a.accepted().0, 1);

        assert_eq!(log_text(&wal), row);
    }

    #[test]
    fn arrow_rows_that_swell_past_the_limits_once_cast_are_refused() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(IngestConfig {
            max_body_bytes: 4000,
            max_unread_bytes: 4000,
            ..config(&wal)
        })
        .unwrap();
        let addr = server.local_addr();
        // One long string, referred to by every row of a dictionary-encoded column: a small
        // body, but every row holds the whole string once cast to the run's plain strings.
        let dict = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("s", dict, false)]));
        let long = "x".repeat(1000);
        let column: arrow::array::DictionaryArray<arrow::datatypes::Int8Type> =
            std::iter::repeat_n(long.as_str(), 50).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
        let body = ipc(&schema, &[batch]);
        assert!(body.len() < 4000);
        // The run's schema is the body's own: kept as it is.
        server.set_schema(schema.clone());
        assert_eq!(post(addr, Some(ARROW_STREAM_TYPE), &body).accepted().0, 50);
        drop(server);
        // A run that has a schema of plain strings already gives it at start.
        let server = IngestServer::start(IngestConfig {
            max_body_bytes: 4000,
            max_unread_bytes: 4000,
            schema: Some(Arc::new(Schema::new(vec![Field::new(
                "s",
                DataType::Utf8,
                true,
            )]))),
            ..config(&dir.0.join("wal2"))
        })
        .unwrap();
        let a = post(server.local_addr(), Some(ARROW_STREAM_TYPE), &body);
        assert_eq!(a.status, 413, "{}", a.body);
        assert_eq!(log_bytes(&dir.0.join("wal2")).len(), 0);
    }

    #[test]
    fn a_request_declaring_an_absurd_body_does_not_bring_the_server_down() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(
            b"POST /ingest HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000000000\r\n\r\n{}",
        )
        .unwrap();
        drop(conn);
        // Had the request been dropped, draining its body would have aborted this process.
        thread::sleep(Duration::from_millis(200));
        assert_eq!(ndjson(addr, "{\"a\":1}\n").accepted().0, 1);
    }

    #[test]
    fn a_stalled_body_gets_408_and_its_connection_closed() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(IngestConfig {
            idle_timeout: Duration::from_millis(300),
            max_connections: 1,
            ..config(&wal)
        })
        .unwrap();
        let addr = server.local_addr();

        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled
            .write_all(
                b"POST /ingest HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"a\":1}\n",
            )
            .unwrap();
        let answer = read_all(&mut stalled, Duration::from_secs(10)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("stalled"), "{answer}");
        assert_eq!(log_bytes(&wal).len(), 0);
        // The connection was closed, freeing the only slot.
        assert_eq!(ndjson(addr, "{\"a\":2}\n").accepted().0, 1);
        assert_eq!(log_text(&wal), "{\"a\":2}\n");
    }

    fn worker(wal: &Path, segment_bytes: u64) -> Worker {
        Worker {
            wal: Mutex::new(WalWriter::open(wal, segment_bytes).unwrap()),
            sync_turn: Mutex::new(()),
            shared: Arc::default(),
            max_body_bytes: 1 << 20,
            max_unread_bytes: 1 << 30,
            idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_fsync_covers_every_append_written_before_it() {
        let dir = TempDir::new();
        let w = worker(&dir.0.join("wal"), 1 << 30);
        let ends: Vec<u64> = ["{\"a\":1}\n", "{\"a\":2}\n", "{\"a\":3}\n"]
            .iter()
            .map(|l| w.wal().write(&json_record(l)).unwrap())
            .collect();
        let r = H + 8;
        assert_eq!(ends, [r, 2 * r, 3 * r]);
        // Written, not durable: the driver may not read any of it yet.
        assert_eq!(w.shared.log_end.load(Ordering::Acquire), 0);
        w.sync_to(ends[0]).unwrap();
        assert_eq!(w.shared.syncs.load(Ordering::Relaxed), 1);
        assert_eq!(w.shared.log_end.load(Ordering::Acquire), 3 * r);
        // The later appends were covered by that one fsync.
        w.sync_to(ends[2]).unwrap();
        w.sync_to(ends[1]).unwrap();
        assert_eq!(w.shared.syncs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_segment_made_durable_by_its_roll_needs_no_other_fsync() {
        let dir = TempDir::new();
        // Records of 24 bytes: the second one passes 30.
        let r = H + 8;
        let w = worker(&dir.0.join("wal"), 30);
        let syncs = || w.shared.syncs.load(Ordering::Relaxed);
        assert_eq!(w.append(Format::JsonLines, b"{\"a\":1}\n").unwrap(), (1, r));
        assert_eq!(syncs(), 1);
        // Past 30 bytes: the roll fsyncs the segment and starts the next one; the durable end
        // moves without another fsync.
        assert_eq!(
            w.append(Format::JsonLines, b"{\"a\":2}\n").unwrap(),
            (1, 2 * r)
        );
        assert_eq!(w.wal().base, 2 * r);
        assert_eq!(syncs(), 1);
        assert_eq!(w.shared.log_end.load(Ordering::Acquire), 2 * r);
        assert_eq!(
            w.append(Format::JsonLines, b"{\"a\":3}\n").unwrap(),
            (1, 3 * r)
        );
        assert_eq!(syncs(), 2);
        assert_eq!(
            log_text(&dir.0.join("wal")),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
    }

    #[test]
    fn backpressure_refuses_until_the_driver_catches_up() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(IngestConfig {
            max_unread_bytes: 50,
            ..config(&wal)
        })
        .unwrap();
        let addr = server.local_addr();
        let rows = format!("{{\"v\":\"{}\"}}\n", "x".repeat(60));

        let (_, off) = ndjson(addr, &rows).accepted();
        let a = ndjson(addr, "{\"v\":2}\n");
        assert_eq!(a.status, 503);
        assert_eq!(a.header("Retry-After"), Some("1"));
        assert!(
            a.body.contains(&format!("behind by {off} bytes")),
            "{}",
            a.body
        );
        assert_eq!(log_bytes(&wal).len() as u64, off);

        // Still behind by more than the limit.
        server.set_read_offset(5);
        assert_eq!(ndjson(addr, "{\"v\":2}\n").status, 503);
        server.set_read_offset(off);
        let (n, off2) = ndjson(addr, "{\"v\":2}\n").accepted();
        assert_eq!((n, off2), (1, off + H + 8));
        assert_eq!(ndjson(addr, "[1]\n").status, 400);
        let stats = server.stats();
        assert_eq!(
            (
                stats.accepted,
                stats.backpressure,
                stats.refused,
                stats.failed
            ),
            (2, 2, 1, 0)
        );
        assert_eq!(stats.rows, 2);
        assert_eq!(stats.fsyncs, 2);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_on_start() {
        let dir = TempDir::new();
        let wal = dir.0.join("deep").join("er").join("wal");
        fs::create_dir_all(&wal).unwrap();
        let segment = wal.join(segment_name(0));
        let whole = [json_record("{\"a\":1}\n"), json_record("{\"a\":2}\n")].concat();
        let torn = &json_record("{\"a\":3}\n")[..20];
        fs::write(&segment, [&whole[..], torn].concat()).unwrap();
        let server = IngestServer::start(config(&wal)).unwrap();
        assert_eq!(log_text(&wal), "{\"a\":1}\n{\"a\":2}\n");
        let (_, off) = ndjson(server.local_addr(), "{\"a\":3}\n").accepted();
        assert_eq!(log_text(&wal), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(off, 3 * (H + 8));
        server.stop();

        // A whole record longer than one read, then a torn one just as long.
        let long = format!("{{\"z\":\"{}\"}}\n", "z".repeat(100_000));
        let record = json_record(&long);
        fs::write(
            &segment,
            [&record[..], &record[..record.len() - 1]].concat(),
        )
        .unwrap();
        drop(IngestServer::start(config(&wal)).unwrap());
        assert_eq!(log_text(&wal), long);

        // A log holding nothing but a torn record is emptied.
        fs::write(&segment, &record[..70_000]).unwrap();
        drop(IngestServer::start(config(&wal)).unwrap());
        assert_eq!(log_bytes(&wal).len(), 0);

        // A missing log and its directories are created.
        let fresh = dir.0.join("new").join("dir").join("wal");
        let server = IngestServer::start(config(&fresh)).unwrap();
        assert_eq!(log_bytes(&fresh).len(), 0);
        ndjson(server.local_addr(), "{}\n").accepted();
        assert_eq!(log_text(&fresh), "{}\n");
    }

    #[test]
    fn a_damaged_record_in_the_middle_stops_the_start_naming_its_segment_and_offset() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        fs::create_dir_all(&wal).unwrap();
        let segment = wal.join(segment_name(500));
        let mut bytes = [
            json_record("{\"a\":1}\n"),
            json_record("{\"a\":2}\n"),
            json_record("{\"a\":3}\n"),
        ]
        .concat();
        bytes[(H + 8 + H + 3) as usize] ^= 0x08;
        fs::write(&segment, &bytes).unwrap();
        let err = IngestServer::start(config(&wal)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&segment.display().to_string())
                && msg.contains(&format!("log offset {}", 500 + H + 8))
                && msg.contains("checksum"),
            "{msg}"
        );
        assert_eq!(fs::read(&segment).unwrap(), bytes);
    }

    #[test]
    fn the_log_rolls_into_segments_whose_offsets_continue_across_restarts_and_trimming() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let small = || IngestConfig {
            segment_bytes: 100,
            ..config(&wal)
        };
        let mut expected = String::new();
        let mut server = IngestServer::start(small()).unwrap();
        for i in 0..40 {
            if i == 25 {
                // A restart goes on appending to the newest segment at the same offsets.
                server.stop();
                server = IngestServer::start(small()).unwrap();
            }
            let body = format!(
                "{{\"i\":{i}}}\n{{\"i\":{i},\"pad\":\"{}\"}}\n",
                "p".repeat(i % 7)
            );
            expected.push_str(&body);
            let (rows, offset) = ndjson(server.local_addr(), &body).accepted();
            assert_eq!(
                (rows, offset),
                (2, (i + 1) as u64 * H + expected.len() as u64)
            );
        }
        assert_eq!(log_text(&wal), expected);
        let found = segments(&wal).unwrap();
        assert!(found.len() > 5, "{found:?}");
        let mut end = 0;
        for (k, (base, path)) in found.iter().enumerate() {
            // Named by where it starts; every one but the newest is full, and each holds
            // whole records.
            assert_eq!(*base, end);
            let bytes = fs::read(path).unwrap();
            assert!(!records_of(&bytes).is_empty());
            if k + 1 < found.len() {
                assert!(bytes.len() >= 100, "{}", bytes.len());
            }
            end += bytes.len() as u64;
        }
        let all = log_bytes(&wal);

        // Trimming keeps what a reader at the offset needs; appends go on at the log's end.
        let cut = found[3].0 + 1;
        assert_eq!(super::super::wal::trim(&wal, cut).unwrap(), 3);
        let (_, offset) = ndjson(server.local_addr(), "{}\n").accepted();
        assert_eq!(offset, end + H + 3);
        server.stop();
        let server = IngestServer::start(small()).unwrap();
        let (_, offset) = ndjson(server.local_addr(), "{}\n").accepted();
        assert_eq!(offset, end + 2 * (H + 3));
        let kept = &all[found[3].0 as usize..];
        assert_eq!(
            log_bytes(&wal),
            [kept, &json_record("{}\n"), &json_record("{}\n")].concat()
        );
    }

    #[test]
    fn a_second_server_on_the_same_log_is_refused() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let first = IngestServer::start(config(&wal)).unwrap();
        let err = IngestServer::start(config(&wal)).unwrap_err();
        assert!(
            matches!(err, IngestError::Log(WalError::Locked { .. })),
            "{err}"
        );
        assert!(
            err.to_string().contains(&wal.display().to_string()),
            "{err}"
        );
        first.stop();
        IngestServer::start(config(&wal)).unwrap().stop();

        let err = IngestServer::start(IngestConfig {
            addr: "256.0.0.1:0".into(),
            ..config(&wal)
        })
        .unwrap_err();
        assert!(err.to_string().contains("256.0.0.1:0"), "{err}");
    }

    #[test]
    fn a_failed_write_answers_500_naming_the_log() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        // A segment that is the full device: every write fails, and it cannot be cut back.
        let dir = TempDir::new();
        let segment = dir.0.join(segment_name(0));
        std::os::unix::fs::symlink(full, &segment).unwrap();
        let server = IngestServer::start(config(&dir.0)).unwrap();
        let addr = server.local_addr();
        let a = ndjson(addr, "{\"a\":1}\n");
        assert_eq!(a.status, 500);
        assert!(
            a.body.contains(&segment.display().to_string()),
            "{}",
            a.body
        );
        assert!(a.body.contains("os error"), "{}", a.body);
        // The device cannot be cut back, so the log stays refused until a restart.
        let a = ndjson(addr, "{\"a\":1}\n");
        assert_eq!(a.status, 500);
        assert!(a.body.contains("failed earlier"), "{}", a.body);
        assert_eq!(server.stats().rows, 0);
    }

    #[test]
    fn concurrent_clients_each_get_every_acknowledged_row_written_exactly_once() {
        let dir = TempDir::new();
        let wal = dir.0.join("wal");
        let server = IngestServer::start(config(&wal)).unwrap();
        let addr = server.local_addr();

        let clients: Vec<_> = (0..4)
            .map(|t| {
                thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..50 {
                        // Some rows long enough that the body is read past the first packet.
                        let pad = "p".repeat((i % 3) * 700);
                        let body: String = (0..1 + i % 3)
                            .map(|k| {
                                format!("{{\"t\":{t},\"i\":{i},\"k\":{k},\"pad\":\"{pad}\"}}\n")
                            })
                            .collect();
                        let (n, off) = ndjson(addr, &body).accepted();
                        assert_eq!(n as usize, 1 + i % 3);
                        acked.push((body, off));
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<(String, u64)> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();

        let text = log_text(&wal);
        let raw = log_bytes(&wal);
        // Each request's lines sit together, ending at the offset its answer gave.
        for (body, off) in &acked {
            let end = *off as usize;
            assert_eq!(&raw[end - body.len()..end], body.as_bytes());
        }
        let mut seen = HashMap::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (
                v["t"].as_u64().unwrap(),
                v["i"].as_u64().unwrap(),
                v["k"].as_u64().unwrap(),
            );
            *seen.entry(key).or_insert(0) += 1;
        }
        let rows: usize = (0..50).map(|i| 1 + i % 3).sum::<usize>() * 4;
        assert_eq!(seen.len(), rows);
        assert!(seen.values().all(|&n| n == 1));
        assert_eq!(server.stats().rows, rows as u64);
        assert_eq!(acked.iter().map(|(_, o)| *o).max(), Some(raw.len() as u64));
        assert_eq!(raw.len(), text.len() + acked.len() * HEADER_BYTES);
    }
}
