//! The directories the stores live in: one owner at a time, no leftovers, damage kept aside.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// What a repair did to get past damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// A damaged file (or one after the damage) was renamed aside and is no longer used.
    MovedAside {
        /// Its name.
        file: PathBuf,
        /// Its new name.
        to: PathBuf,
    },
    /// A log file (a segment or the purge mark) was set aside, undamaged, because the node
    /// leaves the cluster and joins again with an empty log; it is no longer used.
    SetAside {
        /// Its name.
        file: PathBuf,
        /// Its new name.
        to: PathBuf,
    },
    /// A damaged log segment was cut before its damage; a copy of the whole file was kept.
    Cut {
        /// The segment.
        file: PathBuf,
        /// The bytes kept (the header and the entries before the damage).
        kept_bytes: u64,
        /// The copy of the damaged file.
        copy: PathBuf,
    },
}

/// The suffix of a damaged file moved aside by a repair.
pub const DAMAGED_SUFFIX: &str = ".damaged";
/// The suffix of a log file set aside when a node joins again with an empty log.
pub const SET_ASIDE_SUFFIX: &str = ".set-aside";

/// Creates `dir` if needed and locks it for this store: the returned file holds the lock until
/// it is dropped (or the process dies), so two stores never write one directory.
pub(crate) fn lock(dir: &Path) -> Result<File, StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(StoreError::io(&path)(e)),
    }
}

/// Removes the temporary files that writers of `dir` left when they died mid-write. Only
/// called with the directory locked, so none of them is in use.
pub(crate) fn remove_temporaries(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".quiver-tmp-") {
            let path = entry.path();
            tracing::debug!(file = %path.display(), "removing a temporary file left by a crash");
            fs::remove_file(&path).map_err(StoreError::io(&path))?;
        }
    }
    Ok(())
}

/// The names in `dir` that `parse` accepts, with what it made of them, sorted.
pub(crate) fn list<T: Ord>(
    dir: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(T, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        if let Some(key) = parse(&entry.file_name().to_string_lossy()) {
            found.push((key, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Renames the damaged `file` to `<name>.damaged` (or `<name>.damaged.<n>` if that exists),
/// durably, and returns the new name. The bytes stay for inspection; nothing reads them again.
pub(crate) fn move_aside(file: &Path) -> Result<PathBuf, StoreError> {
    let aside = free_aside_name(file, DAMAGED_SUFFIX);
    fs::rename(file, &aside).map_err(StoreError::io(file))?;
    sync_parent(file)?;
    tracing::warn!(file = %file.display(), to = %aside.display(), "moved a damaged file aside");
    Ok(aside)
}

/// Keeps a copy of `file` aside (as [`move_aside`] names it) and replaces `file` durably with
/// its first `keep` bytes: after a crash at any point, `file` is whole or cut, and the copy
/// exists before the cut.
pub(crate) fn cut_keeping_copy(
    file: &Path,
    bytes: &[u8],
    keep: u64,
) -> Result<PathBuf, StoreError> {
    let aside = free_aside_name(file, DAMAGED_SUFFIX);
    quiver_durable::write_durably(&aside, bytes).map_err(StoreError::io(&aside))?;
    quiver_durable::write_durably(file, &bytes[..keep as usize]).map_err(StoreError::io(file))?;
    tracing::warn!(
        file = %file.display(),
        kept_bytes = keep,
        copy = %aside.display(),
        "cut a damaged file before its damage, keeping a copy"
    );
    Ok(aside)
}

/// Renames `file` to `<name><suffix>` (or `<name><suffix>.<n>`, the first free), durably.
pub(crate) fn rename_aside(file: &Path, suffix: &str) -> Result<PathBuf, StoreError> {
    let aside = free_aside_name(file, suffix);
    fs::rename(file, &aside).map_err(StoreError::io(file))?;
    sync_parent(file)?;
    Ok(aside)
}

fn free_aside_name(file: &Path, suffix: &str) -> PathBuf {
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut aside = file.with_file_name(format!("{name}{suffix}"));
    let mut n = 1;
    while aside.exists() {
        aside = file.with_file_name(format!("{name}{suffix}.{n}"));
        n += 1;
    }
    aside
}

/// Makes the creations, renames and deletions in `file`'s directory durable.
pub(crate) fn sync_parent(file: &Path) -> Result<(), StoreError> {
    let dir = quiver_durable::parent_dir(file);
    quiver_durable::sync_dir(&dir).map_err(StoreError::io(&dir))
}

/// Removes `file` durably (its directory is synced).
pub(crate) fn remove(file: &Path) -> Result<(), StoreError> {
    fs::remove_file(file).map_err(StoreError::io(file))?;
    sync_parent(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_directory_is_refused_until_its_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(StoreError::Locked { .. })));
        drop(held);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn damaged_files_are_moved_aside_under_free_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vote");
        fs::write(&file, b"one").unwrap();
        assert_eq!(move_aside(&file).unwrap(), dir.path().join("vote.damaged"));
        fs::write(&file, b"two").unwrap();
        assert_eq!(
            move_aside(&file).unwrap(),
            dir.path().join("vote.damaged.1")
        );
        assert!(!file.exists());
        assert_eq!(fs::read(dir.path().join("vote.damaged")).unwrap(), b"one");
    }

    #[test]
    fn temporaries_left_by_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, _) = quiver_durable::create_temp_file(dir.path(), "vote").unwrap();
        fs::write(dir.path().join("vote"), b"v").unwrap();
        remove_temporaries(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert!(dir.path().join("vote").exists());
    }
}
