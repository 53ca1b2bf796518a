//! Which workers the leader considers dead, from the heartbeats it has received.
//!
//! The leader keeps [`Heartbeats`]: when it last heard from each worker, by its own monotonic
//! clock, and when it took office. A worker is a suspect once
//! `now − max(last heartbeat, leader_since) ≥ timeout`.
//!
//! Counting from `leader_since` as well means that **a newly elected leader gives every worker
//! a fresh timeout before it reassigns anything**. It needs to: the old leader's heartbeat
//! times are readings of another machine's clock and are not replicated, so the new leader
//! cannot tell a worker that died just before the election from one that was beating all
//! along, and reassigning at once would take partitions from healthy workers. A worker the
//! leader has never heard from since it took office counts from `leader_since` for the same
//! reason.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, NodeId};

/// The leader's view of the workers' heartbeats during its term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeats {
    /// When the current leader took office, by its clock.
    pub leader_since: Millis,
    /// Every worker of the membership, with the time of its last heartbeat received during
    /// this term (`None`: none yet).
    pub last: BTreeMap<NodeId, Option<Millis>>,
}

impl Heartbeats {
    /// The view of a leader that took office at `leader_since` over the given workers, none of
    /// which it has heard from yet.
    pub fn new(leader_since: Millis, workers: impl IntoIterator<Item = NodeId>) -> Self {
        Heartbeats {
            leader_since,
            last: workers.into_iter().map(|node| (node, None)).collect(),
        }
    }

    /// A worker joined the membership. It counts from `leader_since` until it is heard from;
    /// a worker already known keeps its last heartbeat.
    pub fn add_worker(&mut self, node: NodeId) {
        self.last.entry(node).or_insert(None);
    }

    /// A worker left the membership: it is no longer watched.
    pub fn remove_worker(&mut self, node: NodeId) {
        self.last.remove(&node);
    }

    /// Records a heartbeat of `node` received at `at`. A heartbeat older than the last one
    /// (delivered out of order) changes nothing. Returns `false`, changing nothing, for a node
    /// outside the membership: membership is decided by the replicated log, not by who sends
    /// heartbeats.
    pub fn record(&mut self, node: NodeId, at: Millis) -> bool {
        match self.last.get_mut(&node) {
            Some(last) => {
                *last = Some(last.map_or(at, |t| t.max(at)));
                true
            }
            None => false,
        }
    }

    /// The time `node`'s timeout counts from: its last heartbeat, or `leader_since` if that is
    /// later or there was none. `None` for a node outside the membership.
    pub fn reference(&self, node: NodeId) -> Option<Millis> {
        let last = self.last.get(&node)?;
        Some(last.map_or(self.leader_since, |t| t.max(self.leader_since)))
    }

    /// The workers considered dead at `now`: those whose timeout, counted from
    /// [`Heartbeats::reference`], has fully elapsed (`now − reference ≥ timeout`), in id order.
    /// A reference later than `now` counts as no time elapsed.
    pub fn suspects(&self, now: Millis, timeout: Millis) -> Vec<NodeId> {
        self.last
            .keys()
            .copied()
            .filter(|&node| self.is_dead(node, now, timeout))
            .collect()
    }

    /// The workers not suspected at `now`: the live set an assignment is made over.
    pub fn live(&self, now: Millis, timeout: Millis) -> BTreeSet<NodeId> {
        self.last
            .keys()
            .copied()
            .filter(|&node| !self.is_dead(node, now, timeout))
            .collect()
    }

    fn is_dead(&self, node: NodeId, now: Millis, timeout: Millis) -> bool {
        self.reference(node)
            .is_some_and(|since| now.saturating_sub(since) >= timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: std::ops::Range<Millis> = 0..9;

    /// Every heartbeat state of one worker over a small grid: none, or a time in `TIMES`.
    fn last_heartbeats() -> impl Iterator<Item = Option<Millis>> {
        std::iter::once(None).chain(TIMES.map(Some))
    }

    #[test]
    fn suspects_follow_the_rule_over_a_time_grid() {
        for leader_since in TIMES {
            for last in last_heartbeats() {
                for now in 0..12 {
                    for timeout in 0..6 {
                        let beats = Heartbeats {
                            leader_since,
                            last: [(NodeId(1), last)].into(),
                        };
                        let since = last.unwrap_or(0).max(leader_since);
                        let elapsed = now.max(since) - since;
                        let dead = elapsed >= timeout;
                        let expected = if dead { vec![NodeId(1)] } else { vec![] };
                        assert_eq!(beats.suspects(now, timeout), expected);
                        assert_eq!(beats.live(now, timeout).is_empty(), dead);
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_leader_gives_every_worker_a_fresh_timeout() {
        for leader_since in TIMES {
            for last in last_heartbeats() {
                for timeout in 1..6 {
                    let beats = Heartbeats {
                        leader_since,
                        last: [(NodeId(1), last)].into(),
                    };
                    for now in 0..leader_since + timeout {
                        assert!(beats.suspects(now, timeout).is_empty());
                    }
                    assert_eq!(
                        beats.suspects(leader_since + timeout, timeout).len(),
                        usize::from(last.is_none_or(|t| t <= leader_since))
                    );
                }
            }
        }
    }

    #[test]
    fn once_dead_a_silent_worker_stays_dead() {
        for leader_since in TIMES {
            for last in last_heartbeats() {
                for timeout in 0..6 {
                    let beats = Heartbeats {
                        leader_since,
                        last: [(NodeId(1), last)].into(),
                    };
                    let mut was_dead = false;
                    for now in 0..20 {
                        let dead = !beats.suspects(now, timeout).is_empty();
                        assert!(dead || !was_dead, "revived at {now} without a heartbeat");
                        was_dead = dead;
                    }
                }
            }
        }
    }

    #[test]
    fn a_heartbeat_revives_a_suspect_and_a_late_one_changes_nothing() {
        let mut beats = Heartbeats::new(0, [NodeId(1), NodeId(2)]);
        assert!(beats.record(NodeId(1), 5));
        assert_eq!(beats.suspects(10, 5), [NodeId(1), NodeId(2)]);
        assert!(beats.record(NodeId(1), 9));
        assert!(beats.record(NodeId(1), 3)); // delivered late: the 9 stands
        assert_eq!(beats.reference(NodeId(1)), Some(9));
        assert_eq!(beats.suspects(10, 5), [NodeId(2)]);
        assert_eq!(beats.live(10, 5), [NodeId(1)].into());
    }

    #[test]
    fn strangers_are_ignored_and_removed_workers_are_not_watched() {
        let mut beats = Heartbeats::new(0, [NodeId(1)]);
        assert!(!beats.record(NodeId(7), 1));
        assert_eq!(beats.reference(NodeId(7)), None);
        beats.add_worker(NodeId(2));
        assert_eq!(beats.suspects(100, 10), [NodeId(1), NodeId(2)]);
        beats.remove_worker(NodeId(1));
        assert_eq!(beats.suspects(100, 10), [NodeId(2)]);
    }

    #[test]
    fn a_worker_joining_again_keeps_its_last_heartbeat() {
        let mut beats = Heartbeats::new(0, [NodeId(1)]);
        beats.record(NodeId(1), 40);
        beats.add_worker(NodeId(1));
        assert_eq!(beats.reference(NodeId(1)), Some(40));
    }
}
