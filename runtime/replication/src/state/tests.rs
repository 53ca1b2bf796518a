use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use quiver_coordination::fencing::Fenced;

use super::*;

fn submit(job: &str, partitions: u32) -> Command {
    Command::SubmitJob {
        job: job.into(),
        pipeline_toml: format!("# {job}"),
        partitions,
        base_dir: String::new(),
    }
}

fn ingest(job: &str, producer: &str, seq: u64, parts: &[(u32, &[u8])]) -> Command {
    Command::Ingest {
        job: job.into(),
        producer: producer.into(),
        seq,
        parts: parts
            .iter()
            .map(|(p, bytes)| (PartitionId(*p), bytes.to_vec()))
            .collect(),
        schema: None,
        rows: Vec::new(),
    }
}

fn checkpoint(
    job: &str,
    partition: u32,
    node: u64,
    generation: u64,
    epoch: Epoch,
    through: LogIndex,
) -> Command {
    Command::Checkpoint {
        job: job.into(),
        partition: PartitionId(partition),
        node: NodeId(node),
        generation: Generation(generation),
        epoch,
        through,
        manifest: format!("manifest {epoch}").into_bytes(),
        state: None,
    }
}

fn nodes(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn events(state: &ClusterState, job: &str, partition: u32, after: LogIndex) -> Vec<(u64, Vec<u8>)> {
    state
        .events_after(job, PartitionId(partition), after)
        .unwrap()
        .map(|(i, b)| (i, b.to_vec()))
        .collect()
}

/// A state with job `j` of `partitions` partitions assigned over nodes 1 and 2, applied at
/// indexes 1 and 2.
fn assigned(partitions: u32) -> ClusterState {
    let mut s = ClusterState::new();
    assert_eq!(s.apply(1, &submit("j", partitions)), Reply::Applied);
    let assign = s.plan_assignment("j", &nodes(&[1, 2])).unwrap().unwrap();
    assert_eq!(s.apply(2, &assign), Reply::Applied);
    s
}

fn owner(s: &ClusterState, partition: u32) -> (u64, u64) {
    let o = s.job("j").unwrap().assignment[&PartitionId(partition)];
    (o.node.0, o.generation.0)
}

#[test]
fn a_submitted_job_keeps_the_events_of_each_partition_in_log_order() {
    let mut s = ClusterState::new();
    assert_eq!(s.apply(1, &submit("j", 2)), Reply::Applied);
    assert_eq!(
        s.apply(2, &ingest("j", "p", 0, &[(0, b"a"), (1, b"b")])),
        Reply::Applied
    );
    assert_eq!(
        s.apply(3, &ingest("j", "p", 1, &[(0, b"c")])),
        Reply::Applied
    );
    assert_eq!(
        events(&s, "j", 0, 0),
        [(2, b"a".to_vec()), (3, b"c".to_vec())]
    );
    assert_eq!(events(&s, "j", 0, 2), [(3, b"c".to_vec())]);
    assert_eq!(events(&s, "j", 1, 0), [(2, b"b".to_vec())]);
    assert_eq!(events(&s, "j", 1, u64::MAX), []);
    let job = s.job("j").unwrap();
    assert_eq!(
        (job.partitions, job.running, job.submitted_at),
        (2, true, 1)
    );
    assert_eq!(job.pipeline_toml, "# j");
}

#[test]
fn a_job_needs_partitions_and_a_name_no_running_job_has() {
    let mut s = ClusterState::new();
    assert_eq!(s.apply(1, &submit("j", 0)), Reply::NoPartitions);
    assert_eq!(s.apply(2, &submit("j", 1)), Reply::Applied);
    assert_eq!(s.apply(3, &submit("j", 4)), Reply::JobExists);
    assert_eq!(s.job("j").unwrap().partitions, 1);
    assert_eq!(
        s.apply(4, &ingest("k", "p", 0, &[(0, b"x")])),
        Reply::UnknownJob
    );
    assert_eq!(
        s.apply(5, &Command::StopJob { job: "k".into() }),
        Reply::UnknownJob
    );
    assert_eq!(
        s.events_after("k", PartitionId(0), 0).err(),
        Some(ReadError::UnknownJob { job: "k".into() })
    );
    assert_eq!(
        s.events_after("j", PartitionId(1), 0).err(),
        Some(ReadError::UnknownPartition {
            job: "j".into(),
            partition: PartitionId(1)
        })
    );
}

#[test]
fn a_refused_ingest_does_not_count_for_its_producer() {
    let mut s = ClusterState::new();
    s.apply(1, &submit("j", 2));
    let before = s.checksum();
    assert_eq!(
        s.apply(2, &ingest("j", "p", 5, &[(0, b"a"), (2, b"b")])),
        Reply::UnknownPartition {
            partition: PartitionId(2)
        }
    );
    assert_eq!(
        s.apply(3, &ingest("j", "p", 5, &[(1, b"a"), (1, b"b")])),
        Reply::RepeatedPartition {
            partition: PartitionId(1)
        }
    );
    assert_eq!(s.checksum(), before);
    // The same sequence number, corrected, is applied.
    assert_eq!(
        s.apply(4, &ingest("j", "p", 5, &[(1, b"a")])),
        Reply::Applied
    );
}

#[test]
fn the_first_applied_ingest_fixes_the_schema_and_another_one_is_refused_with_it() {
    let mut s = ClusterState::new();
    assert_eq!(s.apply(1, &submit("j", 1)), Reply::Applied);
    let with = |seq: u64, schema: &[u8]| match ingest("j", "p", seq, &[(0, b"e")]) {
        Command::Ingest {
            job,
            producer,
            seq,
            parts,
            ..
        } => Command::Ingest {
            job,
            producer,
            seq,
            parts,
            schema: Some(schema.to_vec()),
            rows: Vec::new(),
        },
        _ => unreachable!(),
    };
    // A request without a schema leaves it unset; one with a gap applies nothing, so it fixes
    // no schema either.
    assert_eq!(
        s.apply(2, &ingest("j", "p", 0, &[(0, b"e")])),
        Reply::Applied
    );
    assert_eq!(s.apply(3, &with(2, b"B")), Reply::Gap { expected: 1 });
    assert_eq!(s.job("j").unwrap().schema, None);
    assert_eq!(s.apply(4, &with(1, b"A")), Reply::Applied);
    assert_eq!(s.job("j").unwrap().schema.as_deref(), Some(&b"A"[..]));
    let before = s.checksum();
    assert_eq!(
        s.apply(5, &with(2, b"B")),
        Reply::SchemaConflict {
            schema: b"A".to_vec()
        }
    );
    assert_eq!(
        s.checksum(),
        before,
        "a conflicting request changed the state"
    );
    // The same request encoded with the job's schema, or without one, applies.
    assert_eq!(s.apply(6, &with(2, b"A")), Reply::Applied);
    assert_eq!(
        s.apply(7, &ingest("j", "p", 3, &[(0, b"e")])),
        Reply::Applied
    );
    assert_eq!(events(&s, "j", 0, 0).len(), 4);
}

#[test]
fn a_retried_ingest_is_acknowledged_and_stored_once() {
    let mut s = ClusterState::new();
    s.apply(1, &submit("j", 1));
    assert_eq!(
        s.apply(2, &ingest("j", "p", 7, &[(0, b"a")])),
        Reply::Applied
    );
    assert_eq!(
        s.apply(3, &ingest("j", "p", 7, &[(0, b"a")])),
        Reply::Duplicate { last: 7 }
    );
    assert_eq!(
        s.apply(4, &ingest("j", "p", 9, &[(0, b"c")])),
        Reply::Gap { expected: 8 }
    );
    assert_eq!(
        s.apply(5, &ingest("j", "p", 8, &[(0, b"b")])),
        Reply::Applied
    );
    assert_eq!(
        s.apply(6, &ingest("j", "q", 0, &[(0, b"q")])),
        Reply::Applied
    );
    let got: Vec<u64> = events(&s, "j", 0, 0).into_iter().map(|(i, _)| i).collect();
    assert_eq!(got, [2, 5, 6]);
}

#[test]
fn a_batch_keeps_each_applied_request_once_in_order_at_its_index() {
    let mut s = ClusterState::new();
    s.apply(1, &submit("j", 2));
    s.apply(2, &ingest("j", "p", 0, &[(0, b"a")]));
    let batch = Command::Batch {
        commands: vec![
            // A retry of what applied at 2, the producer's next two, one that skips a number,
            // and another producer's request.
            ingest("j", "p", 0, &[(0, b"a")]),
            ingest("j", "p", 1, &[(0, b"b"), (1, b"x")]),
            ingest("j", "p", 2, &[(0, b"c")]),
            ingest("j", "p", 4, &[(0, b"gap")]),
            ingest("j", "q", 0, &[(1, b"y")]),
        ],
    };
    assert_eq!(
        s.apply(3, &batch),
        Reply::Batch {
            replies: vec![
                Reply::Duplicate { last: 0 },
                Reply::Applied,
                Reply::Applied,
                Reply::Gap { expected: 3 },
                Reply::Applied,
            ]
        }
    );
    let part = |p: u32| -> Vec<(u64, Vec<u8>)> { events(&s, "j", p, 0) };
    assert_eq!(
        part(0),
        [(2, b"a".to_vec()), (3, b"b".to_vec()), (3, b"c".to_vec())]
    );
    assert_eq!(part(1), [(3, b"x".to_vec()), (3, b"y".to_vec())]);
    // Reading after the batch's index skips all of it; a checkpoint through it drops all of it.
    assert!(events(&s, "j", 0, 3).is_empty());
    let restored = ClusterState::from_bytes(&s.to_bytes()).unwrap();
    assert_eq!(restored, s);
}

#[test]
fn an_assignment_computed_from_an_outdated_counter_is_refused() {
    let mut s = assigned(4);
    let to_three = s.plan_assignment("j", &nodes(&[1, 2, 3])).unwrap().unwrap();
    let to_one = s.plan_assignment("j", &nodes(&[1])).unwrap().unwrap();
    assert_eq!(s.apply(3, &to_three), Reply::Applied);
    let before = s.checksum();
    let current = s.job("j").unwrap().last_issued;
    assert_eq!(s.apply(4, &to_one), Reply::AssignmentConflict { current });
    assert_eq!(s.checksum(), before);
    // Nothing to change: no command.
    assert_eq!(s.plan_assignment("j", &nodes(&[1, 2, 3])).unwrap(), None);
    assert!(matches!(
        s.plan_assignment("j", &nodes(&[])),
        Err(PlanError::Assignment(AssignmentError::NoLiveWorkers { .. }))
    ));
}

#[test]
fn an_assignment_must_cover_the_partitions_with_fresh_generations() {
    let s = assigned(2);
    let base = s.job("j").unwrap().last_issued;
    let current = s.job("j").unwrap().assignment.clone();
    let attempt = |assignment: Assignment, last_issued: Generation| {
        let mut s = s.clone();
        let cmd = Command::Assign {
            job: "j".into(),
            based_on: base,
            assignment,
            last_issued,
        };
        s.apply(3, &cmd)
    };
    let owner = |node, generation| quiver_coordination::assignment::Owner {
        node: NodeId(node),
        generation: Generation(generation),
    };
    let invalid = |p| Reply::InvalidAssignment {
        partition: PartitionId(p),
    };
    // Unchanged is fine.
    assert_eq!(attempt(current.clone(), base), Reply::Applied);
    // A partition missing, or one the job does not have.
    let mut missing = current.clone();
    missing.remove(&PartitionId(1));
    assert_eq!(attempt(missing, base), invalid(1));
    let mut extra = current.clone();
    extra.insert(PartitionId(2), owner(1, base.0 + 1));
    assert_eq!(attempt(extra, Generation(base.0 + 1)), invalid(2));
    // A new owner under a generation already issued, beyond the new counter, or twice.
    let mut reused = current.clone();
    reused.insert(PartitionId(0), owner(3, base.0));
    assert_eq!(attempt(reused, base), invalid(0));
    let mut beyond = current.clone();
    beyond.insert(PartitionId(0), owner(3, base.0 + 2));
    assert_eq!(attempt(beyond, Generation(base.0 + 1)), invalid(0));
    let mut twice = current.clone();
    twice.insert(PartitionId(0), owner(3, base.0 + 1));
    twice.insert(PartitionId(1), owner(3, base.0 + 1));
    assert_eq!(attempt(twice, Generation(base.0 + 1)), invalid(1));
}

#[test]
fn only_the_current_owner_with_the_current_generation_commits() {
    let mut s = assigned(2);
    let (node, generation) = owner(&s, 0);
    s.apply(3, &ingest("j", "p", 0, &[(0, b"a")]));
    let other = if node == 1 { 2 } else { 1 };
    assert!(matches!(
        s.apply(4, &checkpoint("j", 0, other, generation, 1, 3)),
        Reply::Fenced(Fenced::NotOwner { .. })
    ));
    assert!(matches!(
        s.apply(5, &checkpoint("j", 0, node, generation + 1, 1, 3)),
        Reply::Fenced(Fenced::Unissued { .. })
    ));
    assert!(matches!(
        s.apply(6, &checkpoint("j", 5, node, generation, 1, 3)),
        Reply::Fenced(Fenced::UnknownPartition { .. })
    ));
    // The owner dies: its partition moves under a new generation, and its late commit is
    // refused as stale.
    let survivor = nodes(&[other]);
    let moved = s.plan_assignment("j", &survivor).unwrap().unwrap();
    assert_eq!(s.apply(7, &moved), Reply::Applied);
    let before = s.checksum();
    assert!(matches!(
        s.apply(8, &checkpoint("j", 0, node, generation, 1, 3)),
        Reply::Fenced(Fenced::Stale { .. })
    ));
    assert_eq!(s.checksum(), before);
    let (new_node, new_generation) = owner(&s, 0);
    assert_eq!(new_node, other);
    assert_eq!(
        s.apply(9, &checkpoint("j", 0, new_node, new_generation, 1, 3)),
        Reply::Applied
    );
}

#[test]
fn a_checkpoint_drops_the_events_it_covers() {
    let mut s = assigned(1);
    let (node, generation) = owner(&s, 0);
    for (i, seq) in (3..=6).zip(0..) {
        s.apply(i, &ingest("j", "p", seq, &[(0, &[i as u8])]));
    }
    assert_eq!(
        s.apply(7, &checkpoint("j", 0, node, generation, 1, 4)),
        Reply::Applied
    );
    assert_eq!(events(&s, "j", 0, 4), [(5, vec![5]), (6, vec![6])]);
    assert_eq!(
        s.events_after("j", PartitionId(0), 3).err(),
        Some(ReadError::Covered { through: 4 })
    );
    let cp = s.last_checkpoint("j", PartitionId(0)).unwrap().unwrap();
    assert_eq!((cp.epoch, cp.through, cp.committed_at), (1, 4, 7));
    assert_eq!(cp.manifest, b"manifest 1");
    assert_eq!(s.job("j").unwrap().partition_states[0].events.len(), 2);
}

#[test]
fn a_checkpoint_moves_forward_and_covers_only_what_precedes_it() {
    let mut s = assigned(1);
    let (node, generation) = owner(&s, 0);
    assert_eq!(
        s.apply(3, &checkpoint("j", 0, node, generation, 2, 3)),
        Reply::CheckpointAhead {
            through: 3,
            index: 3
        }
    );
    assert_eq!(
        s.apply(4, &checkpoint("j", 0, node, generation, 2, 2)),
        Reply::Applied
    );
    let stale = Reply::StaleCheckpoint {
        epoch: 2,
        through: 2,
    };
    assert_eq!(
        s.apply(5, &checkpoint("j", 0, node, generation, 2, 4)),
        stale
    );
    assert_eq!(
        s.apply(6, &checkpoint("j", 0, node, generation, 1, 4)),
        stale
    );
    assert_eq!(
        s.apply(7, &checkpoint("j", 0, node, generation, 3, 1)),
        stale
    );
    // A later epoch covering no new events is fine.
    assert_eq!(
        s.apply(8, &checkpoint("j", 0, node, generation, 3, 2)),
        Reply::Applied
    );
}

#[test]
fn a_stopped_job_fences_its_owners_and_a_resubmitted_one_never_reissues_a_generation() {
    let mut s = assigned(2);
    let (node, generation) = owner(&s, 1);
    s.apply(3, &ingest("j", "p", 0, &[(1, b"a")]));
    s.apply(4, &checkpoint("j", 1, node, generation, 1, 3));
    s.apply(5, &ingest("j", "p", 1, &[(1, b"b")]));
    assert_eq!(
        s.apply(6, &Command::StopJob { job: "j".into() }),
        Reply::Applied
    );
    assert_eq!(
        s.apply(7, &Command::StopJob { job: "j".into() }),
        Reply::JobStopped
    );
    let job = s.job("j").unwrap();
    assert!(!job.running && job.assignment.is_empty() && job.producers.is_empty());
    assert!(job.partition_states.iter().all(|p| p.events.is_empty()));
    assert_eq!(
        s.apply(8, &checkpoint("j", 1, node, generation, 2, 5)),
        Reply::JobStopped
    );
    assert_eq!(
        s.apply(9, &ingest("j", "p", 2, &[(1, b"c")])),
        Reply::JobStopped
    );
    assert_eq!(
        s.events_after("j", PartitionId(1), 3).err(),
        Some(ReadError::Stopped { job: "j".into() })
    );
    // The last checkpoint stays readable.
    assert_eq!(
        s.last_checkpoint("j", PartitionId(1))
            .unwrap()
            .unwrap()
            .epoch,
        1
    );
    let last_issued = s.job("j").unwrap().last_issued;
    assert_eq!(s.apply(10, &submit("j", 1)), Reply::Applied);
    let assign = s.plan_assignment("j", &nodes(&[node])).unwrap().unwrap();
    assert_eq!(s.apply(11, &assign), Reply::Applied);
    assert!(owner(&s, 0).1 > last_issued.0);
    assert_eq!(s.last_checkpoint("j", PartitionId(0)).unwrap(), None);
}

#[test]
fn equal_histories_have_equal_checksums_and_a_different_one_differs() {
    let history = [
        submit("j", 2),
        ingest("j", "p", 0, &[(0, b"a"), (1, b"b")]),
        ingest("j", "p", 1, &[(1, b"c")]),
    ];
    let run = |history: &[Command]| {
        let mut s = ClusterState::new();
        for (i, cmd) in history.iter().enumerate() {
            s.apply(i as u64 + 1, cmd);
        }
        s
    };
    let a = run(&history);
    assert_eq!(a.checksum(), run(&history).checksum());
    let mut other = history.clone();
    other[2] = ingest("j", "p", 1, &[(1, b"d")]);
    assert_ne!(a.checksum(), run(&other).checksum());
    let decoded = ClusterState::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(decoded, a);
    assert_eq!(decoded.checksum(), a.checksum());
}

/// What a generated step does, turned into a command against the state as it is.
#[derive(Debug, Clone)]
enum Op {
    Submit {
        job: u8,
        partitions: u32,
    },
    Stop {
        job: u8,
    },
    /// The leader's plan over these live nodes.
    Assign {
        job: u8,
        live: Vec<u64>,
    },
    /// An assignment with arbitrary owners and counters.
    Forged {
        job: u8,
        based_on: u64,
        owners: Vec<(u64, u64)>,
        last_issued: u64,
    },
    /// `seq` relative to the producer's last: 0 repeats it, 1 follows it, 2 skips one.
    Ingest {
        job: u8,
        producer: u8,
        step: u8,
        parts: Vec<(u32, u8)>,
    },
    /// From the real owner if `real`, else from `node` under `generation`.
    Checkpoint {
        job: u8,
        partition: u32,
        real: bool,
        node: u64,
        generation: u64,
        epoch_step: u8,
        through_back: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let job = 0u8..2;
    prop_oneof![
        3 => (job.clone(), 0u32..4).prop_map(|(job, partitions)| Op::Submit { job, partitions }),
        1 => job.clone().prop_map(|job| Op::Stop { job }),
        3 => (job.clone(), proptest::collection::vec(1u64..4, 0..3))
            .prop_map(|(job, live)| Op::Assign { job, live }),
        1 => (job.clone(), 0u64..6, proptest::collection::vec((1u64..4, 0u64..8), 0..4), 0u64..8)
            .prop_map(|(job, based_on, owners, last_issued)| Op::Forged { job, based_on, owners, last_issued }),
        6 => (job.clone(), 0u8..3, prop_oneof![1 => Just(0u8), 6 => Just(1u8), 1 => Just(2u8)],
              proptest::collection::vec((0u32..4, any::<u8>()), 0..3))
            .prop_map(|(job, producer, step, parts)| Op::Ingest { job, producer, step, parts }),
        6 => (job, 0u32..4, proptest::bool::weighted(0.8), 1u64..4, 0u64..6, 0u8..3, 0u8..6)
            .prop_map(|(job, partition, real, node, generation, epoch_step, through_back)| Op::Checkpoint {
                job, partition, real, node, generation, epoch_step, through_back,
            }),
    ]
}

fn job_name(job: u8) -> String {
    format!("job{job}")
}

/// The command `op` stands for when applied at `index` to `state`.
fn command(state: &ClusterState, index: LogIndex, op: &Op) -> Command {
    match op {
        Op::Submit { job, partitions } => Command::SubmitJob {
            job: job_name(*job),
            pipeline_toml: String::new(),
            partitions: *partitions,
            base_dir: String::new(),
        },
        Op::Stop { job } => Command::StopJob {
            job: job_name(*job),
        },
        Op::Assign { job, live } => {
            let live = live.iter().copied().map(NodeId).collect();
            match state.plan_assignment(&job_name(*job), &live) {
                Ok(Some(cmd)) => cmd,
                // Nothing to plan: an empty forged one instead (refused or a no-op).
                _ => Command::StopJob { job: "none".into() },
            }
        }
        Op::Forged {
            job,
            based_on,
            owners,
            last_issued,
        } => Command::Assign {
            job: job_name(*job),
            based_on: Generation(*based_on),
            assignment: owners
                .iter()
                .enumerate()
                .map(|(p, (node, generation))| {
                    let owner = quiver_coordination::assignment::Owner {
                        node: NodeId(*node),
                        generation: Generation(*generation),
                    };
                    (PartitionId(p as u32), owner)
                })
                .collect(),
            last_issued: Generation(*last_issued),
        },
        Op::Ingest {
            job,
            producer,
            step,
            parts,
        } => {
            let name = job_name(*job);
            let producer = format!("producer{producer}");
            let last = state.job(&name).and_then(|j| j.producers.last(&producer));
            let seq = match last {
                None => 10,
                Some(last) => last + u64::from(*step),
            };
            let mut seen = BTreeSet::new();
            let parts = parts
                .iter()
                // Partition 3 never exists and may repeat; others appear once.
                .filter(|(p, _)| seen.insert(*p) || *p == 3)
                .map(|(p, byte)| (PartitionId(*p), vec![*byte; (*byte % 5) as usize]))
                .collect();
            Command::Ingest {
                job: name,
                producer,
                seq,
                parts,
                schema: None,
                rows: Vec::new(),
            }
        }
        Op::Checkpoint {
            job,
            partition,
            real,
            node,
            generation,
            epoch_step,
            through_back,
        } => {
            let name = job_name(*job);
            let j = state.job(&name);
            let current = j.and_then(|j| j.assignment.get(&PartitionId(*partition)));
            let (node, generation) = match current {
                Some(o) if *real => (o.node, o.generation),
                _ => (NodeId(*node), Generation(*generation)),
            };
            let last = j
                .and_then(|j| j.partition_states.get(*partition as usize))
                .and_then(|p| p.checkpoint.as_ref());
            let epoch = last.map_or(0, |c| c.epoch) + u64::from(*epoch_step);
            Command::Checkpoint {
                job: name,
                partition: PartitionId(*partition),
                node,
                generation,
                epoch,
                through: index.saturating_sub(u64::from(*through_back)),
                manifest: vec![*epoch_step],
                state: (*through_back % 2 == 0).then(|| vec![1, 2, 3]),
            }
        }
    }
}

/// Applies `ops` from index 1 on, returning the commands and the state.
fn run(ops: &[Op]) -> (Vec<Command>, Vec<Reply>, ClusterState) {
    let mut state = ClusterState::new();
    let mut commands = Vec::new();
    let mut replies = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let index = i as u64 + 1;
        let cmd = command(&state, index, op);
        replies.push(state.apply(index, &cmd));
        commands.push(cmd);
    }
    (commands, replies, state)
}

/// The events each (job, partition) holds: (index, bytes) in order.
type Events = BTreeMap<(String, u32), Vec<(u64, Vec<u8>)>>;

fn all_events(state: &ClusterState) -> Events {
    let mut all = Events::new();
    for (name, job) in state.jobs() {
        for (p, partition) in job.partition_states.iter().enumerate() {
            let list = partition
                .events
                .iter()
                .flat_map(|(i, parts)| parts.iter().map(|b| (*i, b.clone())))
                .collect();
            all.insert((name.to_owned(), p as u32), list);
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Replicas applying the same log agree, also one that restarted from a snapshot midway.
    #[test]
    fn replicas_applying_the_same_log_agree(ops in proptest::collection::vec(op(), 0..60), cut in 0usize..60) {
        let (commands, replies, leader) = run(&ops);
        let mut follower = ClusterState::new();
        let mut restarted = ClusterState::new();
        for (i, cmd) in commands.iter().enumerate() {
            let index = i as u64 + 1;
            prop_assert_eq!(&follower.apply(index, cmd), &replies[i]);
            if i == cut {
                restarted = ClusterState::from_bytes(&restarted.to_bytes()).unwrap();
            }
            restarted.apply(index, cmd);
        }
        prop_assert_eq!(follower.checksum(), leader.checksum());
        prop_assert_eq!(restarted.checksum(), leader.checksum());
        prop_assert_eq!(&follower, &leader);
    }

    /// Whatever is refused changes nothing; a duplicate changes no events.
    #[test]
    fn refused_commands_change_nothing(ops in proptest::collection::vec(op(), 0..60)) {
        let mut state = ClusterState::new();
        for (i, op) in ops.iter().enumerate() {
            let index = i as u64 + 1;
            let cmd = command(&state, index, op);
            let (before, events_before) = (state.checksum(), all_events(&state));
            let reply = state.apply(index, &cmd);
            match reply {
                Reply::Applied => {}
                Reply::Duplicate { .. } => prop_assert_eq!(all_events(&state), events_before),
                _ => prop_assert_eq!(state.checksum(), before, "{:?} -> {:?}", cmd, reply),
            }
        }
    }

    /// A checkpoint is accepted exactly from the partition's owner under its generation,
    /// moving forward, and covering only events before it; then every partition holds exactly
    /// the events ingested after its last checkpoint, each retried request once.
    #[test]
    fn partitions_hold_exactly_the_events_after_their_last_checkpoint(
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let mut state = ClusterState::new();
        // The reference: every applied ingest's parts, and each partition's last `through`,
        // for the current submission of each job.
        let mut ingested: Events = Events::new();
        let mut through: BTreeMap<(String, u32), u64> = BTreeMap::new();
        let mut applied_seqs: BTreeSet<(String, String, u64)> = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let index = i as u64 + 1;
            let cmd = command(&state, index, op);
            let before = state.clone();
            let reply = state.apply(index, &cmd);
            match &cmd {
                Command::SubmitJob { job, .. } | Command::StopJob { job } if reply == Reply::Applied => {
                    ingested.retain(|(j, _), _| j != job);
                    through.retain(|(j, _), _| j != job);
                    applied_seqs.retain(|(j, _, _)| j != job);
                }
                Command::Ingest { job, producer, seq, parts, .. } => {
                    let key = (job.clone(), producer.clone(), *seq);
                    if reply == Reply::Applied {
                        prop_assert!(applied_seqs.insert(key), "applied twice");
                        for (p, bytes) in parts {
                            ingested.entry((job.clone(), p.0)).or_default().push((index, bytes.clone()));
                        }
                    } else if let Reply::Duplicate { .. } = reply {
                        prop_assert!(applied_seqs.contains(&key));
                    }
                }
                Command::Checkpoint { job, partition, node, generation, epoch, through: t, .. } => {
                    let expected = before.job(job).filter(|j| j.running).is_some_and(|j| {
                        let owner = j.assignment.get(partition);
                        let last = j.partition_states.get(partition.0 as usize).and_then(|p| p.checkpoint.as_ref());
                        owner.is_some_and(|o| o.node == *node && o.generation == *generation)
                            && *t < index
                            && last.is_none_or(|c| *epoch > c.epoch && *t >= c.through)
                    });
                    prop_assert_eq!(reply == Reply::Applied, expected, "{:?} -> {:?}", cmd, reply);
                    if expected {
                        through.insert((job.clone(), partition.0), *t);
                    }
                }
                _ => {}
            }
        }
        for (name, job) in state.jobs() {
            for p in 0..job.partitions {
                let key = (name.to_owned(), p);
                let after = through.get(&key).copied().unwrap_or(0);
                let expected: Vec<(u64, Vec<u8>)> = if job.running {
                    ingested.get(&key).into_iter().flatten().filter(|(i, _)| *i > after).cloned().collect()
                } else {
                    Vec::new()
                };
                prop_assert_eq!(&all_events(&state)[&key], &expected);
                if job.running {
                    prop_assert_eq!(events(&state, name, p, after), expected);
                    if after > 0 {
                        prop_assert_eq!(
                            state.events_after(name, PartitionId(p), after - 1).err(),
                            Some(ReadError::Covered { through: after })
                        );
                    }
                }
            }
        }
    }

    /// A batch entry applies exactly as its commands would one by one at its log index: the
    /// same reply for each, the same state after, the parts of one partition kept in order.
    #[test]
    fn a_batch_applies_as_its_commands_one_by_one_at_its_index(
        ops in proptest::collection::vec(op(), 0..80),
        sizes in proptest::collection::vec(1usize..6, 1..40),
    ) {
        let mut batched = ClusterState::new();
        let mut one_by_one = ClusterState::new();
        let mut ops = ops.iter();
        for (k, &size) in sizes.iter().enumerate() {
            let index = k as u64 + 1;
            let mut commands = Vec::new();
            let mut replies = Vec::new();
            for op in ops.by_ref().take(size) {
                let cmd = command(&one_by_one, index, op);
                replies.push(one_by_one.apply(index, &cmd));
                commands.push(cmd);
            }
            if commands.is_empty() {
                break;
            }
            let reply = batched.apply(index, &Command::Batch { commands });
            prop_assert_eq!(reply, Reply::Batch { replies });
            prop_assert_eq!(&batched, &one_by_one);
            prop_assert_eq!(batched.checksum(), one_by_one.checksum());
        }
        let restored = ClusterState::from_bytes(&batched.to_bytes()).unwrap();
        prop_assert_eq!(&restored, &batched);
    }
}
