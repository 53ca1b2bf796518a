//! The snapshot file: the state machine's state as of a log id, self-describing and checked.
//!
//! ```text
//! record 0   header: kind, format version, GroupId, the last log index (0 if none)
//! record 1   postcard(Head): SnapshotMeta (last log id, membership, id), body length, body SHA-256
//! record 2.. the body, postcard(ClusterState), in chunks of at most 16 MiB
//! ```
//!
//! The same bytes are the file on disk and the snapshot openraft sends to a follower (the
//! type config's `SnapshotData`), so a follower checks the group, the version, every record's
//! checksum and the body's SHA-256 before it installs anything, and then writes the very bytes
//! it checked. A snapshot is written whole with [`quiver_durable::write_durably`]: a defect
//! anywhere, even at its end, is damage.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use quiver_durable::records::{self, End};

use crate::error::{Damage, StoreError};
use crate::format::{self, Kind};
use crate::state::ClusterState;
use crate::types::{GroupId, LogId, SnapshotMeta};

/// The body is cut into records of at most this many bytes.
const CHUNK: usize = 16 << 20;

/// What a snapshot file's second record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    meta: SnapshotMeta,
    body_len: u64,
    body_sha256: [u8; 32],
}

/// The id of the snapshot ending at `last`: its index, term and leader node, or `empty`.
pub fn snapshot_id(last: Option<LogId>) -> String {
    match last {
        Some(l) => format!(
            "{:020}-{}-{}",
            l.index, l.leader_id.term, l.leader_id.node_id
        ),
        None => "empty".to_owned(),
    }
}

/// The file name of the snapshot with id `id`.
pub fn file_name(id: &str) -> String {
    format!("snapshot-{id}.snap")
}

/// Whether `name` is a snapshot's file name.
pub(crate) fn is_file_name(name: &str) -> bool {
    name.starts_with("snapshot-") && name.ends_with(".snap")
}

/// The bytes of the snapshot of `state` described by `meta`, for `group`.
pub fn encode(group: GroupId, meta: &SnapshotMeta, state: &ClusterState) -> Vec<u8> {
    let body = state.to_bytes();
    let head = Head {
        meta: meta.clone(),
        body_len: body.len() as u64,
        body_sha256: Sha256::digest(&body).into(),
    };
    let last_index = meta.last_log_id.map_or(0, |l| l.index);
    let header = format::header(Kind::Snapshot, group, last_index);
    let head = postcard::to_stdvec(&head).expect("snapshot metadata is plain data");
    let parts = [&header[..], &head[..]]
        .into_iter()
        .chain(body.chunks(CHUNK))
        .collect::<Vec<_>>();
    records::frames(parts)
}

/// Checks and decodes the snapshot `bytes` of `group`, naming `file` in errors.
pub fn decode(
    file: &Path,
    bytes: &[u8],
    group: GroupId,
) -> Result<(SnapshotMeta, ClusterState), StoreError> {
    let damaged = |offset: u64, damage: Damage| StoreError::Damaged {
        file: file.to_path_buf(),
        offset,
        damage,
    };
    let scan = records::scan(bytes);
    if let End::Torn { offset, defect } | End::Damaged { offset, defect } = scan.end {
        return Err(damaged(offset, Damage::Record(defect)));
    }
    let (head_record, chunks) = match &scan.records[..] {
        [header, head, chunks @ ..] => {
            format::check_header(file, header.payload, Kind::Snapshot, group)?;
            (head, chunks)
        }
        [header] => {
            format::check_header(file, header.payload, Kind::Snapshot, group)?;
            return Err(damaged(bytes.len() as u64, Damage::Records));
        }
        [] => return Err(damaged(0, Damage::Header)),
    };
    let head: Head = postcard::from_bytes(head_record.payload)
        .map_err(|_| damaged(head_record.offset, Damage::Undecodable))?;
    let body: Vec<u8> = chunks.iter().flat_map(|c| c.payload).copied().collect();
    let body_offset = chunks.first().map_or(bytes.len() as u64, |c| c.offset);
    if body.len() as u64 != head.body_len
        || <[u8; 32]>::from(Sha256::digest(&body)) != head.body_sha256
    {
        return Err(damaged(body_offset, Damage::Body));
    }
    let state =
        ClusterState::from_bytes(&body).map_err(|_| damaged(body_offset, Damage::Undecodable))?;
    Ok((head.meta, state))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::command::Command;
    use crate::types::{ClusterNode, StoredMembership};

    fn sample() -> (SnapshotMeta, ClusterState) {
        let mut state = ClusterState::new();
        state.apply(
            1,
            &Command::SubmitJob {
                job: "clicks".into(),
                pipeline_toml: "[source]".into(),
                partitions: 2,
                base_dir: String::new(),
            },
        );
        let last = LogId::new(CommittedLeaderId::new(3, 1), 7);
        let membership = Membership::<u64, ClusterNode>::new(vec![BTreeSet::from([1, 2, 3])], None);
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::new(Some(last), membership),
            snapshot_id: snapshot_id(Some(last)),
        };
        (meta, state)
    }

    #[test]
    fn a_snapshot_decodes_to_what_was_encoded() {
        let (meta, state) = sample();
        let bytes = encode(GroupId(0), &meta, &state);
        let (m, s) = decode(Path::new("s"), &bytes, GroupId(0)).unwrap();
        assert_eq!((m, s.checksum()), (meta, state.checksum()));
    }

    #[test]
    fn a_snapshot_of_another_group_is_refused() {
        let (meta, state) = sample();
        let bytes = encode(GroupId(1), &meta, &state);
        assert!(matches!(
            decode(Path::new("s"), &bytes, GroupId(0)),
            Err(StoreError::WrongGroup {
                found: GroupId(1),
                ..
            })
        ));
    }

    #[test]
    fn every_flipped_byte_or_cut_of_a_snapshot_is_refused_naming_the_file() {
        let (meta, state) = sample();
        let bytes = encode(GroupId(0), &meta, &state);
        let file = PathBuf::from("snapshot-x.snap");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            match decode(&file, &bad, GroupId(0)) {
                Err(StoreError::Damaged { file: f, .. }) => assert_eq!(f, file),
                other => panic!("byte {at}: {other:?}"),
            }
        }
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    decode(&file, &bytes[..len], GroupId(0)),
                    Err(StoreError::Damaged { .. })
                ),
                "cut at {len}"
            );
        }
    }
}
