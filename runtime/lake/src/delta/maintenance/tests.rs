use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;

use super::*;
use crate::delta::tests::{contents, expected, partitioned, rows, walk, write};
use crate::delta::{Commit, DataFile, Mode};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn file(path: &str, size: u64, partition: &str) -> PlanFile {
    PlanFile {
        path: path.into(),
        size,
        partition: vec![Some(partition.into())],
    }
}

fn options(target_size: u64, min_files: usize) -> CompactOptions {
    CompactOptions {
        target_size,
        min_files,
    }
}

#[test]
fn the_plan_packs_each_partitions_small_files_in_order_into_groups_up_to_the_target() {
    let files = [
        file("a1", 40, "a"),
        file("b1", 10, "b"),
        file("a2", 40, "a"),
        file("a3", 500, "a"), // not small: stays
        file("a4", 30, "a"),
        file("a5", 50, "a"),
        file("b2", 10, "b"),
    ];
    // a: 40+40 then 30+50 (a third 40 would pass 100); b: 10+10.
    assert_eq!(
        plan(&files, &options(100, 2)),
        vec![vec![0, 2], vec![4, 5], vec![1, 6]]
    );
}

#[test]
fn the_plan_leaves_lone_files_and_partitions_with_too_few_small_files() {
    let files = [
        file("a1", 80, "a"),
        file("a2", 80, "a"), // 160 > 100: two groups of one
        file("b1", 10, "b"),
        file("b2", 10, "b"),
        file("c1", 10, "c"),
    ];
    assert_eq!(plan(&files, &options(100, 2)), vec![vec![2, 3]]);
    assert!(plan(&files, &options(100, 3)).is_empty());
    // Less than 2 means 2: one file alone is never rewritten.
    assert_eq!(plan(&files, &options(100, 0)), vec![vec![2, 3]]);
    assert!(plan(&[], &options(100, 2)).is_empty());
}

/// The ids of a data file, in file order.
fn ids_in(path: &Path) -> Vec<i64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|b| {
            let b = b.unwrap();
            let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            ids.values().to_vec()
        })
        .collect()
}

/// A partitioned table of `commits` appends of 10 rows each (ids in commit order), 3 files a
/// commit (one per day).
fn table_of_appends(dir: &Path, commits: i64) -> Table {
    let table = Table::at(dir).unwrap();
    for c in 0..commits {
        write(
            &table,
            &[rows(c * 10..c * 10 + 10)],
            partitioned(),
            Commit::default(),
        );
    }
    table
}

fn files_of(table: &Table, version: Option<u64>) -> Vec<DataFile> {
    table.files(version).unwrap().1
}

#[test]
fn compaction_rewrites_every_row_once_into_fewer_files_as_one_version_that_changes_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_of_appends(dir.path(), 5);
    let before = files_of(&table, None);
    assert_eq!(before.len(), 15);
    assert_eq!(contents(&before), expected(0..50));

    let report = compact(&table, &CompactOptions::default()).unwrap();
    assert_eq!(report.version, Some(5));
    assert_eq!(
        (report.partitions, report.files_removed, report.files_added),
        (3, 15, 3)
    );
    assert_eq!(report.rows, 50);
    assert_eq!(
        report.bytes_before,
        before.iter().map(|f| f.size).sum::<u64>()
    );
    let after = files_of(&table, None);
    assert_eq!(after.len(), 3);
    assert_eq!(
        report.bytes_after,
        after.iter().map(|f| f.size).sum::<u64>()
    );
    assert_eq!(contents(&after), expected(0..50));
    // Rows keep the order they were written in: commit by commit.
    for f in &after {
        let ids = ids_in(&f.path);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    let commit = log::read_commit(&table, 5).unwrap();
    assert_eq!(commit.operation.as_deref(), Some("OPTIMIZE"));
    assert_eq!((commit.adds.len(), commit.removes.len()), (3, 15));
    assert!(commit.adds.iter().all(|a| !a.data_change));
    assert!(commit.removes.iter().all(|r| !r.data_change));
    assert_eq!(
        commit.parameters["targetSize"],
        DEFAULT_TARGET_SIZE.to_string()
    );

    // Incremental readers across it read each row once, and nothing new after it.
    assert_eq!(
        contents(&table.added_since(0, None).unwrap().1),
        expected(10..50)
    );
    assert!(table.added_since(4, None).unwrap().1.is_empty());
    // The older version still reads as it was: its files stay until vacuumed.
    assert_eq!(contents(&files_of(&table, Some(4))), expected(0..50));

    // Compacted already: nothing to do, no commit.
    let again = compact(&table, &CompactOptions::default()).unwrap();
    assert_eq!(again, CompactReport::default());
    assert_eq!(table.version().unwrap(), 5);
}

