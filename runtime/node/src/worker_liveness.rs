//! Worker failover's timing half: every node (each is also a worker) sends a heartbeat to the
//! leader every `heartbeat_interval`, and the leader, in memory only (heartbeats are never
//! written to the log), keeps [`Heartbeats`] for its term and proposes a new assignment when a
//! worker has been silent for `reassign_after`. A newly elected leader starts with a fresh
//! [`Heartbeats`], which gives every worker a fresh timeout before it reassigns anything.
//!
//! A worker's **lease**: the leader answers a heartbeat with how long ago a majority of the
//! group last acknowledged it, so the worker learns when it last had (indirect) majority
//! contact; it stops committing once that is older than `lease`, which is shorter than
//! `reassign_after` ([`Timeouts::validate`]).
//!
//! The decisions (who is dead, the new assignment, whether the lease holds) are the pure
//! functions of `quiver-coordination` and `quiver-replication`; this module is their timers and
//! calls.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use quiver_coordination::failure_detection::Heartbeats;
use quiver_coordination::lease::Timeouts;
use quiver_coordination::{Millis, NodeId};
use quiver_replication::{Reply, StateReader, TypeConfig};
use serde::{Deserialize, Serialize};

/// A heartbeat: who sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Beat {
    pub node: u64,
}

/// The leader's answer: how long ago a majority last acknowledged it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BeatAnswer {
    pub quorum_ack_ms: Option<u64>,
}

/// A node's clock for liveness: milliseconds since it started (monotonic).
#[derive(Debug, Clone)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    /// Milliseconds since the start.
    pub fn now(&self) -> Millis {
        self.0.elapsed().as_millis() as Millis
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What a worker knows of its lease, shared between the heartbeat task and the partitions it
/// runs.
#[derive(Debug, Clone)]
pub struct Lease {
    clock: Clock,
    timeouts: Timeouts,
    /// The last time (by `clock`) a majority is known to have acknowledged the leader that
    /// answered this worker; `u64::MAX`: never.
    contact: Arc<AtomicU64>,
}

impl Lease {
    pub(crate) fn new(clock: Clock, timeouts: Timeouts) -> Self {
        Lease {
            clock,
            timeouts,
            contact: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Records majority contact at `at`, if later than the last one.
    pub(crate) fn touch(&self, at: Millis) {
        let mut current = self.contact.load(Ordering::Acquire);
        while current == u64::MAX || current < at {
            match self
                .contact
                .compare_exchange(current, at, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Whether the worker may still write ([`Timeouts::may_write`]).
    pub fn may_write(&self) -> bool {
        match self.contact.load(Ordering::Acquire) {
            u64::MAX => false,
            at => self.timeouts.may_write(self.clock.now(), at),
        }
    }

    /// The timeouts it was made with.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Milliseconds since the last majority contact, if there was one.
    pub fn since_contact(&self) -> Option<Millis> {
        match self.contact.load(Ordering::Acquire) {
            u64::MAX => None,
            at => Some(self.clock.now().saturating_sub(at)),
        }
    }
}

/// The leader's in-memory view of its workers for its current term.
#[derive(Debug, Default)]
pub(crate) struct LeaderView {
    /// `None` while this node is not the leader.
    pub heartbeats: Option<Heartbeats>,
}

/// Records a heartbeat at the leader; ignored when not leading.
pub(crate) fn record(view: &Mutex<LeaderView>, node: u64, now: Millis) {
    if let Some(h) = view.lock().expect("liveness lock").heartbeats.as_mut() {
        h.add_worker(NodeId(node));
        h.record(NodeId(node), now);
    }
}

/// The leader's loop: keeps its [`Heartbeats`] in step with its term and the membership, and
/// writes a new assignment of every running job whose partitions have a dead owner, no owner,
/// or are out of balance. Ends when Raft shuts down.
pub(crate) async fn lead(
    raft: Raft<TypeConfig>,
    state: StateReader,
    view: Arc<Mutex<LeaderView>>,
    clock: Clock,
    timeouts: Timeouts,
    me: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(timeouts.heartbeat_interval / 2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = raft.metrics().borrow().clone();
        if m.state == ServerState::Shutdown {
            return;
        }
        let now = clock.now();
        let voters: BTreeSet<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .map(NodeId)
            .collect();
        let live = {
            let mut v = view.lock().expect("liveness lock");
            if m.state != ServerState::Leader {
                v.heartbeats = None;
                continue;
            }
            let h = v
                .heartbeats
                .get_or_insert_with(|| Heartbeats::new(now, voters.iter().copied()));
            for gone in h.last.keys().copied().collect::<Vec<_>>() {
                if !voters.contains(&gone) {
                    h.remove_worker(gone);
                }
            }
            for &n in &voters {
                h.add_worker(n);
            }
            // The leader is a worker that is plainly alive.
            h.record(NodeId(me), now);
            h.live(now, timeouts.reassign_after)
        };
        let plans: Vec<_> = state.read(|s, _| {
            s.jobs()
                .filter(|(_, j)| j.running)
                .filter_map(|(name, _)| match s.plan_assignment(name, &live) {
                    Ok(plan) => plan,
                    Err(e) => {
                        tracing::warn!(job = name, "cannot assign: {e}");
                        None
                    }
                })
                .collect()
        });
        for command in plans {
            let job = command.job().unwrap_or_default().to_string();
            match raft.client_write(command).await {
                Ok(w) if w.data == Reply::Applied => {
                    tracing::info!(job, index = w.log_id.index, live = ?live, "partitions reassigned")
                }
                // Another assignment went first: the next tick plans from it.
                Ok(w) => tracing::debug!(job, "assignment not applied: {:?}", w.data),
                Err(e) => tracing::debug!(job, "assignment not written: {e}"),
            }
        }
    }
}
