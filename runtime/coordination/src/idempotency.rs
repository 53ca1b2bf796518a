//! Retried ingest requests are applied once.
//!
//! Every ingest request carries a producer id and a sequence number. [`Producers`] remembers
//! the last sequence number applied for each producer and decides ([`Decision`]):
//!
//! - a producer it does not know: **apply**, whatever the number (a producer may start
//!   anywhere, for instance after a restart that lost its counter);
//! - a number at or below the last applied: **duplicate** (a retry of a request already
//!   applied, whose answer was lost): acknowledge it again without applying;
//! - exactly the last plus one: **apply**;
//! - anything higher: a **gap**, refused. The missing request may still be in flight or have
//!   failed; applying the later one first would make the missing one a "duplicate" when it
//!   arrives, and lose it. The producer resends from the expected number, so a producer that
//!   pipelines requests sees them accepted in order.
//!
//! # Bounded memory
//!
//! The table keeps at most `capacity` producers and forgets the least recently used one,
//! "used" meaning the log index of the last request it applied or recognised as a duplicate.
//! A log index, not a clock, so that every replica applying the same log forgets the same
//! producer. The trade-off: a forgotten producer is new again, so a retry of a request applied
//! before it was forgotten is applied a second time. The capacity must therefore exceed the
//! number of producers that may retry within one retry window; a producer idle for longer than
//! `capacity` other producers' requests is the one that pays.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

use crate::ids::LogIndex;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Apply it.
    Apply,
    /// Already applied: acknowledge without applying.
    Duplicate {
        /// The producer's last applied sequence number.
        last: u64,
    },
    /// A request is missing before it: refuse, the producer resends from `expected`.
    Gap {
        /// The sequence number the next request must carry.
        expected: u64,
    },
}

/// What [`Producers::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The decision on the request (recorded if [`Decision::Apply`]).
    pub decision: Decision,
    /// The producer forgotten to make room for a new one, if any.
    pub evicted: Option<String>,
}

/// The last applied sequence number of each recently seen producer (part of the replicated
/// state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct Producers {
    capacity: NonZeroUsize,
    entries: BTreeMap<String, Entry>,
    /// The same entries ordered by last use, ties by name: the first is evicted next.
    recency: BTreeSet<(LogIndex, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// The last applied sequence number.
    last: u64,
    /// The log index of its last use.
    used: LogIndex,
}

/// What is written: the entries only, since the order by use follows from them.
#[derive(Serialize, Deserialize)]
struct Stored {
    capacity: NonZeroUsize,
    entries: BTreeMap<String, Entry>,
}

impl From<Stored> for Producers {
    fn from(stored: Stored) -> Self {
        let recency = stored
            .entries
            .iter()
            .map(|(name, e)| (e.used, name.clone()))
            .collect();
        Producers {
            capacity: stored.capacity,
            entries: stored.entries,
            recency,
        }
    }
}

impl From<Producers> for Stored {
    fn from(p: Producers) -> Self {
        Stored {
            capacity: p.capacity,
            entries: p.entries,
        }
    }
}

impl Producers {
    /// An empty table that remembers at most `capacity` producers.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Producers {
            capacity,
            entries: BTreeMap::new(),
            recency: BTreeSet::new(),
        }
    }

    /// How many producers it remembers at most.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// How many producers it remembers now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it remembers no producer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last sequence number applied for `producer`, if it is remembered.
    pub fn last(&self, producer: &str) -> Option<u64> {
        self.entries.get(producer).map(|e| e.last)
    }

    /// Decides on request `seq` of `producer`, changing nothing.
    pub fn check(&self, producer: &str, seq: u64) -> Decision {
        match self.last(producer) {
            None => Decision::Apply,
            Some(last) if seq <= last => Decision::Duplicate { last },
            // `seq > last`, so `last + 1` does not overflow.
            Some(last) if seq == last + 1 => Decision::Apply,
            Some(last) => Decision::Gap { expected: last + 1 },
        }
    }

    /// Decides on request `seq` of `producer` carried by the log entry at `index`, and records
    /// it: an applied request becomes the producer's last, and an applied or duplicate request
    /// marks the producer used at `index`. A gap changes nothing.
    pub fn apply(&mut self, producer: &str, seq: u64, index: LogIndex) -> Applied {
        let decision = self.check(producer, seq);
        let mut evicted = None;
        match (decision, self.entries.get_mut(producer)) {
            (Decision::Gap { .. }, _) => {}
            (_, Some(entry)) => {
                // Indexes passed out of order do not make a producer look older than it is.
                let used = entry.used.max(index);
                self.recency.remove(&(entry.used, producer.to_owned()));
                self.recency.insert((used, producer.to_owned()));
                entry.used = used;
                if decision == Decision::Apply {
                    entry.last = seq;
                }
            }
            (_, None) => {
                if self.entries.len() >= self.capacity.get() {
                    evicted = self.recency.pop_first().map(|(_, name)| {
                        self.entries.remove(&name);
                        name
                    });
                }
                self.entries.insert(
                    producer.to_owned(),
                    Entry {
                        last: seq,
                        used: index,
                    },
                );
                self.recency.insert((index, producer.to_owned()));
            }
        }
        Applied { decision, evicted }
    }
}

#[cfg(test)]
mod tests;
