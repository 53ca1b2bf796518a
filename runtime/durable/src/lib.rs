//! Durable files: the few steps that make a write survive a crash, in one place.
//!
//! A file becomes visible under its final name only by a rename from a temporary name in the
//! same directory, after its bytes are on disk; the rename itself is on disk once the directory
//! is synced. Every writer of Quiver — sinks, the checkpoint store, the streaming committer, the
//! ingest log — uses these helpers, and says in a comment where its durability point is.
//!
//! Temporary names are `.<name>.quiver-<tag>-<pid>-<16 hex digits>`: hidden (so readers of a
//! directory skip them), next to the final name (so the rename is atomic), and naming the
//! process that made them (so a later run can remove those of processes that are gone).
//!
//! Logs that append many small writes use [`records`]: framed, checksummed records scanned back
//! with torn-tail detection.
//!
//! Uses the standard library and `crc32fast` only; no other Quiver crate.

pub mod records;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory `path` is in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<pid>-<16 hex digits>`: hard to guess, and unique within the process; creating with
/// `create_new` guards against collisions anyway.
fn unique_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{}-{:016x}", std::process::id(), hasher.finish())
}

/// A new temporary name `.<name>.quiver-<tag>-<pid>-<hex>` in `parent`.
pub fn temp_sibling(parent: &Path, name: &str, tag: &str) -> PathBuf {
    parent.join(format!(".{name}.quiver-{tag}-{}", unique_suffix()))
}

/// Tries up to 16 fresh temporary names for `name` in `parent` with `create`, which must fail
/// with `AlreadyExists` when the name is taken.
fn create_fresh<T>(
    parent: &Path,
    name: &str,
    create: impl Fn(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T)> {
    let mut last = None;
    for _ in 0..16 {
        let path = temp_sibling(parent, name, "tmp");
        match create(&path) {
            Ok(made) => return Ok((path, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Creates a new temporary file for `name` in `parent` (never an existing file or link).
pub fn create_temp_file(parent: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    create_fresh(parent, name, |p| {
        OpenOptions::new().write(true).create_new(true).open(p)
    })
}

/// Creates a new temporary directory for `name` in `parent`.
pub fn create_temp_dir(parent: &Path, name: &str) -> io::Result<PathBuf> {
    create_fresh(parent, name, |p| fs::create_dir(p)).map(|(path, ())| path)
}

/// Makes the creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that after a crash it holds either its old contents or all of
/// `bytes`: a temporary file next to it, `fdatasync`, rename over `path`, fsync of the
/// directory. The directory fsync is the durability point: once this returns, the new
/// contents survive a crash. The directory is created if needed.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let (tmp, mut file) = create_temp_file(&dir, &name)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_data())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_siblings_naming_the_process() {
        let name = temp_sibling(Path::new("out"), "data.parquet", "tmp");
        let file = name.file_name().unwrap().to_string_lossy().into_owned();
        let prefix = format!(".data.parquet.quiver-tmp-{}-", std::process::id());
        assert!(file.starts_with(&prefix), "{file}");
        assert_eq!(file.len(), prefix.len() + 16);
        assert_eq!(name.parent(), Some(Path::new("out")));
        assert_ne!(name, temp_sibling(Path::new("out"), "data.parquet", "tmp"));
    }

    #[test]
    fn a_durable_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.bin");
        write_durably(&path, b"first").unwrap();
        write_durably(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<String> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.bin"]);
    }

    #[test]
    fn temporary_files_and_directories_are_created_new() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create_temp_file(dir.path(), "x").unwrap();
        let b = create_temp_dir(dir.path(), "x").unwrap();
        assert_ne!(a, b);
        assert!(a.is_file() && b.is_dir());
    }
}
