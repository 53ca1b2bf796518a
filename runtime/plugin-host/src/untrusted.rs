//! Text that a plugin controls — its name and version, parameter docs, error messages, panic
//! texts, log lines, column names — made safe before the host prints, logs, stores or builds a
//! path from it.
//!
//! Two rules, applied where such text enters the host:
//!
//! - **Shown, not executed.** [`escape`] replaces every control character (C0, DEL, C1) and
//!   every Unicode bidirectional-override character with a visible escape (`\x1b`, `\r`,
//!   `\u{202e}`), so a plugin cannot clear the terminal, set its title, move the cursor, ring
//!   the bell, overwrite a line with `\r`, or reorder what is shown. The text is also cut to a
//!   size ([`MESSAGE_BYTES`] for messages, [`NAME_BYTES`] for names), with a note of how much
//!   was cut.
//! - **Never a path.** [`file_name`] reduces text to one safe file-name component (letters,
//!   digits, `-`, `_`, `.`; no leading dot; at most [`FILE_NAME_BYTES`]), so a name such as
//!   `x/../../elsewhere` cannot leave the directory the file belongs to.
//!
//! Pure functions; the fuzz target `untrusted_text` checks both rules on arbitrary input.

/// Most bytes of a plugin's message (error, panic text, log line) that the host keeps.
pub const MESSAGE_BYTES: usize = 4096;

/// Most bytes of a plugin-given name (plugin name, version, column name) that the host shows.
pub const NAME_BYTES: usize = 256;

/// Most bytes of a file-name component made from plugin text.
pub const FILE_NAME_BYTES: usize = 64;

/// Whether `c` must not reach a terminal as is: control characters (C0, DEL, C1) and the
/// characters that override or isolate text direction.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` can be shown as is: no character [`is_unsafe_char`] refuses.
pub fn is_clean(text: &str) -> bool {
    !text.chars().any(is_unsafe_char)
}

/// `text` with every unsafe character shown as an escape (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{202e}`), cut after `max_bytes` bytes of the original text (at a character boundary)
/// with `… [N more bytes]` appended. An escape is at most 4 bytes per original byte, so the
/// result is at most `4 × max_bytes + 40` bytes.
pub fn escape(text: &str, max_bytes: usize) -> String {
    let mut cut = text.len().min(max_bytes);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let kept = &text[..cut];
    if is_clean(kept) && cut == text.len() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(kept.len() + 16);
    for c in kept.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    if cut < text.len() {
        out.push_str(&format!("… [{} more bytes]", text.len() - cut));
    }
    out
}

/// [`escape`] with the limit for messages ([`MESSAGE_BYTES`]).
pub fn message(text: &str) -> String {
    escape(text, MESSAGE_BYTES)
}

/// [`escape`] with the limit for names ([`NAME_BYTES`]).
pub fn name(text: &str) -> String {
    escape(text, NAME_BYTES)
}

/// One file-name component made from `text`: ASCII letters, digits, `-`, `_` and `.` are
/// kept, every other character becomes `_`; a leading `.` becomes `_` (so neither `.`, `..`
/// nor a hidden name can come out); at most [`FILE_NAME_BYTES`] bytes; never empty.
pub fn file_name(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(FILE_NAME_BYTES)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_executed() {
        let hostile =
            "clear\u{1b}[2J title\u{1b}]0;owned\u{7} back\rforged$ \u{202e}txt.exe\u{9b}31m";
        let shown = escape(hostile, 1000);
        assert!(is_clean(&shown), "{shown:?}");
        assert_eq!(
            shown,
            "clear\\x1b[2J title\\x1b]0;owned\\x07 back\\rforged$ \\u{202e}txt.exe\\x9b31m"
        );
        assert_eq!(escape("plain text, ünïcode", 1000), "plain text, ünïcode");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_says_how_much() {
        let text = "é".repeat(10); // 20 bytes
        assert_eq!(escape(&text, 5), "éé… [16 more bytes]");
        let huge = "A".repeat(10 << 20);
        let shown = message(&huge);
        assert!(shown.len() < MESSAGE_BYTES + 64, "{}", shown.len());
        assert!(shown.ends_with(&format!("… [{} more bytes]", (10 << 20) - MESSAGE_BYTES)));
    }

    #[test]
    fn file_names_stay_in_their_directory() {
        for (text, want) in [
            ("x/../../somewhere/else", "x_.._.._somewhere_else"),
            ("..", "_."),
            (".hidden", "_hidden"),
            ("", "_"),
            ("C:\\win\\path", "C__win_path"),
            ("nul\0byte", "nul_byte"),
            ("filter", "filter"),
            ("naïve-1.0_x", "na_ve-1.0_x"),
        ] {
            assert_eq!(file_name(text), want, "{text:?}");
        }
        assert_eq!(file_name(&"a".repeat(500)).len(), FILE_NAME_BYTES);
    }
}
