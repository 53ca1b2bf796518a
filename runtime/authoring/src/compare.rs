//! Comparing a plugin's output with expected rows (pure logic): both sides become JSON objects,
//! nulls count as absent, numbers are equal within 1e-9 relative, and the differences are
//! listed row by row.

use arrow::array::RecordBatch;
use serde_json::{Map, Value};

/// One row as a JSON object.
pub type Row = Map<String, Value>;

/// How the output differs from the expected rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// Row `index` has other values.
    Row(RowDiff),
    /// The output has fewer rows than expected: these expected rows are missing.
    Missing {
        /// Index of the first missing row.
        from: usize,
        /// How many.
        count: usize,
    },
    /// The output has more rows than expected.
    Extra {
        /// Index of the first extra row.
        from: usize,
        /// How many.
        count: usize,
    },
}

/// A row whose values differ.
#[derive(Debug, Clone, PartialEq)]
pub struct RowDiff {
    /// 0-based row index.
    pub index: usize,
    /// `(column, expected, got)` for every differing column (`null` where absent).
    pub columns: Vec<(String, Value, Value)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Row(d) => {
                write!(f, "row {}:", d.index)?;
                for (c, want, got) in &d.columns {
                    write!(f, " `{c}` expected {want}, got {got};")?;
                }
                Ok(())
            }
            Mismatch::Missing { from, count } => {
                write!(f, "{count} expected row(s) missing from row {from} on")
            }
            Mismatch::Extra { from, count } => {
                write!(f, "{count} extra row(s) from row {from} on")
            }
        }
    }
}

/// Batches as JSON objects, one per row (Arrow's JSON writer: nulls omitted).
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Row>, String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        w.write_batches(&refs).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    parse_json_lines(&String::from_utf8_lossy(&buf))
}

/// JSON lines as objects; blank lines are skipped.
pub fn parse_json_lines(text: &str) -> Result<Vec<Row>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(format!("line {}: not a JSON object", i + 1)),
            Err(e) => Err(format!("line {}: {e}", i + 1)),
        })
        .collect()
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// The differences between `expected` and `got`, row by row.
pub fn diff(expected: &[Row], got: &[Row]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (index, (want, have)) in expected.iter().zip(got).enumerate() {
        let mut names: Vec<&String> = want.keys().chain(have.keys()).collect();
        names.sort();
        names.dedup();
        let columns: Vec<(String, Value, Value)> = names
            .into_iter()
            .filter_map(|n| {
                let w = want.get(n).unwrap_or(&Value::Null);
                let h = have.get(n).unwrap_or(&Value::Null);
                (!same(w, h)).then(|| (n.clone(), w.clone(), h.clone()))
            })
            .collect();
        if !columns.is_empty() {
            out.push(Mismatch::Row(RowDiff { index, columns }));
        }
    }
    match expected.len().cmp(&got.len()) {
        std::cmp::Ordering::Greater => out.push(Mismatch::Missing {
            from: got.len(),
            count: expected.len() - got.len(),
        }),
        std::cmp::Ordering::Less => out.push(Mismatch::Extra {
            from: expected.len(),
            count: got.len() - expected.len(),
        }),
        std::cmp::Ordering::Equal => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Row> {
        parse_json_lines(text).unwrap()
    }

    #[test]
    fn equal_rows_with_nulls_as_absent_and_close_floats_pass() {
        let want = rows("{\"a\": 1, \"b\": null, \"x\": 0.30000000000000004}\n\n{\"a\": 2}");
        let got = rows("{\"x\": 0.3, \"a\": 1}\n{\"a\": 2.0, \"b\": null}");
        assert_eq!(diff(&want, &got), vec![]);
    }

    #[test]
    fn differences_name_row_column_and_both_values() {
        let want = rows("{\"a\": 1, \"s\": \"x\"}\n{\"a\": 2}\n{\"a\": 3}");
        let got = rows("{\"a\": 1, \"s\": \"y\"}\n{\"a\": 2, \"extra\": true}");
        let d = diff(&want, &got);
        assert_eq!(
            d,
            vec![
                Mismatch::Row(RowDiff {
                    index: 0,
                    columns: vec![("s".into(), "x".into(), "y".into())]
                }),
                Mismatch::Row(RowDiff {
                    index: 1,
                    columns: vec![("extra".into(), Value::Null, Value::Bool(true))]
                }),
                Mismatch::Missing { from: 2, count: 1 },
            ]
        );
        assert_eq!(d[0].to_string(), "row 0: `s` expected \"x\", got \"y\";");
        assert_eq!(
            diff(&want[..1], &rows("{\"a\": 1, \"s\": \"x\"}\n{\"a\": 9}")),
            vec![Mismatch::Extra { from: 1, count: 1 }]
        );
        assert!(diff(&rows("{\"a\": 1.0}"), &rows("{\"a\": 1.001}")).len() == 1);
    }

    #[test]
    fn malformed_lines_are_named() {
        assert_eq!(
            parse_json_lines("{}\n[1]").unwrap_err(),
            "line 2: not a JSON object"
        );
        assert!(parse_json_lines("{\"a\":")
            .unwrap_err()
            .starts_with("line 1:"));
    }
}
