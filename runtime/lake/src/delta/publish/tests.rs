use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::super::tests::{contents, expected, partitioned, rows, schema, walk};
use super::super::{log, LOG_DIR};
use super::*;
use crate::delta::SchemaPolicy;

fn txn(epoch: i64) -> Commit {
    Commit {
        transaction: Some(("quiver-stream/j".into(), epoch)),
        parameters: vec![("quiver.epoch".into(), epoch.to_string())],
    }
}

/// Stages `ids` as the files of `stem` and returns their names.
fn stage(w: &mut StagedWriter, stem: &str, ids: std::ops::Range<i64>) -> Vec<String> {
    w.begin(stem);
    w.write(&rows(ids)).unwrap();
    w.finish().unwrap()
}

#[test]
fn a_staged_writer_creates_the_table_before_any_file_and_names_files_by_stem() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(&dir.path().join("t")).unwrap();
    let mut w = table.staged_writer(&schema(), partitioned()).unwrap();
    // The table exists, empty, before a row is written: a publish only ever adds files.
    assert_eq!(table.version().unwrap(), 0);
    assert!(table.files(None).unwrap().1.is_empty());
    assert_eq!(table.state(None).unwrap().partition_columns, ["day"]);
    let mut names = stage(&mut w, "part-j-e1", 0..9);
    names.sort();
    assert_eq!(
        names,
        [
            "day=d0/part-j-e1-0000.parquet",
            "day=d1/part-j-e1-0001.parquet",
            "day=d2/part-j-e1-0002.parquet"
        ]
    );
    // The next stem counts from 0 again; dropping the writer keeps every file.
    assert_eq!(
        stage(&mut w, "part-j-e2", 9..10),
        ["day=d0/part-j-e2-0000.parquet"]
    );
    drop(w);
    assert_eq!(walk(&table.dir().join("day=d0")).len(), 2);
    assert_eq!(
        table.version().unwrap(),
        0,
        "nothing is visible before a publish"
    );
}

#[test]
fn a_publish_is_one_commit_with_its_transaction_id_and_redoing_it_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    let mut w = table.staged_writer(&schema(), partitioned()).unwrap();
    let first = stage(&mut w, "part-j-e1", 0..10);
    let second = stage(&mut w, "part-j-e2", 10..15);

    let done = table.publish(&first, txn(1)).unwrap();
    assert_eq!((done.version, done.files, done.rows), (1, 3, 10));
    assert!(!done.already_committed);
    assert_eq!(table.app_version("quiver-stream/j").unwrap(), Some(1));
    let (_, files) = table.files(None).unwrap();
    assert_eq!(contents(&files), expected(0..10));
    // The statistics were read back from the files.
    assert_eq!(files.iter().map(|f| f.rows.unwrap()).sum::<u64>(), 10);
    let entry = &log::history(&table, 1).unwrap()[0];
    assert_eq!(entry.transactions, [("quiver-stream/j".to_string(), 1)]);
    assert_eq!(entry.operation.as_deref(), Some("STREAMING UPDATE"));
    assert_eq!(entry.parameters["quiver.epoch"], "1");

    // Redone (a crash after the commit): nothing is committed, and the files stay.
    let again = table.publish(&first, txn(1)).unwrap();
    assert!(again.already_committed);
    assert_eq!((again.version, again.files), (1, 0));
    for name in &first {
        assert!(table.dir().join(name).exists(), "{name}");
    }

    assert_eq!(table.publish(&second, txn(2)).unwrap().version, 2);
    assert_eq!(contents(&table.files(None).unwrap().1), expected(0..15));
    // An older epoch redone late is refused by the newer one's id; its files are not even
    // read, so files gone since (compacted, vacuumed) do not matter.
    for name in &first {
        std::fs::remove_file(table.dir().join(name)).unwrap();
    }
    assert!(table.publish(&first, txn(1)).unwrap().already_committed);
    assert_eq!(table.version().unwrap(), 2);
}

