//! Following an append-only file as it grows: the streaming file source.
//!
//! [`Tail`] hands out complete lines only (a line still being written stays until its newline
//! arrives) and says where it is as a [`Position`]: the file's identity (device and inode), the
//! byte offset after the last line handed out, and that line's number. A checkpoint stores the
//! position; a restarted run opens the file at it.
//!
//! Rotation by renaming (`events.jsonl` → `events.jsonl.1`, then a new `events.jsonl`) is
//! followed: the renamed file is read to its end, then the new file from its start. A restart
//! whose position is in a file that was rotated away meanwhile finds it in the same directory
//! by its inode. A file that shrinks (truncated in place) is read again from its start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::io_err;
use quiver_data::io::IoError;

/// Where a [`Tail`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Device of the file being read.
    pub dev: u64,
    /// Inode of the file being read.
    pub ino: u64,
    /// Bytes of it handed out (whole lines).
    pub offset: u64,
    /// Lines of it handed out.
    pub lines: u64,
}

/// Complete lines read from the file.
#[derive(Debug, Default)]
pub struct Lines {
    /// The bytes of the lines, each ending in `\n`.
    pub bytes: Vec<u8>,
    /// How many lines.
    pub count: usize,
    /// The 1-based line number of the first one in its file.
    pub first_line: u64,
    /// The file they come from.
    pub path: PathBuf,
}

impl Lines {
    /// Splits off and returns the first `n` lines (all of them if there are fewer).
    pub fn take_front(&mut self, n: usize) -> Lines {
        if n >= self.count {
            return std::mem::take(self);
        }
        let end = self
            .bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(n - 1)
            .map_or(0, |(i, _)| i + 1);
        let rest = self.bytes.split_off(end);
        let front = Lines {
            bytes: std::mem::replace(&mut self.bytes, rest),
            count: n,
            first_line: self.first_line,
            path: self.path.clone(),
        };
        self.count -= n;
        self.first_line += n as u64;
        front
    }
}

/// An append-only file being followed.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    /// The file being read (after a rotation, the renamed one until its end).
    file: File,
    /// Where `file` is known as, for messages.
    file_path: PathBuf,
    pos: Position,
    /// Bytes read past `pos.offset`: the start of a line whose end has not arrived.
    partial: Vec<u8>,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The file in `dir` with this device and inode, if any.
fn find_by_identity(dir: &Path, id: (u64, u64)) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.metadata().is_ok_and(|m| identity(&m) == id))
        .map(|e| e.path())
}

/// How much is read from the file per call at most.
const READ_CHUNK: usize = 4 << 20;

