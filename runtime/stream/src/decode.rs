//! Rows to one Arrow batch of the run's schema: JSON lines or CSV records, decoded with the
//! schema the job took from its first rows, with a line that does not parse named by file and
//! line number and then failed, skipped or sent to the dead letters as the pipeline says; and
//! rows that arrived as Arrow (HTTP ingest), whose columns are matched to the schema by name and
//! cast to its types ([`conform`]). A micro-batch mixing both keeps its rows in their order.

use std::path::PathBuf;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::{can_cast_types, cast_with_options, concat_batches, CastOptions};
use arrow::datatypes::{Schema, SchemaRef};

use super::chunk::encode_json_lines;
use super::chunk::{ArrowRows, Chunk};
use super::tail::Lines;
use super::StreamError;
use quiver_data::io::csv_quotes::{QuoteScan, UNCLOSED_MESSAGE};
use quiver_data::io::{self, Format};
use quiver_exec::policy::OnMalformed;

/// A line that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Its file (or `<stdin>`).
    pub path: PathBuf,
    /// Its 1-based line number there.
    pub line: u64,
    /// What is wrong.
    pub message: String,
    /// Its text, without the newline.
    pub text: String,
}

/// Decodes lines into batches of one schema.
pub struct Decoder {
    schema: SchemaRef,
    format: Format,
    /// For CSV: the header line (with its newline), dropped wherever a file starts again.
    header: Option<Vec<u8>>,
    delimiter: u8,
}

impl Decoder {
    /// A decoder for `format` (JSON lines or CSV) into `schema`; `header` is a CSV source's
    /// header line.
    pub fn new(schema: SchemaRef, format: Format, header: Option<Vec<u8>>, delimiter: u8) -> Self {
        Decoder {
            schema,
            format,
            header,
            delimiter,
        }
    }

