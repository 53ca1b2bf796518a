//! Cluster mode with real `quiver node` processes on 127.0.0.1: a leader is elected, a leader
//! killed with SIGKILL is replaced, the old leader comes back as a follower and catches up to
//! the same applied state, and a follower that missed entries cannot win an election.
//!
//! Every wait has a deadline; the oracle is what the test itself was acknowledged.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{quiver, run};

/// Election timeouts of several hundred ms hold on two busy cores.
const ELECTION_MS: &str = "500";

/// A running `quiver node`; what it writes on stderr goes to `<dir>.log` (kept across
/// restarts).
pub(crate) struct NodeProc {
    pub(crate) id: u64,
    pub(crate) dir: PathBuf,
    /// Its peer address (where it listens, or what it advertises).
    pub(crate) addr: String,
    /// Its HTTP ingest address.
    pub(crate) api: String,
    /// Where it listens (kept for a restart).
    listen: String,
    /// Flags it was started with beyond the usual ones, kept for a restart.
    extra: Vec<String>,
    child: Child,
}

impl NodeProc {
    /// Starts node `id` on `dir`, listening on `listen`, joining through `join`; returns once
    /// it says where it listens.
    pub(crate) fn start(
        id: u64,
        dir: &Path,
        listen: &str,
        join: Option<&str>,
        extra: &[String],
    ) -> NodeProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("open the node's log");
        let mut c = quiver();
        c.args(["node", "--id", &id.to_string(), "--listen", listen])
            .arg("--data-dir")
            .arg(dir)
            .args(["--election-ms", ELECTION_MS])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if let Some(j) = join {
            c.args(["--join", j]);
        }
        let mut child = c.spawn().expect("start quiver node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..2 {
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
            }
            for _ in lines {}
        });
        let mut said = (0..2).map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "node {id} did not say where it listens within 60 s; its log: {}",
                        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
                    )
                })
        });
        let first = said.next().unwrap();
        let addr = first
            .rsplit(' ')
            .next()
            .expect("node N listening on ADDR")
            .to_string();
        let second = said.next().unwrap();
        let api = second
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("node N ingest: http://ADDR/ingest/<job>")
            .to_string();
        // Port 0 took a free port, which the node printed (it advertises no other address then).
        let listen = if listen.ends_with(":0") {
            addr.clone()
        } else {
            listen.to_string()
        };
        NodeProc {
            id,
            dir: dir.to_path_buf(),
            addr,
            api,
            listen,
            extra: extra.to_vec(),
            child,
        }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig).expect("signal the node");
    }

    /// Starts it again on its data directory and addresses, after a kill.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let mut extra = self.extra.clone();
        if !extra.iter().any(|a| a == "--api") {
            extra.extend(["--api".to_string(), self.api.clone()]);
        }
        let listen = self.listen.clone();
        let again = NodeProc::start(self.id, &self.dir.clone(), &listen, None, &extra);
        *self = again;
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // A stopped node must be continued, or the kill waits for ever.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::CONT,
        );
        self.kill();
    }
}

/// The node at `addr`'s own view (`quiver cluster status --local --json`); `None` if it does
/// not answer.
pub(crate) fn status(addr: &str) -> Option<Value> {
    let mut c = quiver();
    c.args([
        "cluster",
        "status",
        "--local",
        "--json",
        "--timeout-ms",
        "1000",
        "--addr",
        addr,
    ]);
    let (ok, out, _) = run(c);
    ok.then(|| serde_json::from_str(&out).expect("status is JSON"))
}

