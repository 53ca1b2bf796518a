//! Deterministic names of a streaming sink's files.
//!
//! A sink writes epoch *n* of partition *p* to a temporary file whose name says job, partition,
//! epoch and a sequence number within the epoch, and which readers of the output directory
//! skip (it starts with a dot). On commit it is renamed to its final name. Because the names
//! are a function of (job, partition, epoch, sequence), a rerun of an epoch after a crash
//! writes the same names, and recovery can tell which temporary files belong to which job.
//!
//! A table sink needs no temporary names: a table's readers see only the files its log names,
//! so its data files are written under their final names ([`table_stem`]), and its commit is
//! what makes them visible.

/// The parts of a temporary file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempName {
    /// The job.
    pub job: String,
    /// The partition.
    pub partition: u32,
    /// The epoch whose rows it holds.
    pub epoch: u64,
    /// Its number among the files of that partition and epoch.
    pub seq: u32,
    /// The file extension (`parquet`, `jsonl`, `arrow`).
    pub ext: String,
}

const PREFIX: &str = ".quiver~";
const SEP: char = '~';

/// Whether `job` can name a job: letters, digits, `-` and `_` (so it never contains the
/// separator of temporary names).
pub fn valid_job(job: &str) -> bool {
    !job.is_empty()
        && job
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `.quiver~<job>~p<partition>~e<epoch>~<seq>.<ext>`.
pub fn temp_name(job: &str, partition: u32, epoch: u64, seq: u32, ext: &str) -> String {
    format!("{PREFIX}{job}{SEP}p{partition}{SEP}e{epoch}{SEP}{seq}.{ext}")
}

/// `part-<partition>-<epoch>-<seq>.<ext>`, zero-padded so names sort in commit order.
pub fn final_name(partition: u32, epoch: u64, seq: u32, ext: &str) -> String {
    format!("part-{partition:05}-{epoch:010}-{seq:04}.{ext}")
}

/// `part-<job>-e<epoch>-p<partition>`, zero-padded: the start of the names of the data files
/// a table sink writes for `epoch` of `partition`, which the table's writer completes with
/// `-<n>.parquet`.
pub fn table_stem(job: &str, partition: u32, epoch: u64) -> String {
    format!("part-{job}-e{epoch:010}-p{partition:05}")
}

/// The epoch of a table data file of `job` (a name made from [`table_stem`]); `None` for any
/// other name, another job's included.
pub fn table_file_epoch(job: &str, name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("part-")?
        .strip_prefix(job)?
        .strip_prefix("-e")?
        .strip_suffix(".parquet")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Exactly three parts: a longer job name that starts with `job` leaves more.
    let mut parts = rest.split('-');
    let (epoch, partition, n) = (parts.next()?, parts.next()?, parts.next()?);
    let partition = partition.strip_prefix('p')?;
    if parts.next().is_some() || !digits(epoch) || !digits(partition) || !digits(n) {
        return None;
    }
    epoch.parse().ok()
}

/// Reads a name made by [`temp_name`]; `None` for any other name.
pub fn parse_temp(name: &str) -> Option<TempName> {
    let rest = name.strip_prefix(PREFIX)?;
    let (stem, ext) = rest.rsplit_once('.')?;
    let mut parts = stem.split(SEP);
    let job = parts.next().filter(|j| valid_job(j))?;
    let partition = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let epoch = parts.next()?.strip_prefix('e')?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    if parts.next().is_some() || ext.is_empty() {
        return None;
    }
    Some(TempName {
        job: job.into(),
        partition,
        epoch,
        seq,
        ext: ext.into(),
    })
}

impl TempName {
    /// The final name this file takes on commit.
    pub fn fin(&self) -> String {
        final_name(self.partition, self.epoch, self.seq, &self.ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_read_back_and_nothing_else_parses() {
        for job in ["j", "orders-2026", "a_b"] {
            for (p, e, s) in [
                (0, 1, 0),
                (7, 123456789012, 3),
                (u32::MAX, u64::MAX, u32::MAX),
            ] {
                let n = temp_name(job, p, e, s, "parquet");
                let t = parse_temp(&n).unwrap();
                assert_eq!(
                    (t.job.as_str(), t.partition, t.epoch, t.seq, t.ext.as_str()),
                    (job, p, e, s, "parquet")
                );
                assert_eq!(t.fin(), final_name(p, e, s, "parquet"));
            }
        }
        for other in [
            "part-00001-0000000001-0000.parquet",
            ".quiver~j~p1~e2.parquet",
            ".quiver~j~p1~e2~3~4.parquet",
            ".quiver~j~px~e2~3.parquet",
            ".quiver~a.b~p1~e2~3.parquet",
            ".quiver~j~p1~e2~3",
            "quiver~j~p1~e2~3.parquet",
        ] {
            assert_eq!(parse_temp(other), None, "{other}");
        }
    }

    #[test]
    fn table_file_names_give_their_epoch_to_their_own_job_only() {
        for job in ["j", "orders-2026", "a_b"] {
            for (p, e) in [(0, 1), (7, 123456789012)] {
                let name = format!("{}-0003.parquet", table_stem(job, p, e));
                assert_eq!(table_file_epoch(job, &name), Some(e), "{name}");
            }
        }
        let other = format!("{}-0000.parquet", table_stem("a-e1-p2", 0, 3));
        assert_eq!(table_file_epoch("a", &other), None);
        assert_eq!(table_file_epoch("a-e1-p2", &other), Some(3));
        for name in [
            "part-j-e0000000001-p00000-0000.json",
            "part-j-e0000000001-p00000.parquet",
            "part-j-ex-p00000-0000.parquet",
            "part-00000-0000000001-0000.parquet",
            "part-3f2a0c1e-uuid.snappy.parquet",
        ] {
            assert_eq!(table_file_epoch("j", name), None, "{name}");
        }
    }

    #[test]
    fn final_names_sort_by_partition_then_epoch() {
        let mut names = vec![
            final_name(1, 10, 0, "jsonl"),
            final_name(1, 9, 1, "jsonl"),
            final_name(0, 11, 0, "jsonl"),
        ];
        names.sort();
        assert_eq!(
            names,
            [
                final_name(0, 11, 0, "jsonl"),
                final_name(1, 9, 1, "jsonl"),
                final_name(1, 10, 0, "jsonl")
            ]
        );
    }
}
