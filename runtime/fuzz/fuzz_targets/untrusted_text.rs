//! Fuzzes what the host does with text a plugin controls (`quiver::untrusted`): the file names
//! made from plugin names must stay inside their directory, and the shown form of names, error
//! texts and log lines must never carry a character a terminal acts on; see
//! `gen/untrusted_text.rs` for every check.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../gen/untrusted_text.rs"]
mod gen;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limit, the rest is the text (lossily, as the host reads bytes).
    let (max, rest) = match data.split_first() {
        Some((m, rest)) => (usize::from(*m) * 4, rest),
        None => (16, data),
    };
    let text = String::from_utf8_lossy(rest);
    gen::check(&text, max);
    gen::check(&text, quiver::untrusted::MESSAGE_BYTES);
});