/// Waits until `check` holds for the status of one of `addrs`, up to `within`.
pub(crate) fn wait_for(
    what: &str,
    addrs: &[&str],
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    for round in 0.. {
        for a in addrs {
            if let Some(s) = status(a) {
                if check(&s) {
                    return s;
                }
                last = Some(s);
            }
        }
        assert!(
            Instant::now() < deadline && round < 10_000,
            "{what}: not within {within:?}; last status: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!()
}

pub(crate) fn leader(s: &Value) -> Option<u64> {
    (s["role"] == "leader").then(|| s["id"].as_u64().unwrap())
}

pub(crate) fn voters(s: &Value) -> usize {
    s["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count())
}

/// Member `id` in a status, if it is one.
fn member(s: &Value, id: u64) -> Option<&Value> {
    s["members"].as_array()?.iter().find(|m| m["id"] == id)
}

/// Whether member `id` in a status is a voter.
fn votes(s: &Value, id: u64) -> bool {
    member(s, id).is_some_and(|m| m["voter"] == true)
}

fn jobs(s: &Value) -> BTreeSet<String> {
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect()
}

/// Submits job `name` through `addr`, retrying as a client would while an election is under
/// way (for up to 10 s); whether the cluster acknowledged it. A retry finding the job already
/// there means an earlier attempt was committed without its answer arriving.
fn submit(dir: &Path, addr: &str, name: &str) -> bool {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        "[source]\npaths = [\"in.jsonl\"]\n[[plugin]]\nname = \"scale\"\n[sink]\npath = \"out\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0..100 {
        let mut c = quiver();
        c.args(["cluster", "submit", "--addr", addr, "--timeout-ms", "5000"])
            .arg(&file);
        let (ok, _, err) = run(c);
        if ok || (attempt > 0 && err.contains("JobExists")) {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!("{name} not acknowledged: {err}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Starts a cluster of three nodes, each with the flags `extra`, and waits until node 1 has
/// three voters.
pub(crate) fn three_nodes(dir: &Path, extra: &[String]) -> Vec<NodeProc> {
    let n1 = NodeProc::start(1, &dir.join("n1"), "127.0.0.1:0", None, extra);
    wait_for("node 1 leads", &[&n1.addr], Duration::from_secs(30), |s| {
        leader(s) == Some(1)
    });
    let n2 = NodeProc::start(2, &dir.join("n2"), "127.0.0.1:0", Some(&n1.addr), extra);
    let n3 = NodeProc::start(3, &dir.join("n3"), "127.0.0.1:0", Some(&n1.addr), extra);
    wait_for("three voters", &[&n1.addr], Duration::from_secs(30), |s| {
        voters(s) == 3
    });
    vec![n1, n2, n3]
}

#[test]
fn a_killed_leader_is_replaced_and_comes_back_as_a_follower_with_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &[]);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let mut acknowledged = BTreeSet::new();
    for i in 0..5 {
        // Through a follower: the write is forwarded to the leader.
        let name = format!("before-{i}");
        if submit(dir.path(), &addrs[1], &name) {
            acknowledged.insert(name);
        }
    }
    assert_eq!(
        acknowledged.len(),
        5,
        "every write acknowledged while all are up"
    );

    let old = nodes
        .iter()
        .position(|n| status(&n.addr).is_some_and(|s| leader(&s) == Some(n.id)))
        .expect("one node leads");
    let old_id = nodes[old].id;
    nodes[old].kill();
    let rest: Vec<&str> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, a)| a.as_str())
        .collect();
    let new = wait_for("a new leader", &rest, Duration::from_secs(20), |s| {
        leader(s).is_some_and(|l| l != old_id)
    });
    let new_term = new["term"].as_u64().unwrap();
    for i in 0..5 {
        let name = format!("after-{i}");
        if submit(dir.path(), rest[i % 2], &name) {
            acknowledged.insert(name);
        }
    }
    assert_eq!(acknowledged.len(), 10, "the new leader takes writes");

    nodes[old].restart();
    let back = wait_for(
        "the old leader back as a follower, caught up",
        &[&nodes[old].addr],
        Duration::from_secs(30),
        |s| s["role"] == "follower" && jobs(s) == acknowledged,
    );
    assert!(back["term"].as_u64().unwrap() >= new_term);

    // Every node ends with the same applied index and state, and there is one leader.
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    for s in identical_replicas(&addrs) {
        assert_eq!(jobs(&s), acknowledged, "node {}", s["id"]);
    }
}

/// Waits (up to 30 s) until the nodes at `addrs` have applied the same entries to the same
/// state, with one leader; returns their statuses.
pub(crate) fn identical_replicas(addrs: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all: Vec<Value> = addrs.iter().filter_map(|a| status(a)).collect();
        let leaders: BTreeSet<u64> = all.iter().filter_map(leader).collect();
        let states: BTreeSet<(u64, String)> = all
            .iter()
            .map(|s| {
                (
                    s["applied_index"].as_u64().unwrap_or(0),
                    s["state_checksum"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if all.len() == addrs.len() && leaders.len() == 1 && states.len() == 1 {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "replicas differ: leaders {leaders:?}, applied states {states:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_follower_that_missed_entries_does_not_win_the_election() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &[]);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // Whoever leads now (an election may have moved it on a busy machine), one follower is
    // paused and misses what follows, the other one keeps up.
    let lead = nodes
        .iter()
        .position(|n| status(&n.addr).is_some_and(|s| leader(&s) == Some(n.id)))
        .expect("one node leads");
    let (behind, up) = match lead {
        0 => (2, 1),
        1 => (2, 0),
        _ => (1, 0),
    };
    nodes[behind].signal(rustix::process::Signal::STOP);
    for i in 0..5 {
        assert!(
            submit(dir.path(), &addrs[lead], &format!("missed-{i}")),
            "the leader and one follower are a majority"
        );
    }
    let up_to = status(&addrs[up]).expect("the follower that kept up answers")["last_log_index"]
        .as_u64()
        .unwrap();
    // The leader dies; the paused follower resumes with an older log. Only the follower whose
    // log holds every committed entry can collect a majority (its own vote and the other's).
    nodes[lead].kill();
    nodes[behind].signal(rustix::process::Signal::CONT);
    let s = wait_for(
        "a new leader",
        &[&addrs[up], &addrs[behind]],
        Duration::from_secs(20),
        |s| leader(s).is_some(),
    );
    assert_eq!(
        leader(&s),
        Some(nodes[up].id),
        "the up-to-date follower wins: {s:#?}"
    );
    assert!(s["last_log_index"].as_u64().unwrap() >= up_to);
    let caught_up = wait_for(
        "the paused follower catches up from the new leader",
        &[&addrs[behind]],
        Duration::from_secs(20),
        |s| jobs(s).len() == 5,
    );
    assert_eq!(caught_up["leader"].as_u64(), Some(nodes[up].id));
}

/// Waits (up to 20 s) until the nodes at `a` and `b` have applied the same entries to the same
/// state.
fn same_state(a: &str, b: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (x, y) = (status(a), status(b));
        if let (Some(x), Some(y)) = (&x, &y) {
            if x["applied_index"] == y["applied_index"]
                && x["state_checksum"] == y["state_checksum"]
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "replicas differ: {x:#?} {y:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The index of the node that leads, by its own word, waiting up to 30 s for an election.
pub(crate) fn leading(nodes: &[NodeProc]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = nodes
            .iter()
            .position(|n| status(&n.addr).is_some_and(|s| leader(&s) == Some(n.id)))
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_returning_follower_catches_up_from_the_log_or_from_a_snapshot_once_the_log_is_purged() {
    // (snapshot every N entries, writes while the follower is down, caught up by snapshot?)
    for (every, writes, by_snapshot) in [(1_000_000u64, 60, false), (20, 120, true)] {
        let dir = tempfile::tempdir().unwrap();
        let extra = ["--snapshot-every".to_string(), every.to_string()];
        let mut nodes = three_nodes(dir.path(), &extra);
        let lead = leading(&nodes);
        let down = (lead + 1) % 3;
        let had = status(&nodes[down].addr).expect("the follower answers")["last_log_index"]
            .as_u64()
            .unwrap();
        nodes[down].kill();
        let mut acknowledged = BTreeSet::new();
        for i in 0..writes {
            let name = format!("while-down-{i}");
            if submit(dir.path(), &nodes[lead].addr, &name) {
                acknowledged.insert(name);
            }
        }
        assert_eq!(
            acknowledged.len(),
            writes,
            "a majority is up: every write is acknowledged"
        );
        let leader_view = status(&nodes[lead].addr).expect("the leader answers");
        let purged = leader_view["purged_index"].as_u64().unwrap_or(0);
        if by_snapshot {
            assert!(
                purged > had,
                "the leader purged past the follower's last entry ({had}): {leader_view:#?}"
            );
        } else {
            assert_eq!(purged, 0, "nothing purged: {leader_view:#?}");
        }
        nodes[down].restart();
        let back = wait_for(
            "the follower catches up",
            &[&nodes[down].addr],
            Duration::from_secs(30),
            |s| jobs(s) == acknowledged,
        );
        let installed = back["snapshots_installed"].as_u64().unwrap();
        if by_snapshot {
            assert!(installed >= 1, "caught up by snapshot: {back:#?}");
        } else {
            assert_eq!(installed, 0, "caught up from the log alone: {back:#?}");
        }
        // And it holds the same state as the leader once both applied the same entries.
        same_state(&nodes[lead].addr, &nodes[down].addr);
    }
}

#[test]
fn a_follower_with_a_damaged_log_or_snapshot_refuses_it_naming_the_file_and_is_repaired_from_the_leader(
) {
    // (the damaged file's directory and extension, flags that make it exist, writes)
    for (sub, ext, extra, writes) in [
        ("log", "seg", vec![], 30),
        (
            "state",
            "snap",
            vec!["--snapshot-every".to_string(), "20".to_string()],
            60,
        ),
    ] {
        damaged_file_is_refused_and_repaired(sub, ext, &extra, writes);
    }
}

fn damaged_file_is_refused_and_repaired(sub: &str, ext: &str, extra: &[String], writes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), extra);
    let lead = leading(&nodes);
    let victim = (lead + 1) % 3;
    let mut acknowledged = BTreeSet::new();
    for i in 0..writes {
        let name = format!("job-{i}");
        if submit(dir.path(), &nodes[lead].addr, &name) {
            acknowledged.insert(name);
        }
    }
    assert_eq!(acknowledged.len(), writes);
    wait_for(
        "the follower holds every entry",
        &[&nodes[victim].addr],
        Duration::from_secs(20),
        |s| jobs(s) == acknowledged,
    );
    nodes[victim].kill();
    // Flip one byte a third of the way into the file: damage to data that was durable, not a
    // torn append.
    let damaged_dir = nodes[victim].dir.join("group-0").join(sub);
    let file = std::fs::read_dir(&damaged_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .unwrap_or_else(|| panic!("a .{ext} file in {}", damaged_dir.display()));
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    // Started as it is, the node refuses the file, naming it.
    let mut c = quiver();
    c.args([
        "node",
        "--id",
        &nodes[victim].id.to_string(),
        "--listen",
        &nodes[victim].addr,
    ])
    .arg("--data-dir")
    .arg(&nodes[victim].dir);
    let (ok, _, err) = run(c);
    assert!(!ok, "a damaged {sub} file must not be served");
    assert!(
        err.contains(&file.display().to_string())
            || err.contains(&*file.file_name().unwrap().to_string_lossy()),
        "the error names the damaged file: {err}"
    );

    if sub == "log" {
        // With --repair it moves the damage aside and gets the rest from the leader.
        let mut flags = extra.to_vec();
        flags.push("--repair".to_string());
        nodes[victim].extra = flags;
        nodes[victim].restart();
        let back = wait_for(
            "the repaired follower catches up",
            &[&nodes[victim].addr],
            Duration::from_secs(30),
            |s| jobs(s) == acknowledged,
        );
        assert_eq!(back["role"], "follower");
        let moved: Vec<_> = std::fs::read_dir(&damaged_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("damaged"))
            .collect();
        assert!(
            !moved.is_empty(),
            "the damaged file is kept aside for inspection"
        );
        same_state(&nodes[lead].addr, &nodes[victim].addr);
        return;
    }
    // The snapshot held the state the purged log no longer has: nothing on this node can
    // rebuild it, and --repair alone says so rather than starting with a hole.
    let mut c = quiver();
    c.args(["node", "--repair", "--id", &nodes[victim].id.to_string()])
        .args(["--listen", &nodes[victim].addr])
        .arg("--data-dir")
        .arg(&nodes[victim].dir);
    let (ok, _, err) = run(c);
    assert!(!ok, "a node whose state is gone must not serve");
    assert!(err.contains("--repair --join"), "it says what to do: {err}");
    // What it says: with --join it leaves the cluster, sets its log aside and joins again
    // under its id, and the leader sends it its snapshot.
    let mut flags = extra.to_vec();
    flags.extend(["--repair", "--join", &nodes[lead].addr].map(String::from));
    nodes[victim].extra = flags;
    nodes[victim].restart();
    let back = wait_for(
        "the repaired follower catches up from a snapshot",
        &[&nodes[victim].addr],
        Duration::from_secs(30),
        |s| jobs(s) == acknowledged,
    );
    assert!(
        back["snapshots_installed"].as_u64().unwrap() >= 1,
        "{back:#?}"
    );
    wait_for(
        "three voters again, the repaired node among them",
        &[&nodes[lead].addr],
        Duration::from_secs(30),
        |s| voters(s) == 3 && votes(s, nodes[victim].id),
    );
    let set_aside: Vec<_> = std::fs::read_dir(nodes[victim].dir.join("group-0").join("log"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("set-aside"))
        .collect();
    assert!(!set_aside.is_empty(), "the old log is kept aside");
    same_state(&nodes[lead].addr, &nodes[victim].addr);
    // It serves again: a new entry reaches it.
    assert!(submit(dir.path(), &nodes[lead].addr, "after-repair"));
    acknowledged.insert("after-repair".to_string());
    wait_for(
        "the repaired follower follows",
        &[&nodes[victim].addr],
        Duration::from_secs(20),
        |s| jobs(s) == acknowledged,
    );
}

#[test]
fn a_node_added_with_cluster_add_node_catches_up_votes_and_leaves_with_remove_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &[]);
    let mut acknowledged = BTreeSet::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        assert!(submit(dir.path(), &nodes[0].addr, &name));
        acknowledged.insert(name);
    }
    // `cluster add-node` runs the new node in the foreground, joined through a member.
    let mut c = quiver();
    c.args(["cluster", "add-node", "--id", "4", "--addr", &nodes[1].addr])
        .arg("--data-dir")
        .arg(dir.path().join("n4"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut added = c.spawn().expect("start quiver cluster add-node");
    let with_four = wait_for(
        "four voters, node 4 among them",
        &[&nodes[0].addr],
        Duration::from_secs(60),
        |s| voters(s) == 4 && votes(s, 4),
    );
    let fourth = member(&with_four, 4).unwrap()["peer"]
        .as_str()
        .unwrap()
        .to_string();
    // It holds what was written before it came, and what is written after.
    assert!(submit(dir.path(), &nodes[0].addr, "after"));
    acknowledged.insert("after".to_string());
    wait_for(
        "the new node holds every entry",
        &[&fourth],
        Duration::from_secs(30),
        |s| jobs(s) == acknowledged,
    );
    let mut c = quiver();
    c.args(["cluster", "remove-node", "4", "--addr", &nodes[2].addr]);
    let (ok, out, err) = run(c);
    assert!(ok, "{out}{err}");
    wait_for(
        "three voters again, node 4 gone",
        &[&nodes[0].addr],
        Duration::from_secs(30),
        |s| voters(s) == 3 && member(s, 4).is_none(),
    );
    let _ = added.kill();
    let _ = added.wait();
}
