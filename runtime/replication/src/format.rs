//! The header every stored file starts with, and the files that hold a single value.
//!
//! Every file of a group is a sequence of [`quiver_durable::records`] whose first record is a
//! 24-byte header: an 8-byte magic naming the kind of file, the format [`VERSION`] (`u32` LE),
//! the [`GroupId`] (`u32` LE) and a `u64` LE that log segments use for their first index (zero
//! elsewhere). A file of another group or version is refused, never repaired.
//!
//! A value file (the vote, the log's metadata) is the header and one record holding the
//! postcard encoding of the value, written whole with [`quiver_durable::write_durably`]: any
//! defect in it, even at its end, is damage.

use std::fs;
use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use quiver_durable::records::{self, End};

use crate::error::{Damage, StoreError};
use crate::types::GroupId;

/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

/// The length of the header record's payload.
pub(crate) const HEADER_PAYLOAD: usize = 24;

/// The kinds of stored files, each with its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A log segment.
    Segment,
    /// The vote.
    Vote,
    /// The log's metadata (the last purged log id).
    LogMeta,
    /// A snapshot.
    Snapshot,
}

impl Kind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            Kind::Segment => b"QVRLOGSG",
            Kind::Vote => b"QVRVOTE.",
            Kind::LogMeta => b"QVRLMETA",
            Kind::Snapshot => b"QVRSNAPS",
        }
    }
}

/// The header record's payload for a file of `kind` in `group`.
pub(crate) fn header(kind: Kind, group: GroupId, first: u64) -> [u8; HEADER_PAYLOAD] {
    let mut h = [0u8; HEADER_PAYLOAD];
    h[..8].copy_from_slice(kind.magic());
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&group.0.to_le_bytes());
    h[16..].copy_from_slice(&first.to_le_bytes());
    h
}

/// Checks the header record's `payload` of `file`, expected to be of `kind` and `group`, and
/// returns the `u64` it carries.
pub(crate) fn check_header(
    file: &Path,
    payload: &[u8],
    kind: Kind,
    group: GroupId,
) -> Result<u64, StoreError> {
    let damaged = || StoreError::Damaged {
        file: file.to_path_buf(),
        offset: 0,
        damage: Damage::Header,
    };
    if payload.len() != HEADER_PAYLOAD || &payload[..8] != kind.magic() {
        return Err(damaged());
    }
    let u32_at = |at: usize| u32::from_le_bytes(payload[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(StoreError::Version {
            file: file.to_path_buf(),
            found: version,
            supported: VERSION,
        });
    }
    let found = GroupId(u32_at(12));
    if found != group {
        return Err(StoreError::WrongGroup {
            file: file.to_path_buf(),
            found,
            expected: group,
        });
    }
    Ok(u64::from_le_bytes(
        payload[16..].try_into().expect("8 bytes"),
    ))
}

/// Writes `value` to the value file `path` durably: once this returns, the file holds it
/// across a crash (the durability point is [`quiver_durable::write_durably`]'s directory
/// fsync).
pub(crate) fn write_value<T: Serialize>(
    path: &Path,
    kind: Kind,
    group: GroupId,
    value: &T,
) -> Result<(), StoreError> {
    let body = postcard::to_stdvec(value).expect("stored values are plain data");
    let bytes = records::frames([&header(kind, group, 0)[..], &body]);
    quiver_durable::write_durably(path, &bytes).map_err(StoreError::io(path))
}

/// Reads the value file `path`, or `None` if there is none.
pub(crate) fn read_value<T: DeserializeOwned>(
    path: &Path,
    kind: Kind,
    group: GroupId,
) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path)(e)),
    };
    let damaged = |offset: u64, damage: Damage| StoreError::Damaged {
        file: path.to_path_buf(),
        offset,
        damage,
    };
    let scan = records::scan(&bytes);
    match scan.end {
        End::Clean => {}
        // Written whole and renamed into place: even a defect at the end is damage.
        End::Torn { offset, defect } | End::Damaged { offset, defect } => {
            return Err(damaged(offset, Damage::Record(defect)))
        }
    }
    let [head, value] = scan.records[..] else {
        let offset = scan.records.get(2).map_or(bytes.len() as u64, |r| r.offset);
        return Err(damaged(offset, Damage::Records));
    };
    check_header(path, head.payload, kind, group)?;
    postcard::from_bytes(value.payload)
        .map(Some)
        .map_err(|_| damaged(value.offset, Damage::Undecodable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        assert_eq!(
            read_value::<u64>(&path, Kind::Vote, GroupId(3)).unwrap(),
            None
        );
        write_value(&path, Kind::Vote, GroupId(3), &42u64).unwrap();
        assert_eq!(
            read_value::<u64>(&path, Kind::Vote, GroupId(3)).unwrap(),
            Some(42)
        );
    }

    #[test]
    fn a_value_file_of_another_group_kind_or_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        write_value(&path, Kind::Vote, GroupId(3), &42u64).unwrap();
        assert!(matches!(
            read_value::<u64>(&path, Kind::Vote, GroupId(4)),
            Err(StoreError::WrongGroup {
                found: GroupId(3),
                expected: GroupId(4),
                ..
            })
        ));
        assert!(matches!(
            read_value::<u64>(&path, Kind::LogMeta, GroupId(3)),
            Err(StoreError::Damaged {
                offset: 0,
                damage: Damage::Header,
                ..
            })
        ));
        let mut other = header(Kind::Vote, GroupId(3), 0);
        other[8] = 9;
        let bytes = records::frames([&other[..], &[42u8][..]]);
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read_value::<u64>(&path, Kind::Vote, GroupId(3)),
            Err(StoreError::Version { found: 9, .. })
        ));
    }

    #[test]
    fn every_flipped_byte_of_a_value_file_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        write_value(&path, Kind::Vote, GroupId(0), &(7u64, 8u64)).unwrap();
        let good = fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            match read_value::<(u64, u64)>(&path, Kind::Vote, GroupId(0)) {
                Err(StoreError::Damaged { file, .. }) => assert_eq!(file, path),
                other => panic!("byte {at}: {other:?}"),
            }
        }
    }
}
