//! When a follower that refused a candidate for its shorter log should campaign itself.
//!
//! After a leader dies, the follower whose election timer runs out first campaigns. If it
//! missed the last entries the leader sent (the other follower has them), Raft's election
//! rule makes the other refuse it — but the candidate has already voted for itself in the new
//! term, so when the other's own timer runs out and it campaigns in that same term, the
//! candidate refuses it in turn. Nobody wins until a later term, one or two election timeouts
//! on: the long tail of a failover.
//!
//! The follower with the longer log can cut that short. Once it has refused a candidate for
//! its log, it records a vote for the candidate's term without sending it (a vote the
//! candidate never counts, so no term gets two leaders) and campaigns at once, in the next
//! term, which the candidate grants: its log is behind. It does so only when its leader's
//! lease has run out, which Raft itself checks when recording the vote: a follower still
//! hearing a live leader refuses, and nothing happens.
//!
//! [`take_over_after_refusing`] is the decision over plain data; the node does the rest.

/// The last entry of a log: its term, then its index (how Raft compares logs). `None`: empty.
pub type LastEntry = Option<(u64, u64)>;

/// What a follower answered a vote request, and what the request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The term the candidate campaigns in.
    pub candidate_term: u64,
    /// The candidate's last log entry.
    pub candidate_log: LastEntry,
    /// Whether the follower granted the vote.
    pub granted: bool,
    /// The term of the follower's vote after answering.
    pub my_term: u64,
    /// The follower's last log entry.
    pub my_log: LastEntry,
}

