//! Leader failover's one addition to Raft: a follower that refuses a candidate for its shorter
//! log campaigns at once in the next term ([`quiver_coordination::election`] decides when),
//! so that a failover takes one election rather than two or three when the first follower to
//! time out had missed the dead leader's last entries.

use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::Raft;
use quiver_coordination::election::{take_over_after_refusing, LastEntry, Refusal};
use quiver_replication::types::{LogId, RaftNodeId};
use quiver_replication::TypeConfig;

fn last_entry(log: &Option<LogId>) -> LastEntry {
    log.as_ref().map(|l| (l.leader_id.term, l.index))
}

/// Answers a vote request as Raft does, then takes over when the decision says so.
pub(crate) async fn answer_vote(
    raft: &Raft<TypeConfig>,
    me: RaftNodeId,
    request: VoteRequest<RaftNodeId>,
) -> Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>> {
    let answer = raft.vote(request.clone()).await;
    if let Ok(response) = &answer {
        let refusal = Refusal {
            candidate_term: request.vote.leader_id().term,
            candidate_log: last_entry(&request.last_log_id),
            granted: response.vote_granted,
            my_term: response.vote.leader_id().term,
            my_log: last_entry(&response.last_log_id),
        };
        if take_over_after_refusing(&refusal) {
            // A vote for the candidate's term that the candidate never hears of (so it cannot
            // count it): it carries this node's own last entry, so only Raft's other checks
            // apply — above all the leader's lease, which refuses it while a leader is heard.
            let silent = VoteRequest::new(request.vote, response.last_log_id);
            if matches!(raft.vote(silent).await, Ok(r) if r.vote_granted) {
                tracing::info!(
                    node = me,
                    candidate = %request.vote,
                    "refused a candidate whose log is behind this node's; campaigning in the next term"
                );
                let _ = raft.trigger().elect().await;
            }
        }
    }
    answer
}
