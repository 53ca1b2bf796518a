//! The cluster's HTTP ingest: `POST /ingest/<job>` on any node.
//!
//! The door decodes the body — JSON lines, or an Arrow IPC stream with
//! `Content-Type: application/vnd.apache.arrow.stream` — into the job's schema, splits the rows
//! by the job's key into its partitions (`[partition]` of its pipeline: hash or range; one
//! partition without it), and writes them as one `Ingest` command, each partition's rows an
//! Arrow IPC stream, through the leader. It answers `200` only once a majority of the nodes
//! hold the command (each fsynced it): an acknowledged event survives any minority of
//! failures.
//!
//! A job's schema is fixed by the first request that applies: until then a door infers it from
//! the body (every column nullable) and sends it along; if another door's schema won, the
//! state machine answers with it and the body is encoded again with that one.
//!
//! Retries: a client names itself with `X-Quiver-Producer` and numbers its requests with
//! `X-Quiver-Seq` (0, 1, 2, … per producer); a request that was applied already is answered
//! `200` again with `"duplicate": true` and is not applied twice; one that skips a number is
//! refused with `409` and the number expected. Without the headers each request counts as its
//! own producer and a retry may apply twice.
//!
//! | status | meaning |
//! |---|---|
//! | 200 | committed (or a duplicate of a committed request): `{"index", "rows", "duplicate"}` |
//! | 400 | the body does not decode (naming the line) or does not fit the job's schema |
//! | 404 / 410 | no such job / the job was stopped |
//! | 409 | a sequence number out of order: `{"expected": n}` |
//! | 413 | the body is larger than the limit |
//! | 503 | no leader, or no answer in time: retry (the same producer and number) |

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use quiver_coordination::{LogIndex, PartitionId};
use quiver_data::io::Format;
use quiver_data::partition::{self, Partitioning};
use quiver_exec::pipeline::Pipeline;
use quiver_exec::policy::OnMalformed;
use quiver_node::Writer;
use quiver_replication::{Command, Reply, StateReader};
use quiver_stream::chunk::Chunk;
use quiver_stream::decode::{conform, Decoder};
use quiver_stream::http::{HttpError, HttpLimits, HttpServer};
use quiver_stream::tail::Lines;
use serde::Serialize;

/// The content type of an Arrow IPC stream body.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The header naming a request's producer.
pub const PRODUCER: &str = "x-quiver-producer";
/// The header numbering a producer's requests.
pub const SEQ: &str = "x-quiver-seq";

/// How the door is set up.
#[derive(Clone)]
pub struct DoorConfig {
    /// The local replica of the state.
    pub state: StateReader,
    /// Writes through the leader.
    pub writer: Writer,
    /// The most a write may take before the door answers 503.
    pub write_timeout: Duration,
}

/// What the door answers a committed request.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    /// The log index of the `Ingest` command.
    pub index: LogIndex,
    /// The rows it carried.
    pub rows: usize,
    /// Whether it had been applied before (a retry).
    pub duplicate: bool,
}

/// Why a request was not committed.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// No such job.
    #[error("no job named {0:?}")]
    UnknownJob(String),
    /// The job was stopped.
    #[error("job {0:?} was stopped")]
    Stopped(String),
    /// The body does not decode, or does not fit the job's schema.
    #[error("job {job}: {message}")]
    BadBody {
        /// The job.
        job: String,
        /// What is wrong, naming the line or column.
        message: String,
    },
    /// A header is missing or malformed.
    #[error("{0}")]
    BadHeader(String),
    /// The producer's request numbers skip one.
    #[error("job {job}: producer {producer:?} sent request {seq}, but {expected} is next")]
    Gap {
        /// The job.
        job: String,
        /// The producer.
        producer: String,
        /// The number sent.
        seq: u64,
        /// The number expected.
        expected: u64,
    },
    /// The write failed or timed out; whether it applied is unknown (retry with the same
    /// producer and number).
    #[error("job {job}: not committed: {message}; retry")]
    Unavailable {
        /// The job.
        job: String,
        /// Why.
        message: String,
    },
    /// The job's pipeline cannot partition the rows.
    #[error("job {job}: {message}")]
    Pipeline {
        /// The job.
        job: String,
        /// What is wrong.
        message: String,
    },
    /// The state machine refused the request.
    #[error("job {job}: the cluster refused the request: {reply:?}")]
    Refused {
        /// The job.
        job: String,
        /// Its answer.
        reply: Reply,
    },
}

