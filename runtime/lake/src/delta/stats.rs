//! A data file's Delta statistics (rows, and per column nulls, minimum and maximum), taken from
//! the file's own Parquet footer: the Parquet writer already computed them per row group while
//! encoding, so the table writer does not go over the values a second time.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, StructArray, UInt64Array,
};
use arrow::compute::{sort_to_indices, take, SortOptions};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// Whether Delta keeps a minimum and maximum for a column of this type.
fn has_bounds(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Date32
            | DataType::Utf8
            | DataType::Timestamp(..)
            | DataType::Decimal128(..)
    )
}

/// The statistics of the Parquet file at `path`, whose columns are `schema`, in the shape the
/// Delta library writes into an add action (`numRecords`, `nullCount`, `minValues`,
/// `maxValues`, `tightBounds`).
pub(super) fn from_footer(path: &Path, schema: &Schema) -> Result<StructArray, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| e.to_string())?;
    let rows = metadata.file_metadata().num_rows();
    let (mut null_fields, mut nulls) = (Vec::new(), Vec::new());
    let (mut bound_fields, mut mins, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    for field in schema.fields() {
        let converter = StatisticsConverter::try_new(
            field.name(),
            schema,
            metadata.file_metadata().schema_descr(),
        )
        .map_err(|e| e.to_string())?;
        let groups = metadata.row_groups();
        let null_counts = converter
            .row_group_null_counts(groups.iter())
            .map_err(|e| e.to_string())?;
        null_fields.push(Field::new(field.name(), DataType::Int64, true));
        nulls.push(Arc::new(Int64Array::from(vec![total(&null_counts)])) as ArrayRef);
        if has_bounds(field.data_type()) {
            let min = converter
                .row_group_mins(groups.iter())
                .map_err(|e| e.to_string())?;
            let max = converter
                .row_group_maxes(groups.iter())
                .map_err(|e| e.to_string())?;
            let known = bounds_known(&metadata, &null_counts, &min);
            bound_fields.push(Field::new(field.name(), field.data_type().clone(), true));
            mins.push(extreme(&min, false, known)?);
            maxes.push(extreme(
                &max,
                true,
                known && max.null_count() <= min.null_count(),
            )?);
        }
    }
    let null_fields = Fields::from(null_fields);
    let bound_fields = Fields::from(bound_fields);
    let section = |fields: &Fields, columns: Vec<ArrayRef>| -> Result<ArrayRef, String> {
        if fields.is_empty() {
            return Ok(Arc::new(StructArray::new_empty_fields(1, None)));
        }
        Ok(Arc::new(
            StructArray::try_new(fields.clone(), columns, None).map_err(|e| e.to_string())?,
        ))
    };
    let columns: Vec<(Arc<Field>, ArrayRef)> = vec![
        (
            Arc::new(Field::new("numRecords", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![rows])),
        ),
        (
            Arc::new(Field::new(
                "nullCount",
                DataType::Struct(null_fields.clone()),
                true,
            )),
            section(&null_fields, nulls)?,
        ),
        (
            Arc::new(Field::new(
                "minValues",
                DataType::Struct(bound_fields.clone()),
                true,
            )),
            section(&bound_fields, mins)?,
        ),
        (
            Arc::new(Field::new(
                "maxValues",
                DataType::Struct(bound_fields.clone()),
                true,
            )),
            section(&bound_fields, maxes)?,
        ),
        (
            Arc::new(Field::new("tightBounds", DataType::Boolean, true)),
            Arc::new(BooleanArray::from(vec![true])),
        ),
    ];
    Ok(StructArray::from(columns))
}

/// The sum of the row groups' null counts (null if one is unknown).
fn total(counts: &UInt64Array) -> Option<i64> {
    if counts.null_count() > 0 {
        return None;
    }
    Some(counts.values().iter().sum::<u64>() as i64)
}

/// Whether every row group with a value has a bound: one that lacks it (statistics not
/// written) leaves the file's bound unknown.
fn bounds_known(metadata: &ParquetMetaData, nulls: &UInt64Array, bounds: &ArrayRef) -> bool {
    metadata.row_groups().iter().enumerate().all(|(i, group)| {
        let all_null = !nulls.is_null(i) && nulls.value(i) as i64 == group.num_rows();
        !bounds.is_null(i) || all_null
    })
}

/// The smallest (or with `largest`, the largest) of the row groups' bounds, as a one-value
/// array; null when unknown or when every value is null.
fn extreme(bounds: &ArrayRef, largest: bool, known: bool) -> Result<ArrayRef, String> {
    if !known || bounds.null_count() == bounds.len() {
        return Ok(new_null_array(bounds.data_type(), 1));
    }
    let order = SortOptions {
        descending: largest,
        nulls_first: false,
    };
    let first = sort_to_indices(bounds, Some(order), Some(1)).map_err(|e| e.to_string())?;
    take(bounds, &first, None).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, RecordBatch, StringArray};
    use delta_kernel::engine::arrow_conversion::TryFromArrow;
    use delta_kernel::expressions::ColumnName;
    use delta_kernel::schema::StructType;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    #[test]
    fn footer_statistics_equal_those_the_delta_library_computes_from_the_rows() {
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![
                    Some(5),
                    None,
                    Some(-3),
                    Some(9),
                    Some(2),
                ])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec![
                    Some("m"),
                    Some("b"),
                    None,
                    Some("z"),
                    None,
                ])),
            ),
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    Some(-1.0),
                    Some(7.25),
                    None,
                    Some(3.0),
                ])),
            ),
            ("empty", Arc::new(Int64Array::from(vec![None::<i64>; 5]))),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        // Row groups of two rows: the file's bounds come from several groups.
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let ours = from_footer(&path, &batch.schema()).unwrap();
        let physical = StructType::try_from_arrow(batch.schema().as_ref()).unwrap();
        let columns: Vec<ColumnName> = physical
            .fields()
            .map(|f| ColumnName::new([f.name().clone()]))
            .collect();
        let theirs =
            delta_kernel_default_engine::stats::collect_stats(&batch, &columns, &physical).unwrap();
        let int = |s: &StructArray, section: &str, column: Option<&str>| -> Option<i64> {
            let c = s.column_by_name(section).unwrap();
            let c = match column {
                Some(name) => c.as_struct().column_by_name(name).unwrap().clone(),
                None => c.clone(),
            };
            let c = arrow::compute::cast(&c, &DataType::Int64).unwrap();
            let c = c.as_primitive::<arrow::datatypes::Int64Type>();
            (!c.is_null(0)).then(|| c.value(0))
        };
        assert_eq!(int(&ours, "numRecords", None), Some(5));
        for column in ["id", "name", "x", "empty"] {
            assert_eq!(
                int(&ours, "nullCount", Some(column)),
                int(&theirs, "nullCount", Some(column)),
                "nullCount of {column}"
            );
        }
        for section in ["minValues", "maxValues"] {
            let bound = |s: &StructArray, column: &str| {
                s.column_by_name(section)
                    .unwrap()
                    .as_struct()
                    .column_by_name(column)
                    .map(|c| arrow::util::display::array_value_to_string(c, 0).unwrap())
            };
            for column in ["id", "name", "x"] {
                assert_eq!(
                    bound(&ours, column),
                    bound(&theirs, column),
                    "{section} of {column}"
                );
            }
        }
    }
}
