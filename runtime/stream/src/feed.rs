//! Rows handed to a run by its caller instead of read from the pipeline's own source: in a
//! cluster, one partition's replicated events. The caller passes a [`FeedOpener`] in
//! [`StreamOptions::feed`](super::StreamOptions::feed); the run opens the feed at the position
//! its last checkpoint recorded and reads it like any other source.

use std::sync::Arc;

use super::chunk::Chunk;
use super::StreamError;

/// A source of rows owned by the caller of a run.
pub trait Feed: Send {
    /// Rows that arrived since the last call, whole records until they hold `max` rows or
    /// more; never blocks.
    fn poll(&mut self, max: usize) -> Result<Vec<Chunk>, StreamError>;
    /// Where the rows handed out so far end, as a checkpoint records it.
    fn position(&self) -> serde_json::Value;
    /// Bytes that arrived and are not handed out yet (an estimate of the lag).
    fn lag_bytes(&self) -> u64 {
        0
    }
}

/// Opens a [`Feed`] at a position a checkpoint recorded (`None`: from its start).
pub type FeedOpener =
    Arc<dyn Fn(Option<&serde_json::Value>) -> Result<Box<dyn Feed>, StreamError> + Send + Sync>;