#[test]
fn compaction_writes_files_of_at_most_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    for c in 0..6 {
        write(
            &table,
            &[rows(c * 100..c * 100 + 100)],
            WriteOptions::default(),
            Commit::default(),
        );
    }
    let before = files_of(&table, None);
    let largest = before.iter().map(|f| f.size).max().unwrap();
    // Room for two files a group, not three.
    let report = compact(&table, &options(largest * 5 / 2, 2)).unwrap();
    assert_eq!((report.files_removed, report.files_added), (6, 3));
    let after = files_of(&table, None);
    assert_eq!(after.len(), 3);
    let ids: Vec<i64> = after.iter().flat_map(|f| ids_in(&f.path)).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, (0..600).collect::<Vec<_>>());
}

#[test]
fn the_files_a_compaction_removes_are_found_only_while_they_are_live() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_of_appends(dir.path(), 2);
    let snapshot = table.snapshot(None).unwrap();
    let listing = list(&table, &snapshot).unwrap();
    let chosen: HashSet<String> = listing.files.iter().map(|f| f.path.clone()).collect();
    let (removals_now, found) = removals(&table, listing.batches, &chosen).unwrap();
    assert_eq!(found, 6);
    assert!(!removals_now.is_empty());
    // An append leaves them live; an overwrite removes them.
    write(&table, &[rows(20..25)], partitioned(), Commit::default());
    let latest = list(&table, &table.snapshot(None).unwrap()).unwrap();
    assert_eq!(removals(&table, latest.batches, &chosen).unwrap().1, 6);
    write(
        &table,
        &[rows(100..101)],
        WriteOptions {
            mode: Mode::Overwrite,
            ..WriteOptions::default()
        },
        Commit::default(),
    );
    let latest = list(&table, &table.snapshot(None).unwrap()).unwrap();
    let (none, found) = removals(&table, latest.batches, &chosen).unwrap();
    assert_eq!((none.len(), found), (0, 0));
}

fn parquet_files(dir: &Path) -> usize {
    walk(dir).iter().filter(|p| p.ends_with(".parquet")).count()
}

#[test]
fn a_compaction_that_loses_the_race_to_an_append_is_made_again_on_the_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_of_appends(dir.path(), 3);
    let mut appended = false;
    let report = compact_with(&table, &CompactOptions::default(), || {
        if !appended {
            appended = true;
            write(&table, &[rows(30..33)], partitioned(), Commit::default());
        }
    })
    .unwrap();
    assert_eq!(report.version, Some(4));
    assert_eq!(
        log::read_commit(&table, 3).unwrap().operation.as_deref(),
        Some("WRITE")
    );
    // The append's own files are left alone; every row is there once.
    assert_eq!(files_of(&table, None).len(), 6);
    assert_eq!(contents(&files_of(&table, None)), expected(0..33));
    assert_eq!(
        contents(&table.added_since(2, None).unwrap().1),
        expected(30..33)
    );
}

