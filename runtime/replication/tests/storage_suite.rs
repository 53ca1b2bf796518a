//! openraft's own storage test suite against the durable log and state machine.

use openraft::testing::{StoreBuilder, Suite};
use quiver_replication::types::StorageError;
use quiver_replication::{group, GroupId, LogOptions, LogStore, StateMachineStore, TypeConfig};
use tempfile::TempDir;

/// A fresh group's storage in a temporary directory, removed when the test drops it.
struct FreshGroup {
    options: LogOptions,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FreshGroup {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let storage =
            group::open(dir.path(), GroupId::FIRST, self.options).expect("a fresh group opens");
        Ok((dir, storage.log, storage.state_machine))
    }
}

/// The suite builds its own runtime for each test, so this is a plain test.
#[test]
fn the_stores_pass_openrafts_storage_suite() {
    Suite::test_all(FreshGroup {
        options: LogOptions::default(),
    })
    .unwrap();
}

/// The same with segments so small that every entry starts a new one.
#[test]
fn the_stores_pass_openrafts_storage_suite_with_one_entry_per_segment() {
    Suite::test_all(FreshGroup {
        options: LogOptions { segment_bytes: 1 },
    })
    .unwrap();
}
