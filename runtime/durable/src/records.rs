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
//! it). Writers append frames ([`frame`], [`frame_parts`], [`append`]) and make them durable
//! themselves (see the crate's docs); [`scan`] reads a whole file back and says how it ends
//! ([`End`]):
//!
//! - **clean**: every byte belongs to a valid record;
//! - **torn**: the last record is incomplete; or it fails a checksum and is the last one in the
//!   file (the length in its header ends it at the end of the file, believed for this even when
//!   the header fails its own checksum); or it fails a checksum and only zeros follow it (its
//!   header, if that is what fails) — what a crash during an append leaves (a kill leaves a
//!   prefix of the write, a power loss may leave zeros or a partly written block). Nothing
//!   after the last `fsync` was acknowledged, so the writer may cut the tail off;
//! - **damaged**: a record fails its checksum with valid-looking bytes after it. That is not a
//!   crash during an append but damage to data that was once durable: the reader must not use
//!   it, nor silently skip it.
//!
//! The one ambiguity is a bit flip in the very last record of a file (outside its length): it
//! looks like a torn append and is reported as torn. A writer that needs to tell them apart
//! must keep its own record of what it acknowledged.
//!
//! Readers that do not hold a whole file — that read it in chunks, or follow it as it grows —
//! check one frame at a time with [`check_frame`], and tell a torn tail from damage with
//! [`is_torn_tail`], which reads what follows the frame only as far as it must.

use std::fs::File;
use std::io::{self, Read, Write};
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
    frame_parts(&[payload], out);
}

/// The frame of the payload made of `parts` one after the other, appended to `out`: the same
/// bytes as [`frame`] of their concatenation, without concatenating them first.
///
/// # Panics
///
/// If the payload is longer than [`MAX_PAYLOAD`].
pub fn frame_parts(parts: &[&[u8]], out: &mut Vec<u8>) {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(payload_len).expect("a record's payload is at most 4 GiB");
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    let header_crc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&header_crc.to_le_bytes());
    out.reserve(HEADER_LEN + payload_len);
    out.extend_from_slice(&header);
    for part in parts {
        out.extend_from_slice(part);
    }
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