    /// The schema batches are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn parse(
        &self,
        bytes: &[u8],
        rows: usize,
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        let rows = rows.max(1);
        if self.format == Format::Csv {
            // Lines are records here: a quote still open at the end of the lines would make
            // the decoder drop or merge rows without a word.
            let mut quotes = QuoteScan::new(self.delimiter);
            quotes.feed(bytes);
            if quotes.unclosed().is_some() {
                return Err(arrow::error::ArrowError::CsvError(UNCLOSED_MESSAGE.into()));
            }
            let mut d = arrow::csv::ReaderBuilder::new(self.schema.clone())
                .with_header(false)
                .with_delimiter(self.delimiter)
                .with_batch_size(rows)
                .build_decoder();
            let mut at = 0;
            while at < bytes.len() {
                let n = d.decode(&bytes[at..])?;
                if n == 0 {
                    break;
                }
                at += n;
            }
            return d.flush();
        }
        let mut d = arrow::json::ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows)
            .build_decoder()?;
        d.decode(bytes)?;
        d.flush()
    }

    /// The rows of `chunks` as one batch in their order (`None` if none holds a row), and the
    /// rows that did not fit, handled per `policy` (with `Fail` the first one is an error): a
    /// line that does not parse, or the rows of an Arrow batch that cannot be cast to the
    /// schema.
    pub fn decode(
        &self,
        chunks: &[Chunk],
        policy: OnMalformed,
    ) -> Result<(Option<RecordBatch>, Vec<BadLine>), StreamError> {
        let mut parts: Vec<RecordBatch> = Vec::new();
        let mut bad = Vec::new();
        let mut lines: Vec<&Lines> = Vec::new();
        for chunk in chunks {
            let arrow = match chunk {
                Chunk::Lines(l) => {
                    lines.push(l);
                    continue;
                }
                Chunk::Arrow(a) => a,
            };
            // The lines before these rows come first.
            if !lines.is_empty() {
                let (batch, mut b) = self.decode_lines(&lines, policy)?;
                parts.extend(batch);
                bad.append(&mut b);
                lines.clear();
            }
            self.conform_rows(arrow, policy, &mut parts, &mut bad)?;
        }
        if !lines.is_empty() {
            let (batch, mut b) = self.decode_lines(&lines, policy)?;
            parts.extend(batch);
            bad.append(&mut b);
        }
        parts.retain(|b| b.num_rows() > 0);
        let batch = match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(concat_batches(&self.schema, &parts).map_err(StreamError::Join)?),
        };
        Ok((batch, bad))
    }

    /// Appends the batches of `rows` cast to the schema to `parts`; a batch that cannot be is
    /// an error under `Fail`, and otherwise its rows are bad lines (as JSON).
    fn conform_rows(
        &self,
        rows: &ArrowRows,
        policy: OnMalformed,
        parts: &mut Vec<RecordBatch>,
        bad: &mut Vec<BadLine>,
    ) -> Result<(), StreamError> {
        let mut row = rows.first_row;
        for batch in &rows.batches {
            match conform(batch, &self.schema) {
                Ok(b) => parts.push(b),
                Err(message) if policy == OnMalformed::Fail => {
                    return Err(StreamError::ArrowMismatch {
                        path: rows.path.clone(),
                        offset: rows.offset,
                        message,
                    })
                }
                Err(message) => {
                    let text = encode_json_lines(batch).unwrap_or_default();
                    let mut texts = String::from_utf8_lossy(&text)
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                        .into_iter();
                    for i in 0..batch.num_rows() {
                        bad.push(BadLine {
                            path: PathBuf::from(format!("{}@{}", rows.path.display(), rows.offset)),
                            line: row + i as u64,
                            message: message.clone(),
                            text: texts.next().unwrap_or_default(),
                        });
                    }
                }
            }
            row += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// The lines of `chunks` as one batch (`None` if no line holds a row), and the lines that
    /// did not parse, handled per `policy` (with `Fail` the first one is an error).
    fn decode_lines(
        &self,
        chunks: &[&Lines],
        policy: OnMalformed,
    ) -> Result<(Option<RecordBatch>, Vec<BadLine>), StreamError> {
        if self.format != Format::Csv {
            // JSON lines need no line dropped: the chunks go to the decoder as they are, with
            // no copy, in the common case where every line parses.
            let rows = chunks.iter().map(|c| c.count).sum::<usize>().max(1);
            let whole = arrow::json::ReaderBuilder::new(self.schema.clone())
                .with_batch_size(rows)
                .build_decoder()
                .and_then(|mut d| {
                    for c in chunks {
                        // The batch holds every line, so each chunk is consumed whole.
                        if d.decode(&c.bytes)? != c.bytes.len() {
                            return Err(arrow::error::ArrowError::JsonError("short read".into()));
                        }
                    }
                    d.flush()
                });
            if let Ok(batch) = whole {
                return Ok((batch, Vec::new()));
            }
        }
        let mut bytes = Vec::with_capacity(chunks.iter().map(|c| c.bytes.len()).sum());
        let mut rows = 0;
        for line in self.lines(chunks) {
            bytes.extend_from_slice(line.2);
            rows += 1;
        }
        if let Ok(batch) = self.parse(&bytes, rows) {
            return Ok((batch, Vec::new()));
        }
        // Some line does not parse: find which, line by line.
        let mut good = Vec::with_capacity(bytes.len());
        let mut good_rows = 0;
        let mut bad = Vec::new();
        for (path, line, text) in self.lines(chunks) {
            match self.parse(text, 1) {
                Ok(_) => {
                    good.extend_from_slice(text);
                    good_rows += 1;
                }
                Err(e) => {
                    let b = BadLine {
                        path: path.clone(),
                        line,
                        message: io::arrow_reason(&e),
                        text: String::from_utf8_lossy(text.strip_suffix(b"\n").unwrap_or(text))
                            .into_owned(),
                    };
                    if policy == OnMalformed::Fail {
                        return Err(StreamError::Malformed {
                            path: b.path,
                            line: b.line,
                            message: b.message,
                        });
                    }
                    bad.push(b);
                }
            }
        }
        let batch = self
            .parse(&good, good_rows)
            .map_err(|e| StreamError::Malformed {
                path: chunks.first().map(|c| c.path.clone()).unwrap_or_default(),
                line: chunks.first().map_or(0, |c| c.first_line),
                message: format!(
                    "the lines parse one by one but not together: {}",
                    io::arrow_reason(&e)
                ),
            })?;
        Ok((batch, bad))
    }

    /// Every line of `chunks` with its file and number, without CSV header lines.
    fn lines<'a>(
        &'a self,
        chunks: &'a [&'a Lines],
    ) -> impl Iterator<Item = (&'a PathBuf, u64, &'a [u8])> + 'a {
        chunks.iter().flat_map(move |c| {
            c.bytes
                .split_inclusive(|&b| b == b'\n')
                .enumerate()
                .map(move |(i, l)| (&c.path, c.first_line + i as u64, l))
                .filter(move |(_, _, l)| {
                    self.header.as_deref() != Some(*l) && !l.iter().all(u8::is_ascii_whitespace)
                })
        })
    }
}