#[test]
fn a_compaction_whose_files_another_writer_removed_gives_up_and_deletes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_of_appends(dir.path(), 3);
    let overwrite = WriteOptions {
        mode: Mode::Overwrite,
        ..WriteOptions::default()
    };
    let mut before = 0;
    let e = compact_with(&table, &CompactOptions::default(), || {
        write(
            &table,
            &[rows(100..103)],
            overwrite.clone(),
            Commit::default(),
        );
        // The table's files and the removed ones, without the compaction's own.
        before = parquet_files(dir.path()) - 3;
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            LakeError::CompactionConflict {
                version: 3,
                missing: 9,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(parquet_files(dir.path()), before);
    assert_eq!(table.version().unwrap(), 3);
    assert_eq!(contents(&files_of(&table, None)), expected(100..103));
}

fn set_mtime(path: &Path, at: SystemTime) {
    std::fs::File::open(path).unwrap().set_modified(at).unwrap();
}

fn create(path: &Path, at: SystemTime) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"not referenced").unwrap();
    set_mtime(path, at);
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn vacuum_deletes_only_unreferenced_files_past_the_retention_and_a_dry_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_of_appends(dir.path(), 2);
    let compacted_away: Vec<PathBuf> = files_of(&table, None)
        .into_iter()
        .map(|f| f.path.strip_prefix(table.dir()).unwrap().to_path_buf())
        .collect();
    compact(&table, &CompactOptions::default()).unwrap();
    let now = SystemTime::now();
    let root = table.dir();
    // Left by a killed writer long ago, and by a writer still running.
    create(
        &root.join("day=d0/part-orphan.snappy.parquet"),
        now - 10 * DAY,
    );
    create(&root.join("day=d1/part-running.snappy.parquet"), now);
    // Never touched, however old.
    for hidden in [
        ".hidden",
        "_staging",
        "day=d2/.part.crc",
        "_tmp/part-x.parquet",
    ] {
        create(&root.join(hidden), now - 10 * DAY);
    }
    let gone_dir = root.join("day=gone");
    std::fs::create_dir(&gone_dir).unwrap();
    set_mtime(&gone_dir, now - 10 * DAY);
    let files_before = walk(root).len();

    // Today: the compaction's removals are recent; only the old orphan and old empty
    // directory go.
    let report = vacuum(&table, &VacuumOptions::default(), now).unwrap();
    assert_eq!(
        names(&report.files),
        vec!["day=d0/part-orphan.snappy.parquet"]
    );
    assert_eq!(report.bytes, 14);
    assert_eq!(names(&report.directories), vec!["day=gone"]);
    assert!(!gone_dir.exists());
    assert_eq!(contents(&files_of(&table, Some(1))), expected(0..20));

    // Eight days on, a dry run lists the removed files and the other orphan, and deletes
    // nothing.
    let later = now + 8 * DAY;
    let dry = VacuumOptions {
        dry_run: true,
        ..VacuumOptions::default()
    };
    let report = vacuum(&table, &dry, later).unwrap();
    let mut would: Vec<String> = compacted_away
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    would.push("day=d1/part-running.snappy.parquet".into());
    would.sort();
    assert_eq!(names(&report.files), would);
    assert!(report.dry_run && report.directories.is_empty());
    assert_eq!(walk(root).len(), files_before - 1);

    let report = vacuum(&table, &VacuumOptions::default(), later).unwrap();
    assert_eq!(names(&report.files), would);
    assert_eq!(contents(&files_of(&table, None)), expected(0..20));
    for hidden in [
        ".hidden",
        "_staging",
        "day=d2/.part.crc",
        "_tmp/part-x.parquet",
    ] {
        assert!(root.join(hidden).exists(), "{hidden} was deleted");
    }
    // The older version's files are gone now.
    let old = files_of(&table, Some(1));
    assert!(old.iter().all(|f| !f.path.exists()));
    // Nothing more to do.
    let report = vacuum(&table, &VacuumOptions::default(), later).unwrap();
    assert!(report.files.is_empty() && report.directories.is_empty());
}

#[test]
fn a_retention_under_an_hour_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let table = table_of_appends(dir.path(), 1);
    let short = VacuumOptions {
        retention: Duration::from_secs(60),
        ..VacuumOptions::default()
    };
    let e = vacuum(&table, &short, SystemTime::now()).unwrap_err();
    assert!(matches!(e, LakeError::RetentionTooShort { .. }), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    let forced = VacuumOptions {
        force: true,
        ..short
    };
    assert!(vacuum(&table, &forced, SystemTime::now()).is_ok());
}

#[test]
fn hidden_names_are_those_starting_with_a_dot_or_underscore_except_partition_directories() {
    assert!(is_hidden("_delta_log", true));
    assert!(is_hidden(".git", true));
    assert!(is_hidden("_SUCCESS", false));
    assert!(is_hidden(".part-1.parquet.crc", false));
    assert!(is_hidden("_k=1", false));
    assert!(!is_hidden("_k=1", true));
    assert!(!is_hidden("day=d1", true));
    assert!(!is_hidden("part-1.parquet", false));
}

/// Points in time around a fixed now, as the cases below name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Old,
    Recent,
    Future,
}

#[test]
fn expired_files_are_unreferenced_ones_whose_removal_and_modification_are_both_old() {
    let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
    let at = |w: When| match w {
        When::Old => now - 8 * DAY,
        When::Recent => now - DAY,
        When::Future => now + DAY,
    };
    let whens = [When::Old, When::Recent, When::Future];
    let mut files = Vec::new();
    let mut live = HashSet::new();
    let mut removed = HashMap::new();
    let mut expected = Vec::new();
    for modified in whens {
        for removal in [
            None,
            Some(When::Old),
            Some(When::Recent),
            Some(When::Future),
        ] {
            for is_live in [false, true] {
                let path = PathBuf::from(format!("{modified:?}-{removal:?}-{is_live}"));
                files.push(FileOnDisk {
                    path: path.clone(),
                    size: 1,
                    modified: at(modified),
                });
                if is_live {
                    live.insert(path.clone());
                }
                if let Some(r) = removal {
                    removed.insert(path.clone(), at(r));
                }
                if !is_live && modified == When::Old && matches!(removal, None | Some(When::Old)) {
                    expected.push(path);
                }
            }
        }
    }
    let got: Vec<PathBuf> = expired(&files, &live, &removed, now, 7 * DAY)
        .into_iter()
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(got, expected);
    // Exactly at the retention counts as past it.
    let edge = [FileOnDisk {
        path: "edge".into(),
        size: 1,
        modified: now - 7 * DAY,
    }];
    assert_eq!(
        expired(&edge, &HashSet::new(), &HashMap::new(), now, 7 * DAY).len(),
        1
    );
}

