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
    pub jobs: Vec<String>,
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
        if !self.jobs.is_empty() {
            out.push_str(&format!("jobs: {}\n", self.jobs.join(", ")));
        }
        out
    }
}
