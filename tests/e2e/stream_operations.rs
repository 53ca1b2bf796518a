//! Operating a streaming run through the real binary: the live status line on a terminal, and
//! stop signals.

use std::process::Command;

use crate::stream::{
    append_lines, assert_exactly_once, line, output_rows, pipeline, start, wait_for_rows,
};
use crate::support::*;

/// Runs the command given after its first argument on a new pseudo-terminal (so that its
/// stderr is a terminal), sends it SIGTERM once it has written the first argument twice (or
/// after a minute), and prints what it wrote; exits with its status.
const ON_A_TERMINAL: &str = r#"
import os, pty, select, signal, sys, time
wanted = sys.argv[1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out, stop_at, stopped = b"", time.time() + 60, False
while True:
    if not stopped and (out.count(wanted) >= 2 or time.time() >= stop_at):
        os.kill(pid, signal.SIGTERM)
        stopped = True
    ready, _, _ = select.select([fd], [], [], 0.05)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[test]
fn a_terminal_shows_a_status_line_with_rows_lag_and_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..3000).map(line).collect();
    std::fs::write(dir.path().join("in.jsonl"), text).unwrap();
    pipeline(dir.path());
    let out = quiver_under("python3", &["-c", ON_A_TERMINAL, " rows in ("])
        .current_dir(dir.path())
        .args(["run", "p.toml", "--stream"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    // The line is redrawn in place (`\r`) every second; the last one has seen every row
    // (read and checkpointed within a second).
    let lines: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains(" rows in ("))
        .collect();
    assert!(lines.len() >= 2, "{shown}");
    let last = lines.last().unwrap().trim();
    let number = |after: &str| -> f64 {
        let rest = &last[last.find(after).unwrap_or_else(|| panic!("{last}")) + after.len()..];
        let digits: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        digits.parse().unwrap_or_else(|_| panic!("{last}"))
    };
    assert!(last.starts_with("3000 rows in ("), "{last}");
    assert!(number("rows in (") > 0.0, "{last}");
    assert_eq!(number("), "), 3000.0, "{last}");
    assert_eq!(number("lag "), 0.0, "{last}");
    assert!(number("checkpoint ") >= 1.0, "{last}");
    assert!(last.ends_with("s ago"), "{last}");
    assert_eq!(output_rows(dir.path()).len(), 3000);
}

#[test]
fn a_second_signal_exits_at_once_and_the_next_run_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, line(0)).unwrap();
    pipeline(dir.path());
    const TOTAL: u64 = 12_000;
    let writer = append_lines(&input, TOTAL, 40, 4, line);
    let child = start(dir.path(), &[]);
    wait_for_rows(dir.path(), 1000);
    // Two different signals before the process can act on the first: the first asks for a
    // final checkpoint, the second ends the process at once. The process is stopped while both
    // are sent so that a busy machine cannot let the final checkpoint finish in between (that
    // race made this test fail once); on SIGCONT both are delivered before it runs again.
    let pid = child.id().to_string();
    let sent = Command::new("sh")
        .args([
            "-c",
            "kill -STOP $0; kill -INT $0; kill -TERM $0; kill -CONT $0",
            &pid,
        ])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().unwrap();
    // What was not committed is done again by the next run, and nothing twice.
    let rest = finish(start(dir.path(), &["--stop-at-end"]));
    assert!(
        rest.status.success(),
        "{}",
        String::from_utf8_lossy(&rest.stderr)
    );
    assert_exactly_once(output_rows(dir.path()), TOTAL);
}