impl DoorError {
    fn status(&self) -> StatusCode {
        match self {
            DoorError::UnknownJob(_) => StatusCode::NOT_FOUND,
            DoorError::Stopped(_) => StatusCode::GONE,
            DoorError::BadBody { .. } | DoorError::BadHeader(_) => StatusCode::BAD_REQUEST,
            DoorError::Gap { .. } => StatusCode::CONFLICT,
            DoorError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DoorError::Pipeline { .. } | DoorError::Refused { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    }
}

/// What the door knows of a job, read from the state.
struct JobView {
    partitions: u32,
    schema: Option<Vec<u8>>,
    submitted_at: LogIndex,
    pipeline_toml: String,
    base_dir: String,
}

/// A job's partitioning (`None`: one partition).
type JobPartitioning = Option<Arc<Partitioning>>;

/// The door of one node.
pub struct Door {
    /// Set once the node has started; until then the door answers 503.
    config: std::sync::OnceLock<DoorConfig>,
    max_body_bytes: usize,
    /// Each job's partitioning, by job and the log index it was submitted at.
    partitionings: Mutex<HashMap<(String, LogIndex), JobPartitioning>>,
    /// Numbers requests that came without a producer.
    anonymous: AtomicU64,
}

/// A body as it arrived.
pub enum Body {
    /// JSON lines.
    JsonLines(Bytes),
    /// An Arrow IPC stream.
    Arrow(Bytes),
}

impl Door {
    /// A door that takes bodies of up to `max_body_bytes` and answers 503 until
    /// [`Door::open`] gives it its node.
    pub fn new(max_body_bytes: usize) -> Door {
        Door {
            config: std::sync::OnceLock::new(),
            max_body_bytes,
            partitionings: Mutex::new(HashMap::new()),
            anonymous: AtomicU64::new(0),
        }
    }

    /// Gives the door its node: from now on it takes requests.
    pub fn open(&self, config: DoorConfig) {
        let _ = self.config.set(config);
    }

    fn config(&self, job: &str) -> Result<&DoorConfig, DoorError> {
        self.config.get().ok_or_else(|| DoorError::Unavailable {
            job: job.to_string(),
            message: "the node is starting".into(),
        })
    }

    fn job(&self, job: &str) -> Result<JobView, DoorError> {
        self.config(job)?.state.read(|s, _| match s.job(job) {
            None => Err(DoorError::UnknownJob(job.to_string())),
            Some(j) if !j.running => Err(DoorError::Stopped(job.to_string())),
            Some(j) => Ok(JobView {
                partitions: j.partitions,
                schema: j.schema.clone(),
                submitted_at: j.submitted_at,
                pipeline_toml: j.pipeline_toml.clone(),
                base_dir: j.base_dir.clone(),
            }),
        })
    }

    /// The job's partitioning, with the partition count the job was submitted with.
    fn partitioning(
        &self,
        job: &str,
        view: &JobView,
    ) -> Result<Option<Arc<Partitioning>>, DoorError> {
        let key = (job.to_string(), view.submitted_at);
        if let Some(p) = self.partitionings.lock().expect("door lock").get(&key) {
            return Ok(p.clone());
        }
        let fail = |message: String| DoorError::Pipeline {
            job: job.to_string(),
            message,
        };
        let mut p = Pipeline::from_toml(&view.pipeline_toml).map_err(fail)?;
        p.base_dir = view.base_dir.clone().into();
        let partitioning = match quiver_stream::partitioning(&p).map_err(|e| fail(e.to_string()))? {
            Some(Partitioning::Hash {
                keys, algorithm, ..
            }) => Some(Partitioning::Hash {
                keys,
                algorithm,
                partitions: view.partitions as usize,
            }),
            other => other,
        };
        if let Some(p) = &partitioning {
            if p.partitions() != view.partitions as usize {
                return Err(fail(format!(
                    "its pipeline makes {} partitions, the job has {}",
                    p.partitions(),
                    view.partitions
                )));
            }
        }
        let partitioning = partitioning.map(Arc::new);
        self.partitionings
            .lock()
            .expect("door lock")
            .insert(key, partitioning.clone());
        Ok(partitioning)
    }

    /// Decodes, splits and commits one request.
    pub async fn ingest(
        &self,
        job: &str,
        producer: Option<String>,
        seq: Option<u64>,
        body: Body,
    ) -> Result<Accepted, DoorError> {
        let config = self.config(job)?;
        let (producer, seq) = match (producer, seq) {
            (Some(p), Some(s)) => (p, s),
            (Some(_), None) => {
                return Err(DoorError::BadHeader(format!(
                    "{PRODUCER} needs {SEQ} (the request's number, from 0)"
                )))
            }
            (None, Some(_)) => {
                return Err(DoorError::BadHeader(format!(
                    "{SEQ} needs {PRODUCER} (who numbers the requests)"
                )))
            }
            (None, None) => (
                format!(
                    "anonymous-{}-{}-{}",
                    config.writer.node(),
                    std::process::id(),
                    self.anonymous.fetch_add(1, Ordering::Relaxed)
                ),
                0,
            ),
        };
        let view = self.job(job)?;
        let partitioning = self.partitioning(job, &view)?;
        let bad = |message: String| DoorError::BadBody {
            job: job.to_string(),
            message,
        };
        let mut schema = view.schema.clone();
        // At most twice: once more if another door fixed the schema first.
        for _ in 0..2 {
            let known = match &schema {
                Some(bytes) => Some(read_schema(bytes).map_err(|e| bad(e.to_string()))?),
                None => None,
            };
            let (batch, inferred) = decode(&body, known).map_err(bad)?;
            let rows = batch.num_rows();
            let (parts, part_rows) =
                split(&batch, partitioning.as_deref(), view.partitions).map_err(bad)?;
            let command = Command::Ingest {
                job: job.to_string(),
                producer: producer.clone(),
                seq,
                parts,
                schema: inferred
                    .map(|s| quiver_stream::schema_stream(&s))
                    .transpose()
                    .map_err(|e| bad(e.to_string()))?,
                rows: part_rows,
            };
            // The durability point of an ingest request: the write returns once a majority
            // of the nodes fsynced the entry.
            let written =
                tokio::time::timeout(config.write_timeout, config.writer.write(command)).await;
            let unavailable = |message: String| DoorError::Unavailable {
                job: job.to_string(),
                message,
            };
            let (index, reply) = match written {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => return Err(unavailable(e.to_string())),
                Err(_) => {
                    return Err(unavailable(format!(
                        "no answer within {:?}",
                        config.write_timeout
                    )))
                }
            };
            return match reply {
                Reply::Applied => Ok(Accepted {
                    index,
                    rows,
                    duplicate: false,
                }),
                Reply::Duplicate { .. } => Ok(Accepted {
                    index,
                    rows,
                    duplicate: true,
                }),
                Reply::Gap { expected } => Err(DoorError::Gap {
                    job: job.to_string(),
                    producer,
                    seq,
                    expected,
                }),
                Reply::UnknownJob => Err(DoorError::UnknownJob(job.to_string())),
                Reply::JobStopped => Err(DoorError::Stopped(job.to_string())),
                Reply::SchemaConflict { schema: theirs } => {
                    schema = Some(theirs);
                    continue;
                }
                reply => Err(DoorError::Refused {
                    job: job.to_string(),
                    reply,
                }),
            };
        }
        Err(DoorError::Unavailable {
            job: job.to_string(),
            message: "the job's schema kept changing".into(),
        })
    }
}

fn read_schema(bytes: &[u8]) -> Result<SchemaRef, arrow::error::ArrowError> {
    Ok(StreamReader::try_new(Cursor::new(bytes), None)?.schema())
}

/// The body as one batch of `known` (or of the schema inferred from it, returned too).
fn decode(
    body: &Body,
    known: Option<SchemaRef>,
) -> Result<(RecordBatch, Option<SchemaRef>), String> {
    match body {
        Body::JsonLines(bytes) => {
            let mut text = bytes.to_vec();
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            let (schema, inferred) = match known {
                Some(s) => (s, None),
                None => {
                    let (s, _) =
                        arrow::json::reader::infer_json_schema(Cursor::new(&text), None)
                            .map_err(|e| format!("cannot infer a schema from the body: {e}"))?;
                    let s = quiver_stream::nullable(&s);
                    (s.clone(), Some(s))
                }
            };
            let count = text.iter().filter(|&&b| b == b'\n').count();
            let lines = Lines {
                bytes: text,
                count,
                first_line: 1,
                path: "request body".into(),
            };
            let decoder = Decoder::new(schema.clone(), Format::Jsonl, None, b',');
            let (batch, _) = decoder
                .decode(&[Chunk::Lines(lines)], OnMalformed::Fail)
                .map_err(|e| e.to_string())?;
            Ok((
                batch.unwrap_or_else(|| RecordBatch::new_empty(schema)),
                inferred,
            ))
        }
        Body::Arrow(bytes) => {
            let reader = StreamReader::try_new(Cursor::new(bytes), None)
                .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
            let (schema, inferred) = match known {
                Some(s) => (s, None),
                None => {
                    let s = quiver_stream::nullable(&reader.schema());
                    (s.clone(), Some(s))
                }
            };
            let mut batches = Vec::new();
            for b in reader {
                let b = b.map_err(|e| format!("the Arrow IPC stream is cut or damaged: {e}"))?;
                batches.push(conform(&b, &schema)?);
            }
            let batch =
                arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())?;
            Ok((batch, inferred))
        }
    }
}

/// Each partition's rows as an Arrow IPC stream.
type Parts = Vec<(PartitionId, Vec<u8>)>;

/// Each partition's rows as an Arrow IPC stream, and their row counts; partitions without rows
/// are left out.
fn split(
    batch: &RecordBatch,
    partitioning: Option<&Partitioning>,
    partitions: u32,
) -> Result<(Parts, Vec<u64>), String> {
    let mut out = Vec::new();
    let mut rows = Vec::new();
    if batch.num_rows() == 0 {
        return Ok((out, rows));
    }
    let parts = match partitioning {
        None => vec![Some(batch.clone())],
        Some(p) => {
            let assignment = p.assign(batch).map_err(|e| e.to_string())?;
            partition::split(batch, &assignment, partitions as usize).map_err(|e| e.to_string())?
        }
    };
    for (i, part) in parts.into_iter().enumerate() {
        let Some(part) = part.filter(|b| b.num_rows() > 0) else {
            continue;
        };
        let mut w = StreamWriter::try_new(Vec::new(), &part.schema()).map_err(|e| e.to_string())?;
        w.write(&part).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        out.push((
            PartitionId(i as u32),
            w.into_inner().map_err(|e| e.to_string())?,
        ));
        rows.push(part.num_rows() as u64);
    }
    Ok((out, rows))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(&value).expect("JSON encodes");
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a response builds")
}

async fn handle(door: Arc<Door>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let job = match (request.method(), path.strip_prefix("/ingest/")) {
        (&Method::POST, Some(job)) if !job.is_empty() && !job.contains('/') => job.to_string(),
        (&Method::GET, _) if path == "/health" => {
            return json(StatusCode::OK, serde_json::json!({"ok": true}))
        }
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "POST /ingest/<job> takes events; GET /health answers"}),
            )
        }
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let producer = header(PRODUCER);
    let seq = match header(SEQ).map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("{SEQ} must be a whole number")}),
            )
        }
    };
    let arrow = header("content-type").is_some_and(|c| c.starts_with(ARROW_STREAM));
    let limit = door.max_body_bytes;
    let bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_big {
                json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    serde_json::json!({"error": format!("the body is larger than {limit} bytes; send it in smaller requests")}),
                )
            } else {
                json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": format!("reading the body: {e}")}),
                )
            };
        }
    };
    let body = if arrow {
        Body::Arrow(bytes)
    } else {
        Body::JsonLines(bytes)
    };
    match door.ingest(&job, producer, seq, body).await {
        Ok(a) => json(
            StatusCode::OK,
            serde_json::to_value(a).expect("JSON encodes"),
        ),
        Err(e) => {
            let mut v = serde_json::json!({"error": e.to_string()});
            if let DoorError::Gap { expected, .. } = &e {
                v["expected"] = (*expected).into();
            }
            let mut r = json(e.status(), v);
            if e.status() == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            }
            r
        }
    }
}

/// Serves `door` on `addr` (`:0` takes a free port: see [`HttpServer::local_addr`]).
pub fn serve(addr: &str, door: Arc<Door>) -> Result<HttpServer, HttpError> {
    HttpServer::start(
        "cluster-ingest",
        addr,
        HttpLimits {
            max_connections: 256,
            idle_timeout: Duration::from_secs(30),
            blocking_threads: 2,
        },
        move |request| handle(door.clone(), request),
    )
}
