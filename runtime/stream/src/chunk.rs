//! What a source hands the driver: complete lines (JSON lines or CSV records), or rows that
//! arrived as Arrow record batches (the HTTP ingest's log), in arrival order, cut into
//! micro-batches by row count.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::tail::Lines;

/// Rows a source handed out, in the order they arrived.
#[derive(Debug)]
pub enum Chunk {
    /// Complete lines, for the run's [`Decoder`](super::decode::Decoder).
    Lines(Lines),
    /// Rows that arrived as an Arrow IPC stream (HTTP ingest), as its record batches.
    Arrow(ArrowRows),
}

impl Chunk {
    /// How many rows (lines) it holds.
    pub fn rows(&self) -> usize {
        match self {
            Chunk::Lines(l) => l.count,
            Chunk::Arrow(a) => a.rows,
        }
    }

    /// Splits off and returns its first `n` rows (all of them if there are fewer).
    pub fn take_front(&mut self, n: usize) -> Chunk {
        match self {
            Chunk::Lines(l) => Chunk::Lines(l.take_front(n)),
            Chunk::Arrow(a) => Chunk::Arrow(a.take_front(n)),
        }
    }
}

/// The rows of `chunks`.
pub fn rows(chunks: &[Chunk]) -> usize {
    chunks.iter().map(Chunk::rows).sum()
}

/// Splits off and returns the first `n` rows of `chunks` (all of them if there are fewer),
/// splitting a chunk if need be.
pub fn take_rows(chunks: &mut Vec<Chunk>, n: usize) -> Vec<Chunk> {
    let whole = chunks
        .iter()
        .scan(0, |sum, c| {
            *sum += c.rows();
            Some(*sum)
        })
        .take_while(|&sum| sum <= n)
        .count();
    let mut front: Vec<Chunk> = chunks.drain(..whole).collect();
    let left = n - rows(&front);
    if left > 0 {
        if let Some(next) = chunks.first_mut() {
            front.push(next.take_front(left));
        }
    }
    front
}

/// The rows of one Arrow record of the write-ahead log, or of a part of it.
#[derive(Debug, Clone)]
pub struct ArrowRows {
    /// The schema the record arrived with.
    pub schema: SchemaRef,
    /// Its record batches.
    pub batches: Vec<RecordBatch>,
    /// Their rows.
    pub rows: usize,
    /// The 1-based number of the first of these rows in the record.
    pub first_row: u64,
    /// The log segment holding the record.
    pub path: PathBuf,
    /// The record's log offset.
    pub offset: u64,
}

impl ArrowRows {
    /// Splits off and returns the first `n` rows (all of them if there are fewer).
    pub fn take_front(&mut self, n: usize) -> ArrowRows {
        let n = n.min(self.rows);
        let mut front = Vec::new();
        let mut rest = Vec::new();
        let mut need = n;
        for b in std::mem::take(&mut self.batches) {
            if need == 0 {
                rest.push(b);
            } else if b.num_rows() <= need {
                need -= b.num_rows();
                front.push(b);
            } else {
                front.push(b.slice(0, need));
                rest.push(b.slice(need, b.num_rows() - need));
                need = 0;
            }
        }
        self.batches = rest;
        let taken = ArrowRows {
            schema: self.schema.clone(),
            batches: front,
            rows: n,
            first_row: self.first_row,
            path: self.path.clone(),
            offset: self.offset,
        };
        self.rows -= n;
        self.first_row += n as u64;
        taken
    }
}

/// Writes `batch` as JSON lines, for stdout and dead letters (and Arrow rows that did not fit, as bad lines).
pub(crate) fn encode_json_lines(batch: &RecordBatch) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
    w.write(batch)?;
    w.finish()?;
    drop(w);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// An Arrow record at `offset` of batches holding the values `start..end` of each pair.
    fn arrow(offset: u64, batches: &[(i64, i64)]) -> Chunk {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batches: Vec<RecordBatch> = batches
            .iter()
            .map(|&(start, end)| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(start..end))],
                )
                .unwrap()
            })
            .collect();
        Chunk::Arrow(ArrowRows {
            schema,
            rows: batches.iter().map(RecordBatch::num_rows).sum(),
            batches,
            first_row: 1,
            path: "w".into(),
            offset,
        })
    }

    fn lines(n: usize) -> Chunk {
        Chunk::Lines(Lines {
            bytes: "l\n".repeat(n).into_bytes(),
            count: n,
            first_line: 1,
            path: "w@0".into(),
        })
    }

    /// What a part holds: (offset, first row, values) of Arrow rows, (0, first line, []) of
    /// lines.
    fn shape(part: &[Chunk]) -> Vec<(u64, u64, Vec<i64>)> {
        part.iter()
            .map(|c| match c {
                Chunk::Lines(l) => (0, l.first_line, vec![-(l.count as i64)]),
                Chunk::Arrow(a) => {
                    let values = a
                        .batches
                        .iter()
                        .flat_map(|b| {
                            let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                            v.values().to_vec()
                        })
                        .collect::<Vec<_>>();
                    assert_eq!(values.len(), a.rows);
                    (a.offset, a.first_row, values)
                }
            })
            .collect()
    }

    /// Micro-batches cut out of records larger than they are: every row once, in order, each
    /// part still naming its record and the number of its first row in it.
    #[test]
    fn rows_are_split_into_micro_batches_across_chunks_and_batches() {
        let mut chunks = vec![
            lines(2),
            arrow(10, &[(0, 3), (3, 7)]),
            lines(1),
            arrow(90, &[(7, 9)]),
        ];
        assert_eq!(rows(&chunks), 12);
        let parts: Vec<Vec<Chunk>> = (0..4).map(|_| take_rows(&mut chunks, 4)).collect();
        assert!(chunks.is_empty());
        let shapes: Vec<_> = parts.iter().map(|p| shape(p)).collect();
        assert_eq!(
            shapes,
            vec![
                vec![(0, 1, vec![-2]), (10, 1, vec![0, 1])],
                vec![(10, 3, vec![2, 3, 4, 5])],
                vec![(10, 7, vec![6]), (0, 1, vec![-1]), (90, 1, vec![7, 8])],
                vec![],
            ]
        );
    }
}
