use openraft::{CommittedLeaderId, EntryPayload};
use quiver_coordination::PartitionId;

use super::*;
use crate::command::Command;

/// Small segments, so that a few entries span several.
const SMALL: LogOptions = LogOptions { segment_bytes: 200 };

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An ingest entry whose bytes tell its index and term.
fn entry(term: u64, index: u64) -> Entry {
    let bytes = format!("events of {index} in term {term}").into_bytes();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Ingest {
            job: "j".into(),
            producer: "p".into(),
            seq: index,
            parts: vec![(PartitionId(0), bytes)],
            schema: None,
            rows: Vec::new(),
        }),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|i| entry(term, i)).collect()
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(dir, GroupId::FIRST, SMALL).unwrap()
}

fn all(store: &LogStore) -> Vec<Entry> {
    store.entries(..).unwrap()
}

fn segments(dir: &Path) -> Vec<String> {
    directory::list(dir, parse_segment_name)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn state(store: &LogStore) -> (Option<LogId>, Option<LogId>) {
    let s = store.log_state();
    (s.last_purged_log_id, s.last_log_id)
}

#[test]
fn appended_entries_read_back_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(state(&store), (None, None));
    store.append_entries(entries(1, 0..=4)).unwrap();
    store.append_entries(entries(2, 5..=9)).unwrap();
    assert_eq!(
        store.entries(3..6).unwrap(),
        [entry(1, 3), entry(1, 4), entry(2, 5)]
    );
    assert!(segments(dir.path()).len() > 2, "{:?}", segments(dir.path()));
    drop(store);
    let store = open(dir.path());
    let mut expected = entries(1, 0..=4);
    expected.extend(entries(2, 5..=9));
    assert_eq!(all(&store), expected);
    assert_eq!(state(&store), (None, Some(log_id(2, 9))));
    assert_eq!(store.entries(8..=20).unwrap(), entries(2, 8..=9));
    store.append_entries(entries(2, 10..=10)).unwrap();
    assert_eq!(all(&open_again(store, dir.path())).len(), 11);
}

/// Drops `store` (releasing its lock) and opens the directory again.
fn open_again(store: LogStore, dir: &Path) -> LogStore {
    drop(store);
    open(dir)
}

#[test]
fn segments_are_named_by_their_first_index_and_carry_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 3..=12)).unwrap();
    drop(store);
    let names = segments(dir.path());
    assert_eq!(names[0], "00000000000000000003.seg");
    for name in &names {
        let bytes = fs::read(dir.path().join(name)).unwrap();
        let scan = records::scan(&bytes);
        let first = parse_segment_name(name).unwrap();
        let header = format::check_header(
            Path::new(name),
            scan.records[0].payload,
            Kind::Segment,
            GroupId::FIRST,
        );
        assert_eq!(header.unwrap(), first);
    }
}

#[test]
fn entries_must_continue_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 1..=3)).unwrap();
    let refused = store.append_entries(entries(1, 5..=5)).unwrap_err();
    assert!(matches!(
        refused,
        StoreError::OutOfSequence {
            expected: 4,
            found: 5
        }
    ));
    // A refused append leaves the store unusable until reopened, with the log intact.
    assert!(matches!(store.entries(..), Err(StoreError::Broken { .. })));
    let store = open_again(store, dir.path());
    assert_eq!(all(&store), entries(1, 1..=3));
}

#[test]
fn a_vote_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.vote(), None);
    let vote = Vote::new(4, 2);
    store.set_vote(vote).unwrap();
    let store = open_again(store, dir.path());
    assert_eq!(store.vote(), Some(vote));
    let committed = Vote::new_committed(5, 3);
    store.set_vote(committed).unwrap();
    assert_eq!(open_again(store, dir.path()).vote(), Some(committed));
}

#[test]
fn a_truncation_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=12)).unwrap();
    // Inside a segment, then at a segment's first entry.
    store.truncate_from(9).unwrap();
    let store = open_again(store, dir.path());
    assert_eq!(all(&store), entries(1, 0..=8));
    let first_of_last = parse_segment_name(segments(dir.path()).last().unwrap()).unwrap();
    store.truncate_from(first_of_last).unwrap();
    assert_eq!(state(&store).1, Some(log_id(1, first_of_last - 1)));
    store
        .append_entries(entries(2, first_of_last..=first_of_last + 2))
        .unwrap();
    let store = open_again(store, dir.path());
    let mut expected = entries(1, 0..=first_of_last - 1);
    expected.extend(entries(2, first_of_last..=first_of_last + 2));
    assert_eq!(all(&store), expected);
    store.truncate_from(0).unwrap();
    assert!(segments(dir.path()).is_empty());
    assert_eq!(state(&open_again(store, dir.path())), (None, None));
}