/// Checks the frame starting at `bytes[0]`: its payload (the frame is
/// [`framed_len`]`(payload.len())` bytes long), or what is wrong with it.
///
/// [`Defect::Incomplete`] means that `bytes` end inside the frame: a reader that has not reached
/// the end of the file reads on and checks again. Bytes after the frame are not looked at. A
/// header that fails its checksum is reported as soon as the header is there, before its
/// payload is.
pub fn check_frame(bytes: &[u8]) -> Result<&[u8], Defect> {
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
                let torn = match zeros_needed(rest, defect, rest.len() as u64) {
                    None => true,
                    Some(from) => only_zeros(&rest[from..]),
                };
                let end = if torn {
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

/// Whether a defective frame can be what a crash during an append left (see the module's docs),
/// for a reader that does not hold the whole file.
///
/// - `bytes`: the file's bytes from the frame's start on, as far as they were read, in which
///   [`check_frame`] found `defect` (for [`Defect::Incomplete`], they reach the end of the file);
/// - `left`: how many bytes the file holds from the frame's start to its end;
/// - `after`: the file's bytes after `bytes`, read only as far as it takes to find one that is
///   not zero.
pub fn is_torn_tail(
    bytes: &[u8],
    defect: Defect,
    left: u64,
    mut after: impl Read,
) -> io::Result<bool> {
    debug_assert!(defect != Defect::Incomplete || bytes.len() as u64 >= left);
    let Some(from) = zeros_needed(bytes, defect, left) else {
        return Ok(true);
    };
    if !only_zeros(&bytes[from.min(bytes.len())..]) {
        return Ok(false);
    }
    let mut chunk = [0u8; 8192];
    loop {
        let n = match after.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !only_zeros(&chunk[..n]) {
            return Ok(false);
        }
    }
}

/// For a frame at the start of `bytes` found to have `defect`, with `left` bytes from its start
/// to the end of the file: `None` if it is a torn tail whatever follows, else the position
/// (from its start) after which only zeros may follow for it to be one.
fn zeros_needed(bytes: &[u8], defect: Defect, left: u64) -> Option<usize> {
    match defect {
        // The header is valid, so its length can be trusted: the write was cut short.
        Defect::Incomplete => None,
        Defect::Header => {
            // Not to be believed, but a length that ends the record exactly at the end of the
            // file says it is the last one.
            let claimed = HEADER_LEN as u64 + u64::from(read_u32(bytes, 0));
            if claimed == left {
                return None;
            }
            // Otherwise it says nothing about where the record ends: only zeros (space the file
            // system allocated but never wrote) may follow the header.
            Some(HEADER_LEN)
        }
        Defect::Payload => Some(HEADER_LEN + read_u32(bytes, 0) as usize),
    }
}

fn only_zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
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
    fn a_last_record_whose_header_fails_is_torn_if_its_length_ends_the_file_or_zeros_follow() {
        let (bytes, offsets) = three();
        let last = offsets[2] as usize;
        // Either checksum of the header, flipped: the length still ends it at the end.
        for at in [last + 4, last + 8, last + 11] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert_eq!(
                scan(&bad).end,
                End::Torn {
                    offset: offsets[2],
                    defect: Defect::Header
                },
                "flipped byte {at}"
            );
        }
        // A flipped length ends it elsewhere, and its payload follows: damage.
        let mut bad = bytes.clone();
        bad[last] ^= 0x01;
        assert_eq!(
            scan(&bad).end,
            End::Damaged {
                offset: offsets[2],
                defect: Defect::Header
            }
        );
        // A header of garbage with nothing but zeros after it: a block written in part.
        let mut garbage = bytes[..last].to_vec();
        garbage.extend_from_slice(&[0xab; HEADER_LEN]);
        garbage.extend_from_slice(&[0; 30]);
        assert_eq!(
            scan(&garbage).end,
            End::Torn {
                offset: offsets[2],
                defect: Defect::Header
            }
        );
    }

    /// `is_torn_tail` on a file read in two parts agrees with `scan` of the whole file.
    #[test]
    fn judging_a_tail_from_part_of_the_file_agrees_with_a_scan_of_all_of_it() {
        let (bytes, offsets) = three();
        let mut files = Vec::new();
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x04;
            files.push(flipped);
            files.push(bytes[..at].to_vec());
        }
        for zeros in [1, 7, 40] {
            let mut padded = bytes[..offsets[2] as usize].to_vec();
            padded.extend(std::iter::repeat_n(0, zeros));
            files.push(padded);
            let mut bad = bytes.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            bad.extend(std::iter::repeat_n(0, zeros));
            files.push(bad);
        }
        for (i, file) in files.iter().enumerate() {
            let whole = scan(file);
            let (offset, defect, torn) = match whole.end {
                End::Clean => continue,
                End::Torn { offset, defect } => (offset, defect, true),
                End::Damaged { offset, defect } => (offset, defect, false),
            };
            let rest = &file[offset as usize..];
            let needed = match check_frame(rest) {
                Err(d) => {
                    assert_eq!(d, defect, "file {i}");
                    match d {
                        Defect::Incomplete => rest.len(),
                        Defect::Header => HEADER_LEN,
                        Defect::Payload => HEADER_LEN + read_u32(rest, 0) as usize,
                    }
                }
                Ok(_) => panic!("file {i}: a valid frame at the defect"),
            };
            for split in needed..=rest.len() {
                let (read, after) = rest.split_at(split);
                assert_eq!(
                    is_torn_tail(read, defect, rest.len() as u64, after).unwrap(),
                    torn,
                    "file {i}, split at {split}"
                );
            }
        }
    }

    #[test]
    fn a_payload_framed_in_parts_is_framed_as_one() {
        let mut whole = Vec::new();
        frame(b"prefix and body", &mut whole);
        let mut parts = Vec::new();
        frame_parts(&[b"prefix", b"", b" and body"], &mut parts);
        assert_eq!(parts, whole);
        assert_eq!(check_frame(&parts), Ok(&b"prefix and body"[..]));
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