/// `batch` as a batch of `schema`: its columns matched by name and cast to the schema's types
/// as Arrow casts them (a value that does not fit fails the cast rather than becoming null); a
/// column it lacks is all nulls if the schema allows them. A column the schema does not have,
/// a type that does not cast and a null where none is allowed are refused, saying which
/// column.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let have = batch.schema();
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    if have.fields() == schema.fields() {
        return RecordBatch::try_new_with_options(
            schema.clone(),
            batch.columns().to_vec(),
            &options,
        )
        .map_err(|e| e.to_string());
    }
    if let Some(extra) = have
        .fields()
        .iter()
        .find(|f| schema.field_with_name(f.name()).is_err())
    {
        return Err(format!(
            "it has a column `{}`, which the run's schema does not ({})",
            extra.name(),
            columns(schema)
        ));
    }
    let cast_options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let mut out: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match have.index_of(field.name()) {
            Ok(i) => {
                let c = batch.column(i);
                if c.data_type() == field.data_type() {
                    c.clone()
                } else if can_cast_types(c.data_type(), field.data_type()) {
                    cast_with_options(c, field.data_type(), &cast_options).map_err(|e| {
                        format!(
                            "column `{}`: cannot cast {} to {}: {e}",
                            field.name(),
                            c.data_type(),
                            field.data_type()
                        )
                    })?
                } else {
                    return Err(format!(
                        "column `{}` is {}, which does not cast to the run's {}",
                        field.name(),
                        c.data_type(),
                        field.data_type()
                    ));
                }
            }
            Err(_) if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            Err(_) => {
                return Err(format!(
                    "it lacks the column `{}`, which the run's schema does not allow to be null",
                    field.name()
                ))
            }
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(format!(
                "column `{}` holds nulls, which the run's schema does not allow",
                field.name()
            ));
        }
        out.push(column);
    }
    RecordBatch::try_new_with_options(schema.clone(), out, &options).map_err(|e| e.to_string())
}

