//! One partition's replicated events as a streaming source: read from this node's replica of
//! the state, after the log index the partition's last checkpoint covers. The position a
//! checkpoint records is the log index of the last event handed out.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::ipc::reader::StreamReader;
use quiver_coordination::{LogIndex, PartitionId};
use quiver_replication::state::ReadError;
use quiver_replication::StateReader;
use quiver_stream::chunk::{ArrowRows, Chunk};
use quiver_stream::feed::{Feed, FeedOpener};
use quiver_stream::StreamError;
use serde::{Deserialize, Serialize};

/// Where a partition's reader is in the replicated log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPosition {
    /// The log index of the last event handed out (0: none).
    pub index: LogIndex,
}

/// Events taken from the state per read, so that the lock on it is held briefly.
const EVENTS_PER_READ: usize = 16;

/// The replicated events of one partition of a job.
pub struct ReplicaFeed {
    state: StateReader,
    job: String,
    partition: PartitionId,
    after: LogIndex,
    /// Names the events in errors: `cluster:<job>/p<partition>`.
    label: PathBuf,
}

/// Why a partition's events cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The state has no such events (the job stopped, or a checkpoint that another worker
    /// committed covers them: this worker no longer owns the partition).
    #[error("job {job} {partition}: {source}")]
    Read {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// Why.
        source: ReadError,
    },
    /// An event is not an Arrow IPC stream.
    #[error("job {job} {partition}: the event at log index {index} is not an Arrow IPC stream: {message}")]
    Decode {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// Its log index.
        index: LogIndex,
        /// What the reader said.
        message: String,
    },
    /// A checkpoint's position does not read back.
    #[error("job {job} {partition}: the checkpoint's position {position} is not a log index")]
    Position {
        /// The job.
        job: String,
        /// The partition.
        partition: PartitionId,
        /// The position recorded.
        position: serde_json::Value,
    },
}

impl ReplicaFeed {
    /// A feed of `partition` of `job` after log index `after`.
    pub fn new(state: StateReader, job: &str, partition: PartitionId, after: LogIndex) -> Self {
        ReplicaFeed {
            state,
            job: job.to_string(),
            partition,
            after,
            label: PathBuf::from(format!("cluster:{job}/p{}", partition.0)),
        }
    }

    /// An opener for `quiver_stream`'s options: opens the feed at a checkpoint's position.
    pub fn opener(state: StateReader, job: &str, partition: PartitionId) -> FeedOpener {
        let job = job.to_string();
        Arc::new(move |from: Option<&serde_json::Value>| {
            let after = match from {
                None => 0,
                Some(v) => {
                    serde_json::from_value::<FeedPosition>(v.clone())
                        .map_err(|_| {
                            feed_error(FeedError::Position {
                                job: job.clone(),
                                partition,
                                position: v.clone(),
                            })
                        })?
                        .index
                }
            };
            Ok(Box::new(ReplicaFeed::new(state.clone(), &job, partition, after)) as Box<dyn Feed>)
        })
    }

    fn next_events(&self) -> Result<Vec<(LogIndex, Vec<u8>)>, FeedError> {
        self.state.read(|s, _| {
            s.events_after(&self.job, self.partition, self.after)
                .map(|events| whole_indexes(events, EVENTS_PER_READ))
                .map_err(|source| FeedError::Read {
                    job: self.job.clone(),
                    partition: self.partition,
                    source,
                })
        })
    }

    fn decode(&self, index: LogIndex, bytes: &[u8]) -> Result<ArrowRows, FeedError> {
        let fail = |e: arrow::error::ArrowError| FeedError::Decode {
            job: self.job.clone(),
            partition: self.partition,
            index,
            message: e.to_string(),
        };
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(fail)?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(fail)?;
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        Ok(ArrowRows {
            schema,
            batches,
            rows,
            first_row: 1,
            path: self.label.clone(),
            offset: index,
        })
    }
}

/// The first `at_least` events (more if the last index has more parts), copied. Whole log
/// indexes only: a feed's position is an index, so the parts of one (a batch of requests)
/// are taken together or not at all.
fn whole_indexes<'a>(
    events: impl Iterator<Item = (LogIndex, &'a [u8])>,
    at_least: usize,
) -> Vec<(LogIndex, Vec<u8>)> {
    let mut read: Vec<(LogIndex, Vec<u8>)> = Vec::new();
    for (i, b) in events {
        if read.len() >= at_least && read.last().map(|(l, _)| *l) != Some(i) {
            break;
        }
        read.push((i, b.to_vec()));
    }
    read
}

fn feed_error(e: FeedError) -> StreamError {
    StreamError::Feed(Box::new(e))
}

impl Feed for ReplicaFeed {
    fn poll(&mut self, max: usize) -> Result<Vec<Chunk>, StreamError> {
        let mut out = Vec::new();
        let mut rows = 0;
        while rows < max {
            let events = self.next_events().map_err(feed_error)?;
            if events.is_empty() {
                break;
            }
            for (index, bytes) in events {
                let arrow = self.decode(index, &bytes).map_err(feed_error)?;
                rows += arrow.rows;
                self.after = index;
                if arrow.rows > 0 {
                    out.push(Chunk::Arrow(arrow));
                }
            }
        }
        Ok(out)
    }

    fn position(&self) -> serde_json::Value {
        serde_json::to_value(FeedPosition { index: self.after }).expect("a position serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Reading in steps of whole indexes hands out every event once, in order, and never
        /// stops between two parts of one index.
        #[test]
        fn reads_take_whole_indexes(
            parts_per_index in proptest::collection::vec(1usize..5, 0..40),
            at_least in 1usize..8,
        ) {
            let events: Vec<(LogIndex, Vec<u8>)> = parts_per_index
                .iter()
                .enumerate()
                .flat_map(|(i, &n)| (0..n).map(move |k| (i as u64 + 1, vec![k as u8])))
                .collect();
            let mut after = 0;
            let mut seen = Vec::new();
            for _ in 0..=events.len() {
                let rest = events.iter().filter(|(i, _)| *i > after).map(|(i, b)| (*i, b.as_slice()));
                let read = whole_indexes(rest, at_least);
                let Some(&(last, _)) = read.last() else { break };
                prop_assert!(read.len() >= at_least.min(events.iter().filter(|(i, _)| *i > after).count()));
                // The last index read was read whole.
                let of_last = events.iter().filter(|(i, _)| *i == last).count();
                prop_assert_eq!(read.iter().filter(|(i, _)| *i == last).count(), of_last);
                after = last;
                seen.extend(read);
            }
            prop_assert_eq!(seen, events);
        }
    }
}
