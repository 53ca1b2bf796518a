//! Framed, checksummed records appended to a file, and scanned back with torn-tail detection.
//!
//! A file of records is a plain concatenation of frames:
//!
//! ```text
//! [len: u32 LE][crc32(payload): u32 LE][crc32(the first 8 bytes): u32 LE][payload: len bytes]
//! ```
//!
//! The header has its own checksum so that a damaged length is recognised as damage, and not
//! mistaken for a record cut short by a crash (which would silently drop every record after
//! it). Writers append frames ([`frame`], [`append`]) and make them durable themselves (see the
//! crate's docs); [`scan`] reads a whole file back and says how it ends ([`End`]):
//!
//! - **clean**: every byte belongs to a valid record;
//! - **torn**: the last record is incomplete, or is the last one in the file and fails its
//!   checksum, or is followed by zeros only — what a crash during an append leaves (a kill
//!   leaves a prefix of the write, a power loss may leave zeros or a partly written block).
//!   Nothing after the last `fsync` was acknowledged, so the writer may cut the tail off;
//! - **damaged**: a record fails its checksum with valid-looking bytes after it. That is not a
//!   crash during an append but damage to data that was once durable: the reader must not use
//!   it, nor silently skip it.
//!
//! The one ambiguity is a bit flip in the very last record of a file: it looks like a torn
//! append and is reported as torn. A writer that needs to tell them apart must keep its own
//! record of what it acknowledged.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// Length of a frame's header, before the payload.
pub const HEADER_LEN: usize = 12;

/// The largest payload a frame can carry.
pub const MAX_PAYLOAD: usize = u32::MAX as usize;

/// The frame of `payload`, appended to `out`.
///
/// # Panics
///
/// If `payload` is longer than [`MAX_PAYLOAD`].
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("a record's payload is at most 4 GiB");
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&header_crc.to_le_bytes());
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// The frames of `payloads`, one after the other.
pub fn frames<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in payloads {
        frame(payload, &mut out);
    }
    out
}

/// How many bytes the frame of a `payload_len`-byte payload takes.
pub fn framed_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// Writes the frames of `payloads` at the end of `file` (opened for appending) in one write,
/// and returns the offset of each frame given `end`, the file's length before the write. The
/// caller syncs the file: the records are durable only then.
pub fn append<'a>(
    file: &mut File,
    end: u64,
    payloads: impl IntoIterator<Item = &'a [u8]>,
) -> io::Result<Vec<u64>> {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for payload in payloads {
        offsets.push(end + bytes.len() as u64);
        frame(payload, &mut bytes);
    }
    file.write_all(&bytes)?;
    Ok(offsets)
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// The file ends inside the record.
    Incomplete,
    /// The header fails its checksum.
    Header,
    /// The payload fails its checksum.
    Payload,
}

impl std::fmt::Display for Defect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Defect::Incomplete => "the file ends inside the record",
            Defect::Header => "the record's header fails its checksum",
            Defect::Payload => "the record's payload fails its checksum",
        })
    }
}

/// How a scanned file ends, after its last valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every byte belongs to a valid record.
    Clean,
    /// A crash during an append left an unusable tail from `offset` on (see the module's docs).
    Torn {
        /// Where the tail starts: the length the file should be cut to.
        offset: u64,
        /// What is wrong with its first record.
        defect: Defect,
    },
    /// The record at `offset` is damaged, and records may follow it.
    Damaged {
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        defect: Defect,
    },
}

impl End {
    /// Where the valid records end: the file's length when clean, else the defect's offset.
    pub fn valid_len(&self, file_len: u64) -> u64 {
        match *self {
            End::Clean => file_len,
            End::Torn { offset, .. } | End::Damaged { offset, .. } => offset,
        }
    }
}

/// One valid record found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where its frame starts in the file.
    pub offset: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

/// What [`scan`] found: the valid records up to the first defect, and how the file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The valid records, in order.
    pub records: Vec<Record<'a>>,
    /// How the file ends after them.
    pub end: End,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the frame starting at `bytes[0]`: its payload, or what is wrong with it.
fn check_frame(bytes: &[u8]) -> Result<&[u8], Defect> {
    if bytes.len() < HEADER_LEN {
        return Err(Defect::Incomplete);
    }
    if crc32fast::hash(&bytes[..8]) != read_u32(bytes, 8) {
        return Err(Defect::Header);
    }
    let len = read_u32(bytes, 0) as usize;
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(Defect::Incomplete)?;
    if crc32fast::hash(payload) != read_u32(bytes, 4) {
        return Err(Defect::Payload);
    }
    Ok(payload)
}

/// Reads the records of a whole file's `bytes`, stopping at the first defect.
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        match check_frame(rest) {
            Ok(payload) => {
                records.push(Record {
                    offset: at as u64,
                    payload,
                });
                at += HEADER_LEN + payload.len();
            }
            Err(defect) => {
                let offset = at as u64;
                let end = if is_tail(rest, defect) {
                    End::Torn { offset, defect }
                } else {
                    End::Damaged { offset, defect }
                };
                return Scan { records, end };
            }
        }
    }
    Scan {
        records,
        end: End::Clean,
    }
}

/// Whether a defective record at the start of `rest` can be what a crash during an append
/// left: incomplete, or followed by nothing but zeros.
fn is_tail(rest: &[u8], defect: Defect) -> bool {
    let after = match defect {
        // The header is valid, so its length can be trusted: the write was cut short.
        Defect::Incomplete => return true,
        // An unreadable header says nothing about the record's length: only zeros (space the
        // file system allocated but never wrote) may follow.
        Defect::Header => rest,
        Defect::Payload => &rest[HEADER_LEN + read_u32(rest, 0) as usize..],
    };
    after.iter().all(|&b| b == 0)
}

