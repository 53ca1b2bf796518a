use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema};

use super::*;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
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

/// id → day of every row read back.
fn contents(table: &Table) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    for b in table.read().unwrap() {
        let ids = cast(b.column_by_name("id").unwrap(), &DataType::Int64).unwrap();
        let days = cast(b.column_by_name("day").unwrap(), &DataType::Utf8).unwrap();
        let (ids, days) = (ids.as_primitive::<Int64Type>(), days.as_string::<i32>());
        for i in 0..b.num_rows() {
            assert!(out
                .insert(ids.value(i), days.value(i).to_string())
                .is_none());
        }
    }
    out
}

fn expected(ids: std::ops::Range<i64>) -> BTreeMap<i64, String> {
    ids.map(|i| (i, format!("d{}", i % 3))).collect()
}

#[test]
fn appends_are_versions_read_back_whole_with_their_partition_values() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(&dir.path().join("t")).unwrap();
    assert!(!table.exists());
    assert_eq!(table.create(&schema(), &["day".to_string()]).unwrap(), 0);
    assert!(table.exists());
    assert_eq!(
        table
            .write(&[rows(0..10)], Mode::Append, Some(("job", 1)))
            .unwrap(),
        1
    );
    assert_eq!(
        table
            .write(&[rows(10..25)], Mode::Append, Some(("job", 2)))
            .unwrap(),
        2
    );
    assert_eq!(contents(&table), expected(0..25));
    assert_eq!(table.app_version("job").unwrap(), Some(2));
    assert_eq!(table.app_version("other").unwrap(), None);
    // Hive-style directories for the partition column, which the files do not hold.
    for d in ["day=d0", "day=d1", "day=d2"] {
        assert!(dir.path().join("t").join(d).is_dir(), "{d}");
    }
}

#[test]
fn an_overwrite_replaces_every_row_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    table.create(&schema(), &["day".to_string()]).unwrap();
    table.write(&[rows(0..10)], Mode::Append, None).unwrap();
    assert_eq!(
        table
            .write(&[rows(100..104)], Mode::Overwrite, None)
            .unwrap(),
        2
    );
    assert_eq!(contents(&table), expected(100..104));
}

#[test]
fn a_missing_or_unsupported_partition_column_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::at(dir.path()).unwrap();
    table.create(&schema(), &["day".to_string()]).unwrap();
    let only_ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let e = table.write(&[only_ids], Mode::Append, None).unwrap_err();
    assert!(e.to_string().contains("\"day\""), "{e}");
    // Nothing was committed.
    assert_eq!(table.version().unwrap(), 0);
}
