//! What the driver and a task say to each other: micro-batches and barriers one way, progress,
//! barrier acknowledgements and failures the other.
//!
//! In one process these travel over channels as they are. Every message is also plain,
//! serialisable data ([`encode`], [`decode`]), so that a task can run in another process or on
//! another node: a micro-batch travels as an Arrow IPC stream, a failure as its message (the
//! receiving side gets [`StreamError::TaskFailed`]), everything else as it is.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::commit::BarrierAck;
use super::StreamError;
use quiver_checkpoint::{Epoch, TaskId};
use quiver_plugin_host::plugin::Metrics;

/// What the driver sends a task.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// This partition's rows of one micro-batch (if any) and dead letters for it to write
    /// (lines that did not parse go to task 0), for the files of `epoch`.
    Rows {
        /// The rows; an Arrow IPC stream on the wire.
        #[serde(with = "ipc_batch")]
        batch: Option<RecordBatch>,
        /// The micro-batch's number in the run, for messages and recordings.
        number: u64,
        /// The epoch whose files the output goes to.
        epoch: Epoch,
        /// Dead-letter lines, already encoded.
        dead: Vec<String>,
    },
    /// Close the epoch's files, make them durable and save the state.
    Barrier,
}

/// What a task reports.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// A micro-batch is done.
    Done(Progress),
    /// The task's part of a barrier: its files are durable.
    Barrier(BarrierAck),
    /// It failed and stopped. On the wire only the message travels.
    Failed(#[serde(with = "failure_text")] StreamError),
}

/// What one micro-batch of one task did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The task.
    pub task: TaskId,
    /// Rows written.
    pub rows_out: u64,
    /// Batches skipped under the `skip` policy.
    pub skipped: u64,
    /// Calls retried under the `retry` policy.
    pub retries: u64,
    /// Events behind the watermark.
    pub late: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Windows open after the batch.
    pub open_windows: u64,
    /// Each plugin's figures so far.
    pub plugins: Vec<(String, Metrics)>,
}

/// A message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("driver-task message: {0}")]
pub struct WireError(#[from] postcard::Error);

/// A message as bytes.
pub fn encode<M: Serialize>(message: &M) -> Result<Vec<u8>, WireError> {
    Ok(postcard::to_allocvec(message)?)
}

/// A message from its bytes.
pub fn decode<'a, M: Deserialize<'a>>(bytes: &'a [u8]) -> Result<M, WireError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// A record batch as one Arrow IPC stream (schema and batch).
mod ipc_batch {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        batch: &Option<RecordBatch>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let bytes = batch
            .as_ref()
            .map(|b| {
                let mut w = StreamWriter::try_new(Vec::new(), b.schema_ref())?;
                w.write(b)?;
                w.into_inner()
            })
            .transpose()
            .map_err(serde::ser::Error::custom)?;
        bytes.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<RecordBatch>, D::Error> {
        let Some(bytes) = Option::<Vec<u8>>::deserialize(d)? else {
            return Ok(None);
        };
        let mut reader =
            StreamReader::try_new(bytes.as_slice(), None).map_err(serde::de::Error::custom)?;
        match reader.next() {
            Some(batch) => batch.map(Some).map_err(serde::de::Error::custom),
            None => Err(serde::de::Error::custom(
                "the Arrow IPC stream holds no batch",
            )),
        }
    }
}

/// A task's failure as its message; it arrives as [`StreamError::TaskFailed`].
mod failure_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(e: &StreamError, s: S) -> Result<S::Ok, S::Error> {
        e.to_string().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StreamError, D::Error> {
        Ok(StreamError::TaskFailed {
            message: String::deserialize(d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use quiver_checkpoint::PendingFile;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into())),
                true,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("ü")])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::NAN), None])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1), None, Some(3)])
                        .with_timezone("+02:00"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_cross_the_wire_with_their_schema_and_values() {
        let sent = ToWorker::Rows {
            batch: Some(batch()),
            number: 7,
            epoch: 3,
            dead: vec!["{\"line\":1}".into()],
        };
        let got: ToWorker = decode(&encode(&sent).unwrap()).unwrap();
        let ToWorker::Rows {
            batch: Some(b),
            number,
            epoch,
            dead,
        } = got
        else {
            panic!("expected rows, got {got:?}");
        };
        let want = batch();
        assert_eq!(b.schema(), want.schema());
        // NaN != NaN: compare the columns' bits through their debug text.
        assert_eq!(
            format!("{:?}", b.columns()),
            format!("{:?}", want.columns())
        );
        assert_eq!(
            (number, epoch, dead),
            (7, 3, vec!["{\"line\":1}".to_string()])
        );
    }

    #[test]
    fn rows_without_a_batch_and_a_barrier_cross_the_wire() {
        let sent = ToWorker::Rows {
            batch: None,
            number: 0,
            epoch: 1,
            dead: vec![],
        };
        let got: ToWorker = decode(&encode(&sent).unwrap()).unwrap();
        assert!(matches!(
            got,
            ToWorker::Rows {
                batch: None,
                epoch: 1,
                ..
            }
        ));
        let got: ToWorker = decode(&encode(&ToWorker::Barrier).unwrap()).unwrap();
        assert!(matches!(got, ToWorker::Barrier));
    }

    #[test]
    fn progress_acknowledgements_and_failures_cross_the_wire() {
        let metrics = Metrics {
            calls: 4,
            rows_in: 100,
            time: Duration::from_micros(1234),
            ..Metrics::default()
        };
        let sent = FromWorker::Done(Progress {
            task: 2,
            rows_out: 90,
            late: 1,
            plugins: vec![("scale".into(), metrics.clone())],
            ..Progress::default()
        });
        let FromWorker::Done(p) = decode(&encode(&sent).unwrap()).unwrap() else {
            panic!("expected progress");
        };
        assert_eq!((p.task, p.rows_out, p.late), (2, 90, 1));
        assert_eq!(p.plugins[0].0, "scale");
        assert_eq!(format!("{:?}", p.plugins[0].1), format!("{metrics:?}"));

        let ack = BarrierAck {
            task: 1,
            files: vec![PendingFile {
                temp: "a.tmp".into(),
                fin: "a.jsonl".into(),
            }],
            bytes: 10,
            state: Some(vec![1, 2, 3]),
        };
        let got: FromWorker = decode(&encode(&FromWorker::Barrier(ack.clone())).unwrap()).unwrap();
        assert!(matches!(got, FromWorker::Barrier(a) if a == ack));

        let failure = StreamError::SchemaChanged {
            batch: 3,
            before: "a Int64".into(),
            after: "b Utf8".into(),
        };
        let text = failure.to_string();
        let got: FromWorker = decode(&encode(&FromWorker::Failed(failure)).unwrap()).unwrap();
        let FromWorker::Failed(e) = got else {
            panic!("expected a failure");
        };
        assert!(matches!(&e, StreamError::TaskFailed { message } if *message == text));
        assert_eq!(e.to_string(), text);
    }

    #[test]
    fn a_damaged_message_is_an_error_not_a_panic() {
        let bytes = encode(&ToWorker::Rows {
            batch: Some(batch()),
            number: 1,
            epoch: 1,
            dead: vec![],
        })
        .unwrap();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode::<ToWorker>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
