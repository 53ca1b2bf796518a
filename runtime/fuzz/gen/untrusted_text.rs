//! Checks for plugin-controlled text reaching paths and the terminal (`quiver::untrusted`),
//! shared by the cargo-fuzz target `untrusted_text` and the property tests in
//! `tests/e2e/properties.rs`. A plugin's name becomes a file name under a directory of the run
//! (recordings, dead letters) and, like its error texts and log lines, is printed; for any text:
//!
//! - the file name made from it is one path component inside its directory: not empty, not
//!   `.` or `..`, not hidden, no separator, at most `FILE_NAME_BYTES` bytes of safe ASCII;
//! - the shown form has no character a terminal acts on, is no longer than the documented
//!   bound, is the text itself when that is clean and short, and says how much it cut.

#![allow(dead_code)]

use std::path::{Component, Path};

use quiver::untrusted::{self, FILE_NAME_BYTES};

/// Whether a terminal would act on `c` (the model: any Unicode control, and the direction
/// marks and overrides), written out here independently of the code under test.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069
        )
}

/// Runs every check on `text`, shown with a limit of `max` bytes. Panics on a violation.
pub fn check(text: &str, max: usize) {
    let name = untrusted::file_name(text);
    assert!(!name.is_empty(), "{text:?}: empty file name");
    assert!(
        name.len() <= FILE_NAME_BYTES,
        "{text:?} → {name:?}: too long"
    );
    assert!(
        !name.starts_with('.'),
        "{text:?} → {name:?}: hidden or dot name"
    );
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
        "{text:?} → {name:?}: unsafe byte"
    );
    let dir = Path::new("/run/dir");
    let joined = dir.join(format!("00-{name}-p0-b0"));
    assert_eq!(
        joined.parent(),
        Some(dir),
        "{text:?} → {joined:?} leaves its directory"
    );
    assert!(
        joined
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{text:?} → {joined:?}"
    );
    // The same holds for a name first shown (escaped), as the host names files after the
    // plugin's shown name.
    let shown_name = untrusted::name(text);
    assert_eq!(
        Path::new("/d")
            .join(untrusted::file_name(&shown_name))
            .parent(),
        Some(Path::new("/d"))
    );

    let shown = untrusted::escape(text, max);
    if let Some(c) = shown.chars().find(|&c| acts_on_terminal(c)) {
        panic!("{text:?} → {shown:?}: {c:?} reaches the terminal");
    }
    assert!(
        shown.len() <= 4 * max + 40,
        "{} bytes shown for a limit of {max}",
        shown.len()
    );
    let clean = !text.chars().any(acts_on_terminal);
    if clean && text.len() <= max {
        assert_eq!(shown, text, "clean short text must be shown as is");
    }
    if text.len() > max {
        let mut kept = max;
        while !text.is_char_boundary(kept) {
            kept -= 1;
        }
        let note = format!("… [{} more bytes]", text.len() - kept);
        assert!(
            shown.ends_with(&note),
            "{shown:?} does not end with {note:?}"
        );
    }
}
