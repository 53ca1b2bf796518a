//! How the byte fields of commands and of the state are encoded: each as one length-prefixed
//! run of bytes. serde's default for `Vec<u8>` is a sequence of numbers, which postcard writes
//! one varint at a time (two bytes for every byte ≥ 128), slow and larger for Arrow data.
//! Plain `Vec<u8>` and `Option<Vec<u8>>` fields use `serde_bytes`; these cover the containers.

/// `Vec<(PartitionId, Vec<u8>)>`: an ingest request's parts.
pub(crate) mod parts {
    use quiver_coordination::PartitionId;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub(crate) fn serialize<S: Serializer>(
        parts: &[(PartitionId, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(parts.iter().map(|(p, b)| (p, Bytes::new(b))))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(PartitionId, Vec<u8>)>, D::Error> {
        let parts = Vec::<(PartitionId, ByteBuf)>::deserialize(d)?;
        Ok(parts.into_iter().map(|(p, b)| (p, b.into_vec())).collect())
    }
}

/// `BTreeMap<LogIndex, Vec<Vec<u8>>>`: a partition's pending events.
pub(crate) mod events {
    use std::collections::BTreeMap;

    use quiver_coordination::LogIndex;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub(crate) fn serialize<S: Serializer>(
        events: &BTreeMap<LogIndex, Vec<Vec<u8>>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(events.iter().map(|(i, parts)| {
            let parts: Vec<&Bytes> = parts.iter().map(|b| Bytes::new(b)).collect();
            (i, parts)
        }))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<LogIndex, Vec<Vec<u8>>>, D::Error> {
        let events = BTreeMap::<LogIndex, Vec<ByteBuf>>::deserialize(d)?;
        Ok(events
            .into_iter()
            .map(|(i, parts)| (i, parts.into_iter().map(ByteBuf::into_vec).collect()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::command::Command;
    use quiver_coordination::PartitionId;

    #[test]
    fn bytes_travel_as_one_run_not_a_varint_each() {
        let payload = vec![0xffu8; 10_000];
        let cmd = Command::Ingest {
            job: "j".into(),
            producer: "p".into(),
            seq: 1,
            parts: vec![(PartitionId(0), payload.clone())],
            schema: Some(payload.clone()),
            rows: vec![1],
        };
        let encoded = postcard::to_stdvec(&cmd).unwrap();
        // Two runs of 10 000 bytes plus a few bytes of framing (as varints they would take
        // 40 000 bytes).
        assert!(encoded.len() < 20_100, "{} bytes", encoded.len());
        let back: Command = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(back, cmd);
    }
}
