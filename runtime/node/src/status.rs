//! What `quiver cluster status` shows: one node's view of the group, as plain data, with the
//! replication progress of every node when that view is the leader's.

use serde::{Deserialize, Serialize};

/// One node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node answering.
    pub id: u64,
    /// Its role: `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The index of its last log entry.
    pub last_log_index: Option<u64>,
    /// The index of the last entry its state machine applied.
    pub applied_index: Option<u64>,
    /// The index its last snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The index up to which its log is purged.
    pub purged_index: Option<u64>,
    /// The checksum of its applied state (hex), to compare replicas.
    pub state_checksum: String,
    /// Snapshots it received from a leader and installed since it started (catch-up by
    /// snapshot, when the entries it lacked were purged).
    pub snapshots_installed: u64,
    /// Every member of the group.
    pub members: Vec<MemberStatus>,
    /// The jobs of the cluster, as this node has applied them.
    pub jobs: Vec<JobStatus>,
    /// Each worker (every member is one) with the partitions it owns.
    pub workers: Vec<WorkerStatus>,
}

/// A job as the answering node has applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Its name.
    pub name: String,
    /// Whether it runs (false once stopped).
    pub running: bool,
    /// Each partition.
    pub partitions: Vec<PartitionStatus>,
    /// The partitions that took the most rows, most first: (partition, rows).
    pub hottest: Vec<(u32, u64)>,
}

/// One partition of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Its number.
    pub partition: u32,
    /// The worker that owns it, if any.
    pub owner: Option<u64>,
    /// The generation it owns it under.
    pub generation: Option<u64>,
    /// Rows ingested into it since the job was submitted.
    pub rows: u64,
    /// Bytes ingested into it.
    pub bytes: u64,
    /// Ingest requests not yet covered by a checkpoint (kept in the replicated state).
    pub pending_requests: usize,
    /// Its last committed checkpoint.
    pub checkpoint: Option<CheckpointStatus>,
}

/// A partition's last committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// Its epoch.
    pub epoch: u64,
    /// The worker that committed it.
    pub node: u64,
    /// Under which generation.
    pub generation: u64,
    /// The log index of the last event it covers.
    pub through: u64,
    /// The log index of its commit.
    pub committed_at: u64,
}

/// A worker and what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The node.
    pub node: u64,
    /// On the leader: milliseconds since its last heartbeat (or since the leader took office,
    /// if it has not heard from it yet).
    pub since_heartbeat_ms: Option<u64>,
    /// The partitions it owns: (job, partition, generation).
    pub owns: Vec<(String, u32, u64)>,
}

/// A member of the group as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: u64,
    /// Its peer (Raft) address.
    pub peer: String,
    /// Its HTTP API address.
    pub api: String,
    /// Whether it votes (a learner does not).
    pub voter: bool,
    /// On the leader: the last log index this member is known to hold.
    pub matched_index: Option<u64>,
    /// On the leader: how many entries it is behind the leader's log.
    pub lag: Option<u64>,
}

impl NodeStatus {
    /// A table for the terminal.
    pub fn render(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let mut out = format!(
            "node {} is {} in term {}; leader: {}\nlog: last {} applied {} snapshot {} purged {}; snapshots installed {}; state checksum {}\n",
            self.id,
            self.role,
            self.term,
            self.leader.map_or("none".into(), |l| format!("node {l}")),
            opt(self.last_log_index),
            opt(self.applied_index),
            opt(self.snapshot_index),
            opt(self.purged_index),
            self.snapshots_installed,
            &self.state_checksum[..self.state_checksum.len().min(16)],
        );
        out.push_str(
            "node  role      peer                   api                    matched  lag\n",
        );
        for m in &self.members {
            let role = if Some(m.id) == self.leader {
                "leader"
            } else if m.voter {
                "follower"
            } else {
                "learner"
            };
            out.push_str(&format!(
                "{:<5} {:<9} {:<22} {:<22} {:>7}  {}\n",
                m.id,
                role,
                m.peer,
                m.api,
                opt(m.matched_index),
                opt(m.lag)
            ));
        }
        if !self.workers.is_empty() {
            out.push_str("worker  heartbeat  partitions (job/partition@generation)\n");
            for w in &self.workers {
                let owns: Vec<String> = w
                    .owns
                    .iter()
                    .map(|(job, p, g)| format!("{job}/p{p}@g{g}"))
                    .collect();
                out.push_str(&format!(
                    "{:<7} {:>9}  {}\n",
                    w.node,
                    w.since_heartbeat_ms
                        .map_or("-".to_string(), |ms| format!("{ms} ms")),
                    if owns.is_empty() {
                        "-".to_string()
                    } else {
                        owns.join(" ")
                    }
                ));
            }
        }
        for j in &self.jobs {
            let hot: Vec<String> = j
                .hottest
                .iter()
                .map(|(p, rows)| format!("p{p} ({rows} rows)"))
                .collect();
            out.push_str(&format!(
                "job {}{}: {} partitions; hottest: {}\n",
                j.name,
                if j.running { "" } else { " (stopped)" },
                j.partitions.len(),
                if hot.is_empty() {
                    "-".to_string()
                } else {
                    hot.join(", ")
                }
            ));
            out.push_str("  part  owner  gen     rows  pending  checkpoint\n");
            for p in &j.partitions {
                out.push_str(&format!(
                    "  {:<5} {:<6} {:<4} {:>8}  {:>7}  {}\n",
                    p.partition,
                    opt(p.owner),
                    opt(p.generation),
                    p.rows,
                    p.pending_requests,
                    p.checkpoint.as_ref().map_or("-".to_string(), |c| format!(
                        "epoch {} by node {} (g{}) through log index {}",
                        c.epoch, c.node, c.generation, c.through
                    ))
                ));
            }
        }
        out
    }
}
