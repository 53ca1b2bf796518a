//! Which Arrow columns a Delta table can hold, and how rows meet a table's schema: refused
//! with the differing columns named, or merged when the pipeline asks for it. Pure functions
//! over schemas.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// How rows whose columns differ from the table's are treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaPolicy {
    /// Refuse any difference (the default).
    #[default]
    Strict,
    /// Add the rows' new columns to the table (null in older rows), and write nulls for the
    /// table's columns the rows lack. A column's type never changes.
    Merge,
}

/// A column whose Arrow type no Delta type holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column:?} has type {found}, which a Delta table cannot hold")]
pub struct UnsupportedType {
    /// The column.
    pub column: String,
    /// Its type.
    pub found: DataType,
}

/// How the rows' columns differ from the table's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDiff {
    /// Columns of the table the rows lack.
    pub missing: Vec<String>,
    /// Columns of the rows the table lacks.
    pub extra: Vec<Field>,
    /// Columns of both with different types: (column, table's type, rows' type).
    pub changed: Vec<(String, DataType, DataType)>,
}

impl SchemaDiff {
    /// Whether the schemas agree.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for SchemaDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "the rows lack the table's column(s) {}",
                self.missing.join(", ")
            ));
        }
        if !self.extra.is_empty() {
            let names: Vec<&str> = self.extra.iter().map(|f| f.name().as_str()).collect();
            parts.push(format!(
                "the rows have column(s) {} the table does not",
                names.join(", ")
            ));
        }
        for (column, table, rows) in &self.changed {
            parts.push(format!(
                "column {column} is {table} in the table but {rows} in the rows"
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The type a column of `found` type is stored as: Delta has one string, one binary and
/// microsecond timestamps, and no unsigned integers (those widen to the next signed type).
pub fn stored_type(column: &str, found: &DataType) -> Result<DataType, UnsupportedType> {
    let unsupported = || UnsupportedType {
        column: column.to_string(),
        found: found.clone(),
    };
    Ok(match found {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Date32
        | DataType::Utf8
        | DataType::Binary
        | DataType::Decimal128(..) => found.clone(),
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        // Delta's `timestamp` is an instant in UTC, `timestamp_ntz` a wall-clock time.
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Dictionary(_, values) => stored_type(column, values)?,
        _ => return Err(unsupported()),
    })
}

/// The schema rows of `schema` are stored with: stored types, every column nullable (so that
/// a later run may leave a column out under [`SchemaPolicy::Merge`]).
pub fn stored_schema(schema: &Schema) -> Result<Schema, UnsupportedType> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(Field::new(
                f.name(),
                stored_type(f.name(), f.data_type())?,
                true,
            ))
        })
        .collect::<Result<Vec<_>, UnsupportedType>>()?;
    Ok(Schema::new(fields))
}

/// How `rows` (already in stored types) differ from `table`. Columns are matched by name;
/// order does not matter.
pub fn diff(table: &Schema, rows: &Schema) -> SchemaDiff {
    let mut d = SchemaDiff::default();
    for field in table.fields() {
        match rows.field_with_name(field.name()) {
            Err(_) => d.missing.push(field.name().clone()),
            Ok(r) if !same_type(field.data_type(), r.data_type()) => d.changed.push((
                field.name().clone(),
                field.data_type().clone(),
                r.data_type().clone(),
            )),
            Ok(_) => {}
        }
    }
    for field in rows.fields() {
        if table.field_with_name(field.name()).is_err() {
            d.extra.push(field.as_ref().clone());
        }
    }
    d
}

/// Types that are equal, timestamps' time zone spelling aside (a table's `timestamp` reads back
/// as `+00:00` or `UTC` depending on the reader).
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::Timestamp(ua, Some(_)), DataType::Timestamp(ub, Some(_))) => ua == ub,
        _ => a == b,
    }
}

/// `batch` in the columns and column order of `schema`: columns cast to their stored types,
/// and columns the batch lacks filled with nulls. The caller has checked the difference is
/// allowed.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
            Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
            Some(c) => {
                cast(c, field.data_type()).map_err(|e| format!("column {}: {e}", field.name()))
            }
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// `schema` with `extra` columns added at the end (nullable), for a merge.
pub fn merged(schema: &Schema, extra: &[Field]) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(extra.iter().map(|f| f.clone().with_nullable(true)));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_diff_names_missing_extra_and_retyped_columns() {
        let table = schema(&[("a", DataType::Int64), ("b", DataType::Utf8)]);
        let rows = schema(&[("b", DataType::Int64), ("c", DataType::Float64)]);
        let d = diff(&table, &rows);
        assert_eq!(d.missing, vec!["a".to_string()]);
        assert_eq!(d.extra.len(), 1);
        assert_eq!(d.extra[0].name(), "c");
        assert_eq!(
            d.changed,
            vec![("b".into(), DataType::Utf8, DataType::Int64)]
        );
        let text = d.to_string();
        for column in ["a", "b", "c"] {
            assert!(text.contains(column), "{text}");
        }
        assert!(diff(&table, &table).is_empty());
        // Column order does not matter.
        let swapped = schema(&[("b", DataType::Utf8), ("a", DataType::Int64)]);
        assert!(diff(&table, &swapped).is_empty());
    }

    #[test]
    fn stored_types_widen_unsigned_and_unify_strings_and_timestamps() {
        assert_eq!(
            stored_type("x", &DataType::UInt32).unwrap(),
            DataType::Int64
        );
        assert_eq!(
            stored_type("x", &DataType::LargeUtf8).unwrap(),
            DataType::Utf8
        );
        assert_eq!(
            stored_type(
                "x",
                &DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into()))
            )
            .unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let e = stored_type("u", &DataType::UInt64).unwrap_err();
        assert_eq!(e.column, "u");
    }

    #[test]
    fn conform_orders_casts_and_fills_missing_columns_with_nulls() {
        use arrow::array::{Array, Int32Array, StringArray};
        let rows = RecordBatch::try_from_iter([
            ("s", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
            ("n", Arc::new(Int32Array::from(vec![1, 2]))),
        ])
        .unwrap();
        let target = Arc::new(schema(&[
            ("n", DataType::Int64),
            ("gone", DataType::Float64),
            ("s", DataType::Utf8),
        ]));
        let out = conform(&rows, &target).unwrap();
        assert_eq!(out.schema(), target);
        assert_eq!(out.column(1).null_count(), 2);
        assert_eq!(out.column(0).data_type(), &DataType::Int64);
    }
}