/// The columns of `schema`, for messages: `a: Int64, b: Utf8`.
fn columns(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn chunk(path: &str, first_line: u64, text: &str) -> Chunk {
        Chunk::Lines(Lines {
            bytes: text.as_bytes().to_vec(),
            count: text.lines().count(),
            first_line,
            path: path.into(),
        })
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    /// A bad line is named by its own file and number even when the micro-batch spans a
    /// rotation (two files), and the good lines around it survive under `skip`.
    #[test]
    fn a_bad_line_is_named_by_its_own_file_across_a_rotation() {
        let d = Decoder::new(schema(), Format::Jsonl, None, b',');
        let chunks = [
            chunk("a.jsonl", 7, "{\"id\":1,\"name\":\"x\"}\n{\"id\":2}\n"),
            chunk("b.jsonl", 1, "{\"id\":3}\n{\"id\":\"oops\"\n{\"id\":5}\n"),
        ];
        let err = d
            .decode(&chunks, OnMalformed::Fail)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("b.jsonl:2: "), "{err}");
        let (batch, bad) = d.decode(&chunks, OnMalformed::Skip).unwrap();
        let ids = batch
            .unwrap()
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .values()
            .to_vec();
        assert_eq!(ids, vec![1, 2, 3, 5]);
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].line, bad[0].text.as_str()), (2, "{\"id\":\"oops\""));
    }

    /// A last line cut short inside an object is a bad line, not dropped: in the whole
    /// micro-batch and line by line (the cluster's ingest door relies on it too).
    #[test]
    fn a_last_json_line_cut_inside_an_object_is_a_bad_line() {
        let d = Decoder::new(schema(), Format::Jsonl, None, b',');
        let chunks = [chunk("a.jsonl", 1, "{\"id\":1}\n{\"id\":2,\"name\":\n")];
        let err = d
            .decode(&chunks, OnMalformed::Fail)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.jsonl:2: "), "{err}");
        let (batch, bad) = d.decode(&chunks, OnMalformed::Skip).unwrap();
        assert_eq!(batch.unwrap().num_rows(), 1);
        assert_eq!((bad.len(), bad[0].line), (1, 2));
    }

    #[test]
    fn a_csv_line_with_a_quote_never_closed_is_a_bad_line() {
        let d = Decoder::new(schema(), Format::Csv, Some(b"id,name\n".to_vec()), b',');
        for first in ["\"1,x\n", "1,\"x\n"] {
            let chunks = [chunk("a.csv", 1, &format!("id,name\n{first}2,y\n3,z\n"))];
            let (batch, bad) = d.decode(&chunks, OnMalformed::Skip).unwrap();
            assert_eq!(batch.unwrap().num_rows(), 2, "{first:?}");
            assert_eq!(bad.len(), 1, "{first:?}");
            assert_eq!(
                (bad[0].line, bad[0].message.as_str()),
                (2, UNCLOSED_MESSAGE)
            );
        }
    }

    /// CSV header lines are dropped wherever a new file starts; a record with a bad number is
    /// named.
    #[test]
    fn csv_headers_are_dropped_and_bad_records_named() {
        let d = Decoder::new(schema(), Format::Csv, Some(b"id,name\n".to_vec()), b',');
        let chunks = [
            chunk("a.csv", 1, "id,name\n1,x\n2,y\n"),
            chunk("b.csv", 1, "id,name\n3,z\nfour,w\n"),
        ];
        let (batch, bad) = d.decode(&chunks, OnMalformed::DeadLetter).unwrap();
        assert_eq!(batch.unwrap().num_rows(), 3);
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].path.to_str(), bad[0].line), (Some("b.csv"), 3));
    }

    fn arrow(offset: u64, batch: RecordBatch) -> Chunk {
        Chunk::Arrow(ArrowRows {
            schema: batch.schema(),
            rows: batch.num_rows(),
            batches: vec![batch],
            first_row: 1,
            path: "wal/00000000000000000000.wal".into(),
            offset,
        })
    }

    fn ids(batch: &RecordBatch) -> Vec<Option<i64>> {
        batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    fn names(batch: &RecordBatch) -> Vec<Option<String>> {
        batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    /// JSON lines and Arrow rows in one micro-batch: one batch of the run's schema, the rows in
    /// the order they arrived, Arrow columns cast to the schema's types and missing ones null.
    #[test]
    fn a_micro_batch_mixing_json_lines_and_arrow_rows_keeps_their_order() {
        let d = Decoder::new(schema(), Format::Jsonl, None, b',');
        // Narrower integers, non-nullable fields, the columns in another order.
        let narrow = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("id", DataType::Int32, false),
        ]));
        let narrow = RecordBatch::try_new(
            narrow,
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["c", "d"])),
                Arc::new(arrow::array::Int32Array::from(vec![3, 4])),
            ],
        )
        .unwrap();
        // No `name` column at all.
        let ids_only = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(arrow::array::Int64Array::from(vec![6]))],
        )
        .unwrap();
        let chunks = [
            chunk(
                "w@0",
                1,
                "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":\"b\"}\n",
            ),
            arrow(40, narrow),
            chunk("w@90", 1, "{\"id\":5,\"name\":\"e\"}\n"),
            arrow(120, ids_only),
        ];
        let (batch, bad) = d.decode(&chunks, OnMalformed::Fail).unwrap();
        let batch = batch.unwrap();
        assert!(bad.is_empty());
        assert_eq!(batch.schema(), schema());
        assert_eq!(ids(&batch), [1, 2, 3, 4, 5, 6].map(Some).to_vec());
        let want: Vec<Option<String>> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| Some(s.to_string()))
            .chain([None])
            .collect();
        assert_eq!(names(&batch), want);

        // Only Arrow rows: no decoding of lines at all.
        let only = [arrow(
            7,
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(arrow::array::Int64Array::from(vec![9])),
                    Arc::new(arrow::array::StringArray::from(vec!["z"])),
                ],
            )
            .unwrap(),
        )];
        let (batch, _) = d.decode(&only, OnMalformed::Fail).unwrap();
        assert_eq!(ids(&batch.unwrap()), vec![Some(9)]);
    }

    /// Arrow rows that cannot be cast to the run's schema fail the run naming the record's log
    /// offset, or under `skip`/`dead-letter` are bad lines, one per row, with the row as JSON.
    #[test]
    fn arrow_rows_that_do_not_fit_are_refused_naming_the_record_offset() {
        let d = Decoder::new(schema(), Format::Jsonl, None, b',');
        let text_ids = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, true)])),
            vec![Arc::new(arrow::array::StringArray::from(vec![
                "7", "seven",
            ]))],
        )
        .unwrap();
        let chunks = [
            chunk("w@0", 1, "{\"id\":1}\n"),
            arrow(1234, text_ids),
            chunk("w@2000", 1, "{\"id\":2}\n"),
        ];
        let err = d.decode(&chunks, OnMalformed::Fail).unwrap_err();
        let StreamError::ArrowMismatch { path, offset, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (path.to_str(), *offset),
            (Some("wal/00000000000000000000.wal"), 1234)
        );
        let msg = err.to_string();
        assert!(
            msg.contains("log offset 1234") && msg.contains("column `id`") && msg.contains("seven"),
            "{msg}"
        );
        let (batch, bad) = d.decode(&chunks, OnMalformed::DeadLetter).unwrap();
        assert_eq!(ids(&batch.unwrap()), vec![Some(1), Some(2)]);
        let lines: Vec<(&str, u64, &str)> = bad
            .iter()
            .map(|b| (b.path.to_str().unwrap(), b.line, b.text.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("wal/00000000000000000000.wal@1234", 1, "{\"id\":\"7\"}"),
                ("wal/00000000000000000000.wal@1234", 2, "{\"id\":\"seven\"}"),
            ]
        );

        // A column the run does not have, and nulls where none are allowed, are refused too.
        let extra = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("surprise", DataType::Int64, true),
            ])),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![1])),
                Arc::new(arrow::array::Int64Array::from(vec![2])),
            ],
        )
        .unwrap();
        let err = conform(&extra, &schema()).unwrap_err();
        assert!(err.contains("`surprise`"), "{err}");
        let strict = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let nulls = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(arrow::array::Int64Array::from(vec![
                Some(1),
                None,
            ]))],
        )
        .unwrap();
        let err = conform(&nulls, &strict).unwrap_err();
        assert!(err.contains("holds nulls"), "{err}");
    }
}