/// Whether the follower should record a vote for the candidate's term and campaign in the next
/// one: it refused the candidate, its log is ahead of the candidate's (so the candidate can
/// never win against it), and the candidate's term is ahead of its own vote (so it has not
/// taken that term up: it refused for the log, not because it voted in that term already).
pub fn take_over_after_refusing(r: &Refusal) -> bool {
    !r.granted && r.my_log > r.candidate_log && r.candidate_term > r.my_term
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One survivor of a three-node cluster whose leader died, as Raft (openraft 0.9) runs it.
    #[derive(Clone, Copy)]
    struct Node {
        /// The term of its vote.
        vote: u64,
        log: LastEntry,
        /// Its election timeout, fixed per node, ms.
        timeout: u64,
        /// When its timer runs out next, ms.
        fires_at: u64,
    }

    /// Node `to` answers a vote request from `from`, as Raft does: grant a vote in a term not
    /// taken up yet to a log at least as up to date. Returns whether it granted, and records a
    /// granted vote.
    fn answer(nodes: &mut [Node; 2], to: usize, from: usize) -> bool {
        let (candidate, log) = (nodes[from].vote, nodes[from].log);
        let granted = candidate > nodes[to].vote && log >= nodes[to].log;
        if granted {
            nodes[to].vote = candidate;
        }
        granted
    }

    /// Runs the election in simulated time; returns (when a leader was elected, its index,
    /// the term), checking that no term elects two leaders and that the leader's log is the
    /// more up to date one.
    fn run(mut nodes: [Node; 2], take_over: bool) -> (u64, usize, u64) {
        // The greater-log pause openraft adds to a candidate refused for its log.
        const PAUSE: u64 = 900;
        let mut leaders: std::collections::BTreeMap<u64, usize> = Default::default();
        for _ in 0..100 {
            let who = if nodes[0].fires_at <= nodes[1].fires_at {
                0
            } else {
                1
            };
            let other = 1 - who;
            let now = nodes[who].fires_at;
            nodes[who].vote += 1;
            nodes[who].fires_at = now + nodes[who].timeout;
            let mut campaigner = who;
            let mine_before = nodes[other].vote;
            let mut granted = answer(&mut nodes, other, who);
            if !granted && nodes[other].log > nodes[who].log {
                nodes[who].fires_at += PAUSE;
            }
            if !granted && take_over {
                let refusal = Refusal {
                    candidate_term: nodes[who].vote,
                    candidate_log: nodes[who].log,
                    granted,
                    my_term: mine_before,
                    my_log: nodes[other].log,
                };
                if take_over_after_refusing(&refusal) {
                    // Record the vote for the candidate's term, campaign in the next at once.
                    nodes[other].vote = nodes[who].vote + 1;
                    nodes[other].fires_at = now + nodes[other].timeout;
                    campaigner = other;
                    granted = answer(&mut nodes, who, other);
                }
            }
            if granted {
                let term = nodes[campaigner].vote;
                assert!(
                    leaders.insert(term, campaigner).is_none(),
                    "two leaders in term {term}"
                );
                assert!(
                    nodes[campaigner].log >= nodes[1 - campaigner].log,
                    "a shorter log won"
                );
                return (now, campaigner, term);
            }
        }
        panic!("no leader after 100 campaigns");
    }

    #[test]
    fn the_longer_log_wins_at_the_first_campaign_instead_of_timeouts_later() {
        let lease = 450;
        for short_timeout in (300..=450).step_by(25) {
            for long_timeout in (300..=450).step_by(25) {
                for (short_log, long_log) in [
                    (Some((1, 10)), Some((1, 11))),
                    (Some((1, 10)), Some((2, 3))),
                    (None, Some((1, 1))),
                    (Some((1, 10)), Some((1, 10))),
                ] {
                    let node = |log, timeout| Node {
                        vote: 1,
                        log,
                        timeout,
                        fires_at: lease + timeout,
                    };
                    let nodes = [node(short_log, short_timeout), node(long_log, long_timeout)];
                    let (plain_at, plain_winner, _) = run(nodes, false);
                    let (at, winner, _) = run(nodes, true);
                    let first = lease + short_timeout.min(long_timeout);
                    // Taking over never slows an election, and elects at the first campaign.
                    assert!(at <= plain_at, "{at} > {plain_at}");
                    assert_eq!(at, first, "{short_timeout} {long_timeout} {short_log:?}");
                    if short_log != long_log {
                        assert_eq!((winner, plain_winner), (1, 1));
                    }
                }
            }
        }
        // Without it, a shorter log campaigning first costs at least one more timeout.
        let nodes = [
            Node {
                vote: 1,
                log: Some((1, 10)),
                timeout: 300,
                fires_at: 750,
            },
            Node {
                vote: 1,
                log: Some((1, 11)),
                timeout: 450,
                fires_at: 900,
            },
        ];
        assert!(run(nodes, false).0 >= 900 + 450);
        assert_eq!(run(nodes, true).0, 750);
    }

    #[test]
    fn only_a_refusal_for_the_log_by_a_node_that_did_not_take_up_the_term_counts() {
        let base = Refusal {
            candidate_term: 5,
            candidate_log: Some((4, 100)),
            granted: false,
            my_term: 4,
            my_log: Some((4, 101)),
        };
        assert!(take_over_after_refusing(&base));
        // Every way it may not: granted; an equal or shorter log of its own (a refusal for
        // another reason, such as a leader's lease); a term it already took up or passed.
        let cases = [
            Refusal {
                granted: true,
                ..base
            },
            Refusal {
                my_log: Some((4, 100)),
                ..base
            },
            Refusal {
                my_log: Some((3, 500)),
                ..base
            },
            Refusal {
                my_log: None,
                ..base
            },
            Refusal { my_term: 5, ..base },
            Refusal { my_term: 6, ..base },
        ];
        for c in cases {
            assert!(!take_over_after_refusing(&c), "{c:?}");
        }
        // A longer log by a later term counts, however short by index; so does any log
        // against an empty one.
        assert!(take_over_after_refusing(&Refusal {
            my_log: Some((5, 3)),
            candidate_term: 6,
            my_term: 5,
            ..base
        }));
        assert!(take_over_after_refusing(&Refusal {
            candidate_log: None,
            ..base
        }));
    }
}
