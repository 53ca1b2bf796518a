//! Raft's timings and the node's call time-outs, with defaults aimed at a leader failover in
//! under a second at the median (`quiver-bench --only cluster` measures it).
//!
//! What a failover takes with openraft 0.9: a follower keeps honouring the old leader for a
//! lease of `election_max` after its last heartbeat, then waits its own election timeout (drawn
//! once per process from `election_min..election_max`) before it campaigns; a candidate that
//! meets a longer log backs off for `2 × election_max`. So a leader is replaced within
//! `election_max + election_min..2 × election_max`, plus one vote round.

use std::time::Duration;

/// How fast a node notices a dead leader, and how long its calls may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader sends heartbeats (100 ms).
    pub heartbeat: Duration,
    /// A follower campaigns after hearing nothing from a leader for its lease and then a
    /// random time in this range (300–450 ms): three heartbeats or more, so one lost or late
    /// heartbeat on a busy machine does not start an election, and short enough that a new
    /// leader is elected 0.75–0.9 s after the old one's last heartbeat.
    pub election_min: Duration,
    /// The upper end of that range.
    pub election_max: Duration,
    /// A control call's time-out (2 s).
    pub call_timeout: Duration,
    /// How long a node keeps trying to join, and a forwarded call may take (10 s).
    pub join_deadline: Duration,
    /// A snapshot is taken once this many entries were applied since the last one, after
    /// which the log before it may be purged.
    pub snapshot_every: u64,
    /// Workers' heartbeats, lease and reassignment timeout (200 ms, 1 s, 1.5 s).
    pub workers: quiver_coordination::lease::Timeouts,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(450),
            call_timeout: Duration::from_secs(2),
            join_deadline: Duration::from_secs(10),
            snapshot_every: 5000,
            workers: quiver_coordination::lease::Timeouts::default(),
        }
    }
}

impl Timing {
    /// openraft's configuration for these timings, checked.
    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        let ms = |d: Duration| d.as_millis() as u64;
        openraft::Config {
            cluster_name: "quiver".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Entries a lagging follower may still fetch from the log after a snapshot; past
            // that it gets the snapshot.
            max_in_snapshot_log_to_keep: self.snapshot_every / 2,
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}
