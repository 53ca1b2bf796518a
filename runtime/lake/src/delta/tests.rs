use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Utf8, true),
    ]))
}

fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
    let days: Vec<String> = ids.clone().map(|i| format!("d{}", i % 3)).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(days)),
        ],
    )
    .unwrap()
}

/// id → day of every row of `files`, read as a reader of the files would: the Parquet file,
/// plus the partition value from the log.
fn contents(files: &[DataFile]) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    for f in files {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f.path).unwrap())
                .unwrap()
                .build()
                .unwrap();
        for b in reader {
            let b = b.unwrap();
            assert!(
                b.column_by_name("day").is_none(),
                "partition columns are not in files"
            );
            let ids = cast(b.column_by_name("id").unwrap(), &DataType::Int64).unwrap();
            let day = f.partition_values[0].1.clone().unwrap();
            for i in 0..b.num_rows() {
                let id = ids.as_primitive::<Int64Type>().value(i);
                assert!(out.insert(id, day.clone()).is_none(), "row {id} twice");
            }
        }
    }
    out
}

fn expected(ids: std::ops::Range<i64>) -> BTreeMap<i64, String> {
    ids.map(|i| (i, format!("d{}", i % 3))).collect()
}

fn write(
    table: &Table,
    batches: &[RecordBatch],
    options: WriteOptions,
    commit: Commit,
) -> CommitSummary {
    let mut w = table.writer(&batches[0].schema(), options).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.commit(commit).unwrap()
}

fn partitioned() -> WriteOptions {
    WriteOptions {
        partition_by: vec!["day".into()],
        ..WriteOptions::default()
    }
}

#[test]
fn the_first_write_creates_the_table_and_appends_are_versions_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(&dir.path().join("t")).unwrap();
    assert!(!table.exists());
    let first = write(
        &table,
        &[rows(0..10), rows(10..20)],
        partitioned(),
        Commit::default(),
    );
    assert_eq!((first.version, first.rows, first.files), (0, 20, 3));
    assert!(table.exists());
    let second = write(
        &table,
        &[rows(20..25)],
        WriteOptions::default(),
        Commit::default(),
    );
    assert_eq!(second.version, 1);
    let (state, files) = table.files(None).unwrap();
    assert_eq!(state.partition_columns, vec!["day".to_string()]);
    assert_eq!(state.schema.field(0).name(), "id");
    assert_eq!(contents(&files), expected(0..25));
    // An older version reads as it was.
    assert_eq!(contents(&table.files(Some(0)).unwrap().1), expected(0..20));
    assert_eq!(
        contents(&table.added_since(0, None).unwrap().1),
        expected(20..25)
    );
}

#[test]
fn overwrite_replaces_every_row_in_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    write(&table, &[rows(0..10)], partitioned(), Commit::default());
    let o = write(
        &table,
        &[rows(100..103)],
        WriteOptions {
            mode: Mode::Overwrite,
            ..WriteOptions::default()
        },
        Commit::default(),
    );
    assert_eq!(o.version, 1);
    assert_eq!(contents(&table.files(None).unwrap().1), expected(100..103));
    let e = table.added_since(0, None).unwrap_err();
    assert!(
        matches!(e, LakeError::NotAppendOnly { version: 1, .. }),
        "{e}"
    );
}

#[test]
fn a_transaction_id_already_recorded_commits_nothing_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    let txn = || Commit {
        transaction: Some(("job".into(), 7)),
        parameters: vec![("quiver.run".into(), "7".into())],
    };
    let first = write(&table, &[rows(0..5)], partitioned(), txn());
    assert!(!first.already_committed);
    assert_eq!(table.app_version("job").unwrap(), Some(7));
    let again = write(&table, &[rows(0..5)], partitioned(), txn());
    assert!(again.already_committed);
    assert_eq!(table.version().unwrap(), 0);
    assert_eq!(contents(&table.files(None).unwrap().1), expected(0..5));
    let parquet_files = walk(dir.path())
        .iter()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert_eq!(parquet_files, 3, "the refused commit's files are removed");
    let history = log::history(&table, 10).unwrap();
    assert_eq!(history[0].parameters["quiver.run"], "7");
    assert_eq!(history[0].transactions, vec![("job".to_string(), 7)]);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn a_dropped_writer_leaves_the_table_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    write(&table, &[rows(0..5)], partitioned(), Commit::default());
    let mut w = table.writer(&schema(), WriteOptions::default()).unwrap();
    w.write(&rows(5..9)).unwrap();
    drop(w);
    assert_eq!(table.version().unwrap(), 0);
    assert_eq!(
        walk(dir.path())
            .iter()
            .filter(|p| p.ends_with(".parquet"))
            .count(),
        3
    );
}

#[test]
fn a_schema_difference_is_refused_naming_the_columns_unless_merged() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    write(&table, &[rows(0..3)], partitioned(), Commit::default());
    let wider = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        wider.clone(),
        vec![
            Arc::new(Int64Array::from(vec![3])),
            Arc::new(StringArray::from(vec!["d0"])),
            Arc::new(Float64Array::from(vec![0.5])),
        ],
    )
    .unwrap();
    let e = table.writer(&wider, WriteOptions::default()).unwrap_err();
    assert!(matches!(e, LakeError::SchemaMismatch { .. }), "{e}");
    assert!(e.to_string().contains("score"), "{e}");
    let merged = write(
        &table,
        &[batch],
        WriteOptions {
            schema: SchemaPolicy::Merge,
            ..WriteOptions::default()
        },
        Commit::default(),
    );
    assert_eq!(merged.version, 1);
    let state = table.state(None).unwrap();
    assert!(state.schema.field_with_name("score").is_ok());
    // A type change is refused even with merge.
    let retyped = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)]));
    let e = table
        .writer(
            &retyped,
            WriteOptions {
                schema: SchemaPolicy::Merge,
                ..WriteOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, LakeError::SchemaConflict { .. }), "{e}");
    assert!(e.to_string().contains("id"), "{e}");
}