/// Files with modification and removal times as seconds before (or, negative, after) now.
fn disk(
    specs: &[(i64, Option<i64>, bool)],
) -> (
    Vec<FileOnDisk>,
    HashSet<PathBuf>,
    HashMap<PathBuf, SystemTime>,
) {
    let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
    let at = |secs: i64| {
        if secs >= 0 {
            now - Duration::from_secs(secs as u64)
        } else {
            now + Duration::from_secs(secs.unsigned_abs())
        }
    };
    let mut files = Vec::new();
    let mut live = HashSet::new();
    let mut removed = HashMap::new();
    for (i, (modified, removal, is_live)) in specs.iter().enumerate() {
        let path = PathBuf::from(format!("f{i}"));
        files.push(FileOnDisk {
            path: path.clone(),
            size: i as u64,
            modified: at(*modified),
        });
        if *is_live {
            live.insert(path.clone());
        }
        if let Some(r) = removal {
            removed.insert(path, at(*r));
        }
    }
    (files, live, removed)
}

proptest! {
    #[test]
    fn vacuum_never_takes_a_live_or_young_file_and_takes_more_with_time(
        specs in prop::collection::vec(
            (-1000i64..100_000, prop::option::of(-1000i64..100_000), any::<bool>()),
            0..40,
        ),
        retention in 0u64..50_000,
        extra in 0u64..50_000,
    ) {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let (files, live, removed) = disk(&specs);
        let retention = Duration::from_secs(retention);
        let taken = expired(&files, &live, &removed, now, retention);
        for f in &taken {
            prop_assert!(!live.contains(&f.path));
            prop_assert!(now.duration_since(f.modified).unwrap() >= retention);
            if let Some(r) = removed.get(&f.path) {
                prop_assert!(now.duration_since(*r).unwrap() >= retention);
            }
        }
        let names = |v: Vec<&FileOnDisk>| v.into_iter().map(|f| f.path.clone()).collect::<HashSet<_>>();
        let taken = names(taken);
        // Later, or with a shorter retention, a vacuum takes at least as much.
        let later = names(expired(&files, &live, &removed, now + Duration::from_secs(extra), retention));
        prop_assert!(taken.is_subset(&later));
        let longer = names(expired(&files, &live, &removed, now, retention + Duration::from_secs(extra)));
        prop_assert!(longer.is_subset(&taken));
    }
}

#[test]
fn history_shows_the_run_that_made_each_commit_and_the_new_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    write(
        &table,
        &[rows(0..10)],
        partitioned(),
        Commit {
            transaction: Some(("quiver:p.toml:land".into(), 3)),
            parameters: vec![
                (PIPELINE_PARAMETER.into(), "p.toml".into()),
                (STAGE_PARAMETER.into(), "land".into()),
                (RUN_PARAMETER.into(), "3".into()),
            ],
        },
    );
    write(
        &table,
        &[rows(10..14)],
        partitioned(),
        Commit {
            transaction: None,
            parameters: vec![
                (JOB_PARAMETER.into(), "clicks".into()),
                (EPOCH_PARAMETER.into(), "12".into()),
            ],
        },
    );
    compact(&table, &CompactOptions::default()).unwrap();
    let h = history(&table, 10).unwrap();
    assert_eq!(
        h.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 1, 0]
    );
    assert_eq!(h[0].operation.as_deref(), Some("OPTIMIZE"));
    assert_eq!((h[0].files_added, h[0].files_removed), (3, 6));
    assert_eq!(h[0].rows_added, Some(0));
    assert_eq!(
        (h[1].job.as_deref(), h[1].epoch.as_deref()),
        (Some("clicks"), Some("12"))
    );
    assert_eq!(h[1].rows_added, Some(4));
    assert_eq!(h[2].pipeline.as_deref(), Some("p.toml"));
    assert_eq!(
        (h[2].stage.as_deref(), h[2].run.as_deref()),
        (Some("land"), Some("3"))
    );
    assert_eq!(h[2].transactions[0].version, 3);
    assert_eq!((h[2].files_added, h[2].rows_added), (3, Some(10)));
    let time = h[2].time.as_deref().unwrap();
    assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    assert_eq!(history(&table, 1).unwrap().len(), 1);
    assert_eq!(iso_time(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
}
