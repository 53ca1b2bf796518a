//! Entries the log store acknowledged survive the process being killed at any moment.
//!
//! The test re-runs its own binary as a child that appends entries through openraft's storage
//! API and prints each acknowledged one; the parent kills it with SIGKILL at random moments,
//! reopens the store strictly, and checks that every acknowledged entry is there, intact and
//! in sequence, along with the acknowledged purges and votes. A kill keeps what the process had
//! written to the page cache, so this checks the store's own recovery (reopening after writes
//! cut off at any point), not the disk's; cuts at every byte are in the unit tests.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload};
use quiver_coordination::PartitionId;
use quiver_replication::types::{Entry, LogId, Vote};
use quiver_replication::{Command, GroupId, LogOptions, LogStore};

/// Set in the child: the directory of the log it appends to.
const CHILD_DIR: &str = "QUIVER_REPLICATION_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_entries_survive_kills";
const OPTIONS: LogOptions = LogOptions {
    segment_bytes: 4096,
};

/// The entry at `index`: its term and bytes follow from the index, so the parent can tell
/// whether it is intact. Sizes vary so that records end anywhere in a segment.
fn entry(index: u64) -> Entry {
    let len = (index * 37 % 300) as usize;
    let bytes: Vec<u8> = (0..len).map(|i| (index as usize + i) as u8).collect();
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Ingest {
            job: "crash".into(),
            producer: "child".into(),
            seq: index,
            parts: vec![(PartitionId(0), bytes)],
            schema: None,
            rows: Vec::new(),
        }),
    }
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1 + index / 1000, 1), index)
}

/// Appends, purges and votes until killed, printing what was acknowledged.
fn child(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut store = LogStore::open(dir, GroupId::FIRST, OPTIONS).unwrap();
    let mut out = std::io::stdout().lock();
    runtime.block_on(async {
        let state = store.get_log_state().await.unwrap();
        let mut next = state.last_log_id.map_or(1, |l| l.index + 1);
        loop {
            let count = 1 + next % 4;
            let batch: Vec<Entry> = (next..next + count).map(entry).collect();
            store.blocking_append(batch).await.unwrap();
            next += count;
            writeln!(out, "acked {}", next - 1).unwrap();
            if next % 29 < 4 {
                let vote = Vote::new(next, 1);
                store.save_vote(&vote).await.unwrap();
                writeln!(out, "vote {next}").unwrap();
            }
            if next % 53 < 4 && next > 40 {
                let purged = next - 40;
                store.purge(log_id(purged)).await.unwrap();
                writeln!(out, "purged {purged}").unwrap();
            }
            out.flush().unwrap();
        }
    });
}

/// A small deterministic generator for the moments of the kills.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn acknowledged_entries_survive_kills() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Lcg(0x5eed);
    let (mut acked, mut purged, mut voted) = (0u64, 0u64, 0u64);
    let mut rounds_with_progress = 0;
    for round in 0..12 {
        let mut child = Process::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read while the child runs, so that a full pipe never slows it down.
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(40 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = acked;
        for line in reader.join().unwrap() {
            let mut words = line.split_whitespace();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "acked" => acked = acked.max(n),
                "purged" => purged = purged.max(n),
                "vote" => voted = voted.max(n),
                _ => {}
            }
        }
        if acked > before {
            rounds_with_progress += 1;
        }

        let store = LogStore::open(dir.path(), GroupId::FIRST, OPTIONS)
            .unwrap_or_else(|e| panic!("round {round}: the store does not reopen: {e}"));
        let state = store.log_state();
        let kept_from = state.last_purged_log_id.map_or(1, |p| p.index + 1);
        assert!(
            kept_from > purged,
            "round {round}: purge through {purged} was lost"
        );
        let entries = store.entries(..).unwrap();
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(*e, entry(kept_from + k as u64), "round {round}");
        }
        let last = state.last_log_id.map_or(0, |l| l.index);
        assert!(
            last >= acked,
            "round {round}: acknowledged {acked}, found {last}"
        );
        assert!(
            store.vote().map_or(0, |v| v.leader_id.term) >= voted,
            "round {round}: vote {voted} was lost"
        );
    }
    assert!(
        rounds_with_progress >= 10,
        "only {rounds_with_progress} of 12 children appended anything"
    );
    assert!(purged > 0 && voted > 0, "purged {purged}, voted {voted}");
}
