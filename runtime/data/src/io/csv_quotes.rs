//! Finding a CSV quoted field that is never closed.
//!
//! The CSV parser takes everything after an unmatched opening quote, to the end of the file, as
//! one field: a silent corruption. [`QuoteScan`] follows only the quoting, with the parser's
//! rules (a quote opens a field only at its start; `""` inside quotes is a quote; after the
//! closing quote the field goes on unquoted), jumping from quote to quote with `memchr`, so it
//! costs next to nothing on the bytes the parser reads anyway.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not inside quotes; the byte before the next one (`None` at the start).
    Outside(Option<u8>),
    /// Inside a quoted field that opened at this offset.
    Inside(u64),
    /// Inside a quoted field (opened at this offset), right after a quote: it closes the field
    /// unless another quote follows.
    AfterQuote(u64),
}

/// The quoting state of CSV bytes fed in order.
#[derive(Debug, Clone)]
pub struct QuoteScan {
    delimiter: u8,
    /// Bytes fed so far.
    offset: u64,
    state: State,
}

impl QuoteScan {
    /// A scan of CSV text with this field delimiter, from its start.
    pub fn new(delimiter: u8) -> Self {
        QuoteScan {
            delimiter,
            offset: 0,
            state: State::Outside(None),
        }
    }

    /// Follows the quoting through the next bytes.
    pub fn feed(&mut self, buf: &[u8]) {
        let mut i = 0;
        loop {
            match self.state {
                State::Outside(prev) => match memchr::memchr(b'"', &buf[i..]) {
                    None => {
                        if i < buf.len() {
                            self.state = State::Outside(buf.last().copied());
                        }
                        break;
                    }
                    Some(k) => {
                        let at = i + k;
                        let before = if at > 0 { Some(buf[at - 1]) } else { prev };
                        let field_start =
                            before.is_none_or(|b| b == self.delimiter || b == b'\n' || b == b'\r');
                        self.state = if field_start {
                            State::Inside(self.offset + at as u64)
                        } else {
                            // A quote inside an unquoted field is an ordinary character.
                            State::Outside(Some(b'"'))
                        };
                        i = at + 1;
                    }
                },
                State::Inside(opened) => match memchr::memchr(b'"', &buf[i..]) {
                    None => break,
                    Some(k) => {
                        self.state = State::AfterQuote(opened);
                        i += k + 1;
                    }
                },
                State::AfterQuote(opened) => {
                    let Some(&b) = buf.get(i) else { break };
                    if b == b'"' {
                        self.state = State::Inside(opened);
                        i += 1;
                    } else {
                        // Closed; this byte is looked at again outside the quotes.
                        self.state = State::Outside(Some(b'"'));
                    }
                }
            }
        }
        self.offset += buf.len() as u64;
    }

    /// Where a quoted field that is still open at this point opened (a byte offset).
    pub fn unclosed(&self) -> Option<u64> {
        match self.state {
            State::Inside(opened) => Some(opened),
            _ => None,
        }
    }
}

/// No offset: every field was closed.
const NONE: u64 = u64::MAX;

/// A reader that follows the quoting of what passes through it and, at the end of the input,
/// fails instead of ending if a quoted field is still open; the offset where it opened is then
/// in [`QuoteChecked::unclosed`]'s cell.
pub struct QuoteChecked<R> {
    inner: R,
    scan: QuoteScan,
    unclosed: Arc<AtomicU64>,
}

impl<R: Read> QuoteChecked<R> {
    /// `inner`, read through a quote check for CSV with this field delimiter.
    pub fn new(inner: R, delimiter: u8) -> Self {
        QuoteChecked {
            inner,
            scan: QuoteScan::new(delimiter),
            unclosed: Arc::new(AtomicU64::new(NONE)),
        }
    }

    /// A cell that holds, once the reader has failed for it, the offset of the quote that opened
    /// a field never closed.
    pub fn unclosed(&self) -> UnclosedQuote {
        UnclosedQuote(self.unclosed.clone())
    }
}

impl<R: Read> Read for QuoteChecked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.scan.feed(&buf[..n]);
        } else if let Some(opened) = self.scan.unclosed() {
            self.unclosed.store(opened, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a quoted field is never closed",
            ));
        }
        Ok(n)
    }
}

/// See [`QuoteChecked::unclosed`].
#[derive(Debug, Clone)]
pub struct UnclosedQuote(Arc<AtomicU64>);

impl UnclosedQuote {
    /// The 1-based line of `path` on which the unclosed quoted field opened, if one was found.
    pub fn line(&self, path: &Path) -> Option<u64> {
        let offset = self.0.load(Ordering::Relaxed);
        (offset != NONE).then(|| line_at(path, offset).unwrap_or(1))
    }
}

/// The 1-based line of the byte at `offset` in `path`.
fn line_at(path: &Path, offset: u64) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path)?.take(offset));
    let mut line = 1u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(line);
        }
        line += memchr::memchr_iter(b'\n', buf).count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
}

/// The message of an unclosed quoted field, at the line where it opened.
pub const UNCLOSED_MESSAGE: &str = "a quoted field opened here is never closed";

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset of the unclosed quote in `text` fed whole, and fed in every split in two.
    fn unclosed(text: &str) -> Option<u64> {
        let mut whole = QuoteScan::new(b',');
        whole.feed(text.as_bytes());
        for at in 0..=text.len() {
            let mut split = QuoteScan::new(b',');
            split.feed(&text.as_bytes()[..at]);
            split.feed(&text.as_bytes()[at..]);
            assert_eq!(split.unclosed(), whole.unclosed(), "{text:?} split at {at}");
        }
        whole.unclosed()
    }

    #[test]
    fn finds_the_quote_that_never_closes() {
        assert_eq!(unclosed("a,b\n1,\"hello\n2,world\n3,x\n"), Some(6));
        assert_eq!(unclosed("\"open"), Some(0));
        assert_eq!(unclosed("a\n\"x\",\"y"), Some(6));
        assert_eq!(unclosed("a\r\n\"x\r\n"), Some(3));
        assert_eq!(
            unclosed("a,\"b\"\"c\n"),
            Some(2),
            "an escaped quote does not close"
        );
    }

    #[test]
    fn accepts_closed_escaped_and_literal_quotes() {
        for text in [
            "",
            "a,b\n1,2\n",
            "a,b\n1,\"two\nlines\"\n",
            "a,\"say \"\"hi\"\"\"\n",
            "a,b\"c\n",
            "a,b\"\"\n",
            "\"x\"y\"\n",
            "\"\"\n",
            "a,\"\"\"\"\n",
            "\"a\" \"b\n",
        ] {
            assert_eq!(unclosed(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_delimiter_is_the_one_given() {
        let mut scan = QuoteScan::new(b';');
        scan.feed(b"a;\"b\n");
        assert_eq!(scan.unclosed(), Some(2));
        let mut scan = QuoteScan::new(b';');
        scan.feed(b"a,\"b\n");
        assert_eq!(scan.unclosed(), None);
    }

    #[test]
    fn a_reader_fails_at_the_end_and_the_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "a,b\n1,x\n2,\"open\n3,y\n").unwrap();
        let mut reader = QuoteChecked::new(File::open(&path).unwrap(), b',');
        let cell = reader.unclosed();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(cell.line(&path), Some(3));

        std::fs::write(&path, "a,b\n1,\"x\ny\"\n").unwrap();
        let mut reader = QuoteChecked::new(File::open(&path).unwrap(), b',');
        let cell = reader.unclosed();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(cell.line(&path), None);
    }
}
