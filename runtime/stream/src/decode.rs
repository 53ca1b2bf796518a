//! Lines to Arrow: JSON lines or CSV records, decoded with the schema the job inferred from
//! its first lines, with a line that does not parse named by file and line number and then
//! failed, skipped or sent to the dead letters as the pipeline says.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

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

    /// The lines of `chunks` as one batch (`None` if no line holds a row), and the lines that
    /// did not parse, handled per `policy` (with `Fail` the first one is an error).
    pub fn decode(
        &self,
        chunks: &[Lines],
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
        chunks: &'a [Lines],
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn chunk(path: &str, first_line: u64, text: &str) -> Lines {
        Lines {
            bytes: text.as_bytes().to_vec(),
            count: text.lines().count(),
            first_line,
            path: path.into(),
        }
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
}