/// Why [`read_at`] could not return a record.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read.
    Io(io::Error),
    /// The record at the offset is not valid.
    Defect(Defect),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Defect(d) => write!(f, "{d}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Defect(_) => None,
        }
    }
}

/// Reads and checks the record whose frame starts at `offset` in `file` and carries a
/// `payload_len`-byte payload (as an earlier [`scan`] found it), returning its payload.
pub fn read_at(file: &File, offset: u64, payload_len: usize) -> Result<Vec<u8>, ReadError> {
    let mut bytes = vec![0u8; HEADER_LEN + payload_len];
    match file.read_exact_at(&mut bytes, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ReadError::Defect(Defect::Incomplete))
        }
        Err(e) => return Err(ReadError::Io(e)),
    }
    let payload = check_frame(&bytes).map_err(ReadError::Defect)?;
    if payload.len() != payload_len {
        // A valid frame of another length: not the record the caller indexed.
        return Err(ReadError::Defect(Defect::Header));
    }
    bytes.drain(..HEADER_LEN);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> (Vec<u8>, [u64; 3]) {
        let bytes = frames([&b"first"[..], b"", b"third record"]);
        let offsets = [0, framed_len(5), framed_len(5) + framed_len(0)];
        (bytes, offsets)
    }

    fn payloads<'a>(scan: &Scan<'a>) -> Vec<&'a [u8]> {
        scan.records.iter().map(|r| r.payload).collect()
    }

    #[test]
    fn records_read_back_in_order_with_their_offsets() {
        let (bytes, offsets) = three();
        let scan = scan(&bytes);
        assert_eq!(scan.end, End::Clean);
        assert_eq!(payloads(&scan), [&b"first"[..], b"", b"third record"]);
        let found: Vec<u64> = scan.records.iter().map(|r| r.offset).collect();
        assert_eq!(found, offsets);
        assert_eq!(bytes.len() as u64, offsets[2] + framed_len(12));
    }

    #[test]
    fn an_empty_file_is_clean() {
        assert_eq!(
            scan(&[]),
            Scan {
                records: vec![],
                end: End::Clean
            }
        );
    }

    #[test]
    fn every_cut_inside_the_last_record_is_a_torn_tail() {
        let (bytes, offsets) = three();
        for len in offsets[2] as usize + 1..bytes.len() {
            let scan = scan(&bytes[..len]);
            assert_eq!(payloads(&scan).len(), 2, "cut at {len}");
            assert_eq!(
                scan.end,
                End::Torn {
                    offset: offsets[2],
                    defect: Defect::Incomplete
                },
                "cut at {len}"
            );
            assert_eq!(scan.end.valid_len(len as u64), offsets[2]);
        }
    }

    #[test]
    fn a_last_record_failing_its_checksum_or_followed_by_zeros_is_torn() {
        let (mut bytes, offsets) = three();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert_eq!(
            scan(&bytes).end,
            End::Torn {
                offset: offsets[2],
                defect: Defect::Payload
            }
        );
        // Zeros where the last record should be: allocated, never written.
        let (mut bytes, offsets) = three();
        bytes.truncate(offsets[2] as usize);
        bytes.extend_from_slice(&[0; 40]);
        assert_eq!(
            scan(&bytes).end,
            End::Torn {
                offset: offsets[2],
                defect: Defect::Header
            }
        );
    }

    #[test]
    fn a_flipped_bit_before_the_last_record_is_damage_at_that_record() {
        let (bytes, offsets) = three();
        for at in 0..offsets[2] as usize {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let scan = scan(&damaged);
            let record = if at < offsets[1] as usize { 0 } else { 1 };
            let defect = if at - offsets[record] as usize >= HEADER_LEN {
                Defect::Payload
            } else {
                Defect::Header
            };
            assert_eq!(
                scan.end,
                End::Damaged {
                    offset: offsets[record],
                    defect
                },
                "flipped byte {at}"
            );
            assert_eq!(scan.records.len(), record, "flipped byte {at}");
        }
    }

    #[test]
    fn a_damaged_length_is_not_taken_for_a_torn_tail() {
        let (mut bytes, _) = three();
        // A length pointing far past the end of the file.
        bytes[3] = 0x7f;
        assert_eq!(
            scan(&bytes).end,
            End::Damaged {
                offset: 0,
                defect: Defect::Header
            }
        );
    }

    #[test]
    fn appended_records_are_read_back_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        let first = append(&mut file, 0, [&b"a"[..], b"bb"]).unwrap();
        let end = framed_len(1) + framed_len(2);
        let second = append(&mut file, end, [&b"ccc"[..]]).unwrap();
        assert_eq!(first, [0, framed_len(1)]);
        assert_eq!(second, [end]);
        assert_eq!(read_at(&file, second[0], 3).unwrap(), b"ccc");
        assert_eq!(read_at(&file, first[1], 2).unwrap(), b"bb");
        assert!(matches!(
            read_at(&file, first[1], 3),
            Err(ReadError::Defect(_))
        ));
        assert!(matches!(
            read_at(&file, second[0], 30),
            Err(ReadError::Defect(Defect::Incomplete))
        ));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(payloads(&scan(&bytes)), [&b"a"[..], b"bb", b"ccc"]);
    }
}