#[test]
fn a_purge_survives_reopening_and_deletes_the_segments_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=12)).unwrap();
    let before = segments(dir.path()).len();
    store.purge_through(log_id(1, 6)).unwrap();
    assert!(segments(dir.path()).len() < before);
    let store = open_again(store, dir.path());
    assert_eq!(all(&store), entries(1, 7..=12));
    assert_eq!(state(&store), (Some(log_id(1, 6)), Some(log_id(1, 12))));
    // A purge never goes back.
    store.purge_through(log_id(1, 3)).unwrap();
    assert_eq!(state(&store).0, Some(log_id(1, 6)));
    // Beyond the last entry: nothing is left, and the log continues after the purged id.
    store.purge_through(log_id(2, 20)).unwrap();
    assert!(segments(dir.path()).is_empty());
    let store = open_again(store, dir.path());
    assert_eq!(state(&store), (Some(log_id(2, 20)), Some(log_id(2, 20))));
    assert!(matches!(
        store.append_entries(entries(2, 22..=22)),
        Err(StoreError::OutOfSequence {
            expected: 21,
            found: 22
        })
    ));
    let store = open_again(store, dir.path());
    store.append_entries(entries(2, 21..=23)).unwrap();
    assert_eq!(all(&open_again(store, dir.path())), entries(2, 21..=23));
}

#[test]
fn segments_a_crash_left_behind_a_purge_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=12)).unwrap();
    drop(store);
    let names = segments(dir.path());
    // The purge's metadata was written, then the crash came before any segment was deleted.
    let second_first = parse_segment_name(&names[1]).unwrap();
    let meta = LogMeta {
        purged: Some(log_id(1, second_first)),
    };
    format::write_value(&dir.path().join(META), Kind::LogMeta, GroupId::FIRST, &meta).unwrap();
    let store = open(dir.path());
    assert_eq!(segments(dir.path()), names[1..]);
    assert_eq!(all(&store), entries(1, second_first + 1..=12));
}

/// The offsets at which each record of `file` starts, after the header.
fn record_offsets(file: &Path) -> Vec<u64> {
    let bytes = fs::read(file).unwrap();
    records::scan(&bytes).records[1..]
        .iter()
        .map(|r| r.offset)
        .collect()
}

#[test]
fn a_torn_last_record_is_cut_off_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=6)).unwrap();
    drop(store);
    let last = dir.path().join(segments(dir.path()).last().unwrap());
    let whole = fs::read(&last).unwrap();
    let last_record = *record_offsets(&last).last().unwrap();
    for len in last_record + 1..whole.len() as u64 {
        fs::write(&last, &whole[..len as usize]).unwrap();
        let store = open(dir.path());
        assert_eq!(all(&store), entries(1, 0..=5), "cut at {len}");
        assert_eq!(fs::metadata(&last).unwrap().len(), last_record);
        // The log goes on from there.
        store.append_entries(entries(2, 6..=6)).unwrap();
        let mut expected = entries(1, 0..=5);
        expected.push(entry(2, 6));
        assert_eq!(all(&open_again(store, dir.path())), expected);
    }
}

/// Flips one byte of `file` at `at`.
fn flip(file: &Path, at: u64) {
    let mut bytes = fs::read(file).unwrap();
    bytes[at as usize] ^= 0x20;
    fs::write(file, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_a_segment_is_refused_naming_the_file_and_offset_and_repair_keeps_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=14)).unwrap();
    drop(store);
    let names = segments(dir.path());
    assert!(names.len() >= 3);
    let damaged = dir.path().join(&names[1]);
    let offsets = record_offsets(&damaged);
    let first = parse_segment_name(&names[1]).unwrap();
    // Every record of a segment before the last, damaged in its payload.
    for (k, &offset) in offsets.iter().enumerate() {
        let copy = tempfile::tempdir().unwrap();
        for name in fs::read_dir(dir.path()).unwrap() {
            let name = name.unwrap().path();
            fs::copy(&name, copy.path().join(name.file_name().unwrap())).unwrap();
        }
        let target = copy.path().join(&names[1]);
        flip(&target, offset + records::HEADER_LEN as u64 + 3);
        match LogStore::open(copy.path(), GroupId::FIRST, SMALL) {
            Err(StoreError::Damaged {
                file,
                offset: at,
                damage: Damage::Record(_),
            }) => assert_eq!((file, at), (target.clone(), offset)),
            Err(e) => panic!("record {k}: {e}"),
            Ok(_) => panic!("record {k}: opened"),
        }
        let (store, repairs) =
            LogStore::open_repairing(copy.path(), GroupId::FIRST, SMALL).unwrap();
        let kept = first + k as u64;
        let prefix: Vec<Entry> = (0..kept).map(|i| entry(1, i)).collect();
        assert_eq!(all(&store), prefix);
        assert!(!repairs.is_empty());
        // Later segments were moved aside, named as such.
        for later in &names[2..] {
            assert!(copy.path().join(format!("{later}.damaged")).exists());
        }
        // The repaired log opens strictly, and continues.
        store.append_entries(entries(2, kept..=kept + 1)).unwrap();
        drop(store);
        let store = LogStore::open(copy.path(), GroupId::FIRST, SMALL).unwrap();
        assert_eq!(store.log_state().last_log_id, Some(log_id(2, kept + 1)));
    }
}