impl Tail {
    /// Opens `path` at `from` (a position from a checkpoint), or at its start. The file must
    /// exist.
    pub fn open(path: &Path, from: Option<Position>) -> Result<Tail, IoError> {
        let Some(pos) = from else {
            let file = File::open(path).map_err(io_err(path, "cannot open"))?;
            let meta = file.metadata().map_err(io_err(path, "cannot stat"))?;
            let (dev, ino) = identity(&meta);
            return Ok(Tail {
                path: path.into(),
                file,
                file_path: path.into(),
                pos: Position {
                    dev,
                    ino,
                    offset: 0,
                    lines: 0,
                },
                partial: Vec::new(),
            });
        };
        let current = std::fs::metadata(path).ok().map(|m| identity(&m));
        let file_path = if current == Some((pos.dev, pos.ino)) {
            path.to_path_buf()
        } else {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            find_by_identity(dir, (pos.dev, pos.ino)).ok_or_else(|| IoError::Io {
                path: path.into(),
                action: "cannot resume",
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "the checkpoint was reading the file with inode {} at byte {}, and no file in {} has that inode any more (rotated away and deleted?), so the rows after that point cannot be read exactly once; start from the beginning instead, or restore the file",
                        pos.ino,
                        pos.offset,
                        dir.display()
                    ),
                ),
            })?
        };
        let mut file = File::open(&file_path).map_err(io_err(&file_path, "cannot open"))?;
        file.seek(SeekFrom::Start(pos.offset))
            .map_err(io_err(&file_path, "cannot seek"))?;
        Ok(Tail {
            path: path.into(),
            file,
            file_path,
            pos,
            partial: Vec::new(),
        })
    }

    /// Where the lines handed out so far end.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Bytes not handed out yet: the rest of the file being read plus, after a rotation, the
    /// new file (an estimate of the lag).
    pub fn lag_bytes(&self) -> u64 {
        let here = self.file.metadata().map_or(0, |m| m.len());
        let mut lag = here.saturating_sub(self.pos.offset);
        if let Ok(m) = std::fs::metadata(&self.path) {
            if identity(&m) != (self.pos.dev, self.pos.ino) {
                lag += m.len();
            }
        }
        lag
    }

    /// Up to `max_lines` complete lines that arrived since the last call; none if nothing new
    /// is complete yet. Never blocks.
    pub fn poll(&mut self, max_lines: usize) -> Result<Lines, IoError> {
        if let Some(lines) = self.take_lines(max_lines) {
            return Ok(lines);
        }
        // Read on until a line is complete or the file ends.
        let n = (&mut self.file)
            .take(READ_CHUNK as u64)
            .read_to_end(&mut self.partial)
            .map_err(io_err(&self.file_path, "cannot read"))?;
        if n > 0 {
            return self.poll(max_lines);
        }
        // At the end of the file being read: has it been rotated or truncated?
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Ok(Lines::default());
        };
        let here = self
            .file
            .metadata()
            .map_err(io_err(&self.file_path, "cannot stat"))?;
        if identity(&meta) != (self.pos.dev, self.pos.ino) {
            // Rotated: a last line without a newline is complete now.
            // (Its offset then counts one byte past the file's end, which reads as its end.)
            if !self.partial.is_empty() {
                self.partial.push(b'\n');
                return Ok(self.take_lines(max_lines).unwrap_or_default());
            }
            let file = File::open(&self.path).map_err(io_err(&self.path, "cannot open"))?;
            let (dev, ino) = identity(&file.metadata().map_err(io_err(&self.path, "cannot stat"))?);
            tracing::info!(file = %self.path.display(), "following the new file after a rotation");
            self.file = file;
            self.file_path = self.path.clone();
            self.pos = Position {
                dev,
                ino,
                offset: 0,
                lines: 0,
            };
            return self.poll(max_lines);
        }
        if here.len() < self.pos.offset + self.partial.len() as u64 {
            tracing::warn!(file = %self.path.display(), "the file shrank (truncated in place); reading it again from its start");
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(io_err(&self.file_path, "cannot seek"))?;
            self.pos.offset = 0;
            self.pos.lines = 0;
            self.partial.clear();
            return self.poll(max_lines);
        }
        Ok(Lines::default())
    }

    /// For a file known to be complete: its last line even without a newline (after
    /// [`Tail::poll`] found nothing more), else `None`.
    pub fn last_line(&mut self) -> Option<Lines> {
        if self.partial.is_empty() {
            return None;
        }
        self.partial.push(b'\n');
        let lines = self.take_lines(1);
        // The newline was not in the file: the offset stays at the file's end.
        self.pos.offset -= 1;
        lines
    }

    /// Moves up to `max` complete lines out of `partial`.
    fn take_lines(&mut self, max: usize) -> Option<Lines> {
        let mut end = 0;
        let mut count = 0;
        for (i, &b) in self.partial.iter().enumerate() {
            if b == b'\n' {
                end = i + 1;
                count += 1;
                if count == max {
                    break;
                }
            }
        }
        if count == 0 {
            return None;
        }
        let rest = self.partial.split_off(end);
        let bytes = std::mem::replace(&mut self.partial, rest);
        let first_line = self.pos.lines + 1;
        self.pos.offset += end as u64;
        self.pos.lines += count as u64;
        Some(Lines {
            bytes,
            count,
            first_line,
            path: self.file_path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Splitting lines keeps every byte once, in order, with the right line numbers.
    #[test]
    fn lines_split_at_line_boundaries() {
        let text: String = (0..10).map(|i| format!("line {i}\n")).collect();
        let mut all = Lines {
            bytes: text.clone().into_bytes(),
            count: 10,
            first_line: 5,
            path: "f".into(),
        };
        let mut parts = Vec::new();
        for n in [3, 1, 4, 7] {
            parts.push(all.take_front(n));
        }
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.clone()).collect();
        assert_eq!(String::from_utf8(joined).unwrap(), text);
        let shape: Vec<(usize, u64)> = parts.iter().map(|p| (p.count, p.first_line)).collect();
        assert_eq!(shape, vec![(3, 5), (1, 8), (4, 9), (2, 13)]);
        assert_eq!(all.count, 0);
        assert!(String::from_utf8(parts[1].bytes.clone()).unwrap() == "line 3\n");
    }

    fn drain(t: &mut Tail, max: usize) -> String {
        let mut out = String::new();
        loop {
            let l = t.poll(max).unwrap();
            if l.count == 0 {
                return out;
            }
            assert!(l.count <= max);
            assert_eq!(l.bytes.iter().filter(|&&b| b == b'\n').count(), l.count);
            out.push_str(std::str::from_utf8(&l.bytes).unwrap());
        }
    }

    #[test]
    fn hands_out_complete_lines_only_and_resumes_at_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        append(&path, "a\nb\nc");
        let mut t = Tail::open(&path, None).unwrap();
        assert_eq!(drain(&mut t, 1), "a\nb\n");
        assert_eq!(t.position().offset, 4);
        append(&path, "c\nd\n");
        let got = t.poll(10).unwrap();
        assert_eq!((got.first_line, got.count), (3, 2));
        assert_eq!(got.bytes, b"cc\nd\n");
        let pos = t.position();
        assert_eq!((pos.offset, pos.lines), (9, 4));

        append(&path, "e\n");
        let mut again = Tail::open(&path, Some(pos)).unwrap();
        let got = again.poll(10).unwrap();
        assert_eq!(
            (got.first_line, got.bytes.as_slice()),
            (5, b"e\n".as_slice())
        );
    }

    #[test]
    fn follows_a_rotation_while_running_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        append(&path, "1\n2\n");
        let mut t = Tail::open(&path, None).unwrap();
        assert_eq!(t.poll(1).unwrap().bytes, b"1\n");
        let mid = t.position();
        append(&path, "3");
        std::fs::rename(&path, dir.path().join("in.jsonl.1")).unwrap();
        append(&path, "4\n");
        // The rest of the old file (its unterminated last line included), then the new one.
        assert_eq!(drain(&mut t, 100), "2\n3\n4\n");

        // A restart from before the rotation finds the renamed file by its inode.
        let mut r = Tail::open(&path, Some(mid)).unwrap();
        assert_eq!(drain(&mut r, 100), "2\n3\n4\n");

        std::fs::remove_file(dir.path().join("in.jsonl.1")).unwrap();
        let err = Tail::open(&path, Some(mid)).unwrap_err().to_string();
        assert!(
            err.contains("cannot resume") && err.contains("inode"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_file_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        append(&path, "long line\n");
        let mut t = Tail::open(&path, None).unwrap();
        assert_eq!(drain(&mut t, 10), "long line\n");
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(drain(&mut t, 10), "x\n");
    }
}