#[test]
fn partition_values_that_need_escaping_and_nulls_read_back_from_the_directories() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a b/c%"), None, Some("é")])),
        ],
    )
    .unwrap();
    let mut w = table.staged_writer(&schema(), partitioned()).unwrap();
    w.begin("part-j-e1");
    w.write(&batch).unwrap();
    let names = w.finish().unwrap();
    table.publish(&names, txn(1)).unwrap();
    let mut values: Vec<Option<String>> = table
        .files(None)
        .unwrap()
        .1
        .into_iter()
        .map(|f| f.partition_values[0].1.clone())
        .collect();
    values.sort();
    assert_eq!(values, [None, Some("a b/c%".into()), Some("é".into())]);
}

#[test]
fn a_merge_adds_the_new_columns_in_a_commit_of_their_own_and_strict_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    drop(table.staged_writer(&schema(), partitioned()).unwrap());
    let wider = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("day", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let e = table
        .staged_writer(&wider, WriteOptions::default())
        .unwrap_err();
    assert!(matches!(e, LakeError::SchemaMismatch { .. }), "{e}");
    let merge = WriteOptions {
        schema: SchemaPolicy::Merge,
        ..WriteOptions::default()
    };
    let mut w = table.staged_writer(&wider, merge).unwrap();
    assert_eq!(table.version().unwrap(), 1);
    assert!(table
        .state(None)
        .unwrap()
        .schema
        .field_with_name("score")
        .is_ok());
    w.begin("part-j-e1");
    w.write(
        &RecordBatch::try_new(
            wider,
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["d1"])),
                Arc::new(Float64Array::from(vec![0.5])),
            ],
        )
        .unwrap(),
    )
    .unwrap();
    let names = w.finish().unwrap();
    assert_eq!(table.publish(&names, txn(1)).unwrap().version, 2);
    // Rows without the new column still fit the table under a merge (as nulls).
    let merge = WriteOptions {
        schema: SchemaPolicy::Merge,
        ..partitioned()
    };
    let mut narrow = table.staged_writer(&schema(), merge).unwrap();
    assert_eq!(table.version().unwrap(), 2, "nothing to change");
    let names = stage(&mut narrow, "part-j-e2", 0..3);
    assert_eq!(table.publish(&names, txn(2)).unwrap().rows, 3);
}

#[test]
fn a_file_the_table_cannot_read_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    drop(table.staged_writer(&schema(), partitioned()).unwrap());
    let e = table
        .publish(&["day=d0/missing.parquet".into()], txn(1))
        .unwrap_err();
    assert!(
        matches!(&e, LakeError::ReadFile { file, .. } if file.ends_with("day=d0/missing.parquet")),
        "{e}"
    );
    let e = table
        .publish(&["elsewhere/x.parquet".into()], txn(1))
        .unwrap_err();
    assert!(e.to_string().contains("not one of partition column"), "{e}");
    assert_eq!(table.app_version("quiver-stream/j").unwrap(), None);
}

#[test]
fn a_checkpoint_of_the_log_keeps_the_files_and_the_transaction_ids() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    let mut w = table.staged_writer(&schema(), partitioned()).unwrap();
    for epoch in 1..=3 {
        let ids = (epoch - 1) * 5..epoch * 5;
        let names = stage(&mut w, &format!("part-j-e{epoch}"), ids);
        table.publish(&names, txn(epoch)).unwrap();
    }
    table.checkpoint(3).unwrap();
    let log = dir.path().join(LOG_DIR);
    assert!(log
        .join("00000000000000000003.checkpoint.parquet")
        .is_file());
    assert!(log.join("_last_checkpoint").is_file());
    // Read through the checkpoint: the same rows, the same transaction id, which still
    // refuses an epoch committed before it.
    assert_eq!(contents(&table.files(None).unwrap().1), expected(0..15));
    assert_eq!(table.app_version("quiver-stream/j").unwrap(), Some(3));
    assert!(table.publish(&[], txn(2)).unwrap().already_committed);
    let names = stage(&mut w, "part-j-e4", 15..20);
    assert_eq!(table.publish(&names, txn(4)).unwrap().version, 4);
    assert_eq!(contents(&table.files(None).unwrap().1), expected(0..20));
}