#[test]
fn a_damaged_segment_header_or_a_missing_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=14)).unwrap();
    drop(store);
    let names = segments(dir.path());
    let second = dir.path().join(&names[1]);
    let bytes = fs::read(&second).unwrap();
    flip(&second, 14);
    assert!(matches!(
        LogStore::open(dir.path(), GroupId::FIRST, SMALL),
        Err(StoreError::Damaged { file, offset: 0, .. }) if file == second
    ));
    fs::remove_file(&second).unwrap();
    let third = dir.path().join(&names[2]);
    let expected = parse_segment_name(&names[1]).unwrap();
    let found = parse_segment_name(&names[2]).unwrap();
    match LogStore::open(dir.path(), GroupId::FIRST, SMALL) {
        Err(StoreError::Damaged {
            file,
            offset: 0,
            damage:
                Damage::Sequence {
                    expected: e,
                    found: f,
                },
        }) => assert_eq!((file, e, f), (third, expected, found)),
        other => panic!("{:?}", other.err()),
    }
    let (store, _) = LogStore::open_repairing(dir.path(), GroupId::FIRST, SMALL).unwrap();
    assert_eq!(all(&store), entries(1, 0..=expected - 1));
    drop(store);
    fs::write(&second, bytes).unwrap();
    // The moved-aside segments stay aside; the restored one continues the log.
    assert_eq!(all(&open(dir.path())).len() as u64, found);
}

#[test]
fn a_damaged_vote_is_refused_and_repair_drops_it_keeping_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=4)).unwrap();
    store.set_vote(Vote::new(1, 1)).unwrap();
    drop(store);
    let vote = dir.path().join(VOTE);
    flip(&vote, 30);
    assert!(matches!(
        LogStore::open(dir.path(), GroupId::FIRST, SMALL),
        Err(StoreError::Damaged { file, .. }) if file == vote
    ));
    let (store, repairs) = LogStore::open_repairing(dir.path(), GroupId::FIRST, SMALL).unwrap();
    assert_eq!(store.vote(), None);
    assert_eq!(all(&store), entries(1, 0..=4));
    assert_eq!(
        repairs,
        [Repair::MovedAside {
            file: vote.clone(),
            to: dir.path().join("vote.damaged")
        }]
    );
}

#[test]
fn a_damaged_purge_record_is_refused_and_repair_discards_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=8)).unwrap();
    store.purge_through(log_id(1, 2)).unwrap();
    store.set_vote(Vote::new(1, 1)).unwrap();
    drop(store);
    let meta = dir.path().join(META);
    flip(&meta, 5);
    assert!(matches!(
        LogStore::open(dir.path(), GroupId::FIRST, SMALL),
        Err(StoreError::Damaged { file, .. }) if file == meta
    ));
    let (store, repairs) = LogStore::open_repairing(dir.path(), GroupId::FIRST, SMALL).unwrap();
    assert_eq!(state(&store), (None, None));
    assert_eq!(store.vote(), Some(Vote::new(1, 1)));
    assert!(repairs.len() >= 2);
    assert!(segments(dir.path()).is_empty());
}

#[test]
fn files_of_another_group_are_refused_even_when_repairing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path(), GroupId(1), SMALL).unwrap();
    store.append_entries(entries(1, 0..=3)).unwrap();
    drop(store);
    for repairing in [false, true] {
        let opened = if repairing {
            LogStore::open_repairing(dir.path(), GroupId(0), SMALL).map(|(s, _)| s)
        } else {
            LogStore::open(dir.path(), GroupId(0), SMALL)
        };
        assert!(matches!(
            opened,
            Err(StoreError::WrongGroup {
                found: GroupId(1),
                expected: GroupId(0),
                ..
            })
        ));
    }
}

#[test]
fn a_directory_has_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(
        LogStore::open(dir.path(), GroupId::FIRST, SMALL),
        Err(StoreError::Locked { .. })
    ));
    drop(store);
    open(dir.path());
}

#[test]
fn a_record_failing_its_checksum_on_a_later_read_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=2)).unwrap();
    let seg = dir.path().join(&segments(dir.path())[0]);
    let offset = record_offsets(&seg)[1];
    flip(&seg, offset + 20);
    assert!(matches!(
        store.entries(1..2),
        Err(StoreError::Damaged { file, offset: at, .. }) if file == seg && at == offset
    ));
    assert_eq!(store.entries(0..1).unwrap(), entries(1, 0..=0));
}

#[test]
fn an_empty_last_segment_does_not_hide_the_entries_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append_entries(entries(1, 0..=6)).unwrap();
    drop(store);
    // A crash right after a new segment was created, before its first entry was written.
    let header = format::header(Kind::Segment, GroupId::FIRST, 7);
    fs::write(
        dir.path().join(segment_name(7)),
        records::frames([&header[..]]),
    )
    .unwrap();
    let store = open(dir.path());
    assert_eq!(state(&store), (None, Some(log_id(1, 6))));
    store.append_entries(entries(1, 7..=7)).unwrap();
    assert_eq!(all(&open_again(store, dir.path())), entries(1, 0..=7));
}
