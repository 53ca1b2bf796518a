//! A one-node group run by openraft over the durable stores: commands are applied and
//! answered, and after a restart the state is the snapshot plus the log re-applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft, ServerState};
use quiver_coordination::{NodeId, PartitionId};
use quiver_replication::types::RaftNodeId;
use quiver_replication::{group, ClusterNode, Command, GroupId, LogOptions, Reply, TypeConfig};

/// A network for a group of one: nobody to talk to.
struct Alone;

fn nobody<E: std::error::Error>() -> RPCError<RaftNodeId, ClusterNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other("a group of one")))
}

impl RaftNetwork<TypeConfig> for Alone {
    async fn append_entries(
        &mut self,
        _: AppendEntriesRequest<TypeConfig>,
        _: RPCOption,
    ) -> Result<
        AppendEntriesResponse<RaftNodeId>,
        RPCError<RaftNodeId, ClusterNode, RaftError<RaftNodeId>>,
    > {
        Err(nobody())
    }

    async fn install_snapshot(
        &mut self,
        _: InstallSnapshotRequest<TypeConfig>,
        _: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftNodeId>,
        RPCError<RaftNodeId, ClusterNode, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        Err(nobody())
    }

    async fn vote(
        &mut self,
        _: VoteRequest<RaftNodeId>,
        _: RPCOption,
    ) -> Result<VoteResponse<RaftNodeId>, RPCError<RaftNodeId, ClusterNode, RaftError<RaftNodeId>>>
    {
        Err(nobody())
    }
}

impl RaftNetworkFactory<TypeConfig> for Alone {
    type Network = Alone;

    async fn new_client(&mut self, _: RaftNodeId, _: &ClusterNode) -> Alone {
        Alone
    }
}

fn ingest(seq: u64) -> Command {
    Command::Ingest {
        job: "clicks".into(),
        producer: "door".into(),
        seq,
        parts: vec![(PartitionId((seq % 2) as u32), vec![seq as u8; 100])],
        schema: None,
        rows: Vec::new(),
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_from_its_snapshot_and_the_log_after_it() {
    let data = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 1024,
    };
    let config = Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let me = ClusterNode {
        peer: "127.0.0.1:7001".into(),
        api: "127.0.0.1:8001".into(),
    };

    let (checksum, last_index, snapshot_index) = {
        let storage = group::open(data.path(), GroupId::FIRST, options).unwrap();
        let reader = storage.state_machine.reader();
        let raft = Raft::new(1, config.clone(), Alone, storage.log, storage.state_machine)
            .await
            .unwrap();
        raft.initialize(BTreeMap::from([(1, me.clone())]))
            .await
            .unwrap();
        raft.wait(WAIT)
            .state(ServerState::Leader, "leader")
            .await
            .unwrap();

        let submit = Command::SubmitJob {
            job: "clicks".into(),
            pipeline_toml: "[source]".into(),
            partitions: 2,
            base_dir: String::new(),
        };
        assert_eq!(
            raft.client_write(submit).await.unwrap().data,
            Reply::Applied
        );
        let assign = reader.read(|state, _| {
            state
                .plan_assignment("clicks", &BTreeSet::from([NodeId(1)]))
                .unwrap()
                .unwrap()
        });
        assert_eq!(
            raft.client_write(assign).await.unwrap().data,
            Reply::Applied
        );
        for seq in 0..20 {
            let reply = raft.client_write(ingest(seq)).await.unwrap().data;
            assert_eq!(reply, Reply::Applied);
        }
        let retried = raft.client_write(ingest(19)).await.unwrap().data;
        assert_eq!(retried, Reply::Duplicate { last: 19 });

        // A snapshot, and the log it covers purged.
        let applied = reader.checksum().1.unwrap();
        raft.trigger().snapshot().await.unwrap();
        raft.wait(WAIT).snapshot(applied, "snapshot").await.unwrap();
        raft.trigger().purge_log(applied.index).await.unwrap();
        raft.wait(WAIT)
            .metrics(|m| m.purged == Some(applied), "purged")
            .await
            .unwrap();

        // Entries after the snapshot live only in the log.
        for seq in 20..30 {
            raft.client_write(ingest(seq)).await.unwrap();
        }
        // Every write above was answered after it was applied.
        let (checksum, last) = reader.checksum();
        let last = last.unwrap();
        raft.shutdown().await.unwrap();
        (checksum, last.index, applied.index)
    };
    // The core task is gone: its stores are dropped and their directories unlocked.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let storage = group::open(data.path(), GroupId::FIRST, options).unwrap();
    assert_eq!(
        storage.state_machine.last_applied().map(|l| l.index),
        Some(snapshot_index)
    );
    let reader = storage.state_machine.reader();
    let raft = Raft::new(1, config, Alone, storage.log, storage.state_machine)
        .await
        .unwrap();
    raft.wait(WAIT)
        .state(ServerState::Leader, "leader again")
        .await
        .unwrap();
    raft.wait(WAIT)
        .applied_index_at_least(Some(last_index), "re-applied")
        .await
        .unwrap();
    // The new term's first entry is blank: it changes nothing in the state.
    assert_eq!(reader.checksum().0, checksum);
    let events = reader.read(|state, _| {
        state
            .events_after("clicks", PartitionId(1), 0)
            .unwrap()
            .count()
    });
    assert_eq!(events, 15);
    raft.shutdown().await.unwrap();
}
