//! Cluster jobs through real `quiver node` processes on 127.0.0.1: clients send numbered
//! events over HTTP to any node's door, a keyed running count runs on whichever worker owns
//! each partition, and the shared sink must end up holding every acknowledged event exactly
//! once with the count a reference computes — while workers are killed with SIGKILL, leaders
//! are killed under load, a worker is paused past its timeout, and the leader is cut off from
//! the others by fault-injecting proxies.
//!
//! The oracle is the clients' own record: each client numbers its requests (producer id and
//! sequence number, retried until acknowledged, against other nodes when one fails), and each
//! of its keys belongs to it alone, so the running count of a key is the row's position among
//! that key's rows in the client's own order.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{
    identical_replicas, leader, leading, status, three_nodes, wait_for, NodeProc,
};
use crate::fault_proxy::{FaultProxy, Link};
use crate::support::{quiver, run, Dice};

const JOB: &str = "clicks";
const PARTITIONS: u32 = 4;
/// Rows per request.
const ROWS: u64 = 20;
/// Keys per client.
const KEYS: u64 = 16;

/// Writes the job's pipeline into `dir` (output to `dir/out`) and submits it through one of
/// `addrs`, retrying while an election is under way.
fn submit_job(dir: &Path, addrs: &[&str]) {
    let file = dir.join(format!("{JOB}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"[source]
paths = []
[partition]
by = ["key"]
count = {PARTITIONS}
[[plugin]]
name = "running-count"
params = {{ key = "key", output = "n" }}
[sink]
path = "out"
format = "jsonl"
[stream]
batch-rows = 200
batch-ms = 20
checkpoint-ms = 100
poll-ms = 5
"#
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        let mut c = quiver();
        c.args(["cluster", "submit", "--addr", addrs[attempt % addrs.len()]])
            .args(["--timeout-ms", "5000"])
            .arg(&file);
        let (ok, _, err) = run(c);
        if ok || (attempt > 0 && err.contains("JobExists")) {
            return;
        }
        assert!(
            Instant::now() < deadline && attempt < 300,
            "job not submitted: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Posts `body` to `POST /ingest/<JOB>` at `api`; the status code and body of the answer.
fn post(api: &str, producer: &str, seq: u64, body: &str) -> Result<(u16, String), String> {
    post_to(
        api,
        JOB,
        &format!("X-Quiver-Producer: {producer}\r\nX-Quiver-Seq: {seq}\r\n"),
        body,
    )
}

/// Posts `body` to `POST /ingest/<job>` at `api` with the extra header lines `headers`.
fn post_to(api: &str, job: &str, headers: &str, body: &str) -> Result<(u16, String), String> {
    let addr: SocketAddr = api.parse().map_err(|e| format!("{api}: {e}"))?;
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {api}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /ingest/{job} HTTP/1.1\r\nHost: {api}\r\n{headers}Content-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())
        .and_then(|_| conn.write_all(body.as_bytes()))
        .map_err(|e| format!("send to {api}: {e}"))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(|e| format!("read from {api}: {e}"))?;
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line from {api}: {answer:?}"))?;
    let text = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, text))
}

/// A row's id: client, request and row within it, readable back from the output.
fn row_id(client: u64, seq: u64, r: u64) -> u64 {
    client * 1_000_000_000 + seq * ROWS + r
}

fn key_of(client: u64, id: u64) -> String {
    format!("c{client}-k{}", id % KEYS)
}

/// Request `seq` of client `client` as JSON lines.
fn request(client: u64, seq: u64) -> String {
    (0..ROWS)
        .map(|r| {
            let id = row_id(client, seq, r);
            format!(
                "{{\"id\": {id}, \"key\": \"{}\", \"x\": 1.5}}\n",
                key_of(client, id)
            )
        })
        .collect()
}

/// A client sending numbered requests until told to stop; every request is retried (same
/// producer and number, next node) until acknowledged.
struct Client {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Client {
    fn start(client: u64, apis: Vec<String>) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let producer = format!("client-{client}");
            let mut seq = 0;
            while !flag.load(Ordering::Relaxed) {
                let body = request(client, seq);
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut last;
                for attempt in 0usize.. {
                    let api = &apis[(seq as usize + attempt) % apis.len()];
                    match post(api, &producer, seq, &body) {
                        Ok((200, _)) => break,
                        Ok((409, text)) => panic!("{producer} request {seq}: a gap: {text}"),
                        Ok((code, text)) => last = format!("{api}: {code} {text}"),
                        Err(e) => last = e,
                    }
                    assert!(
                        Instant::now() < deadline && attempt < 2000,
                        "{producer} request {seq} not acknowledged within 90 s; last: {last}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                seq += 1;
            }
            seq
        });
        Client { stop, thread }
    }

    /// Stops after the request in flight is acknowledged; how many were.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the client thread")
    }
}

/// Every output row: (id, key, n), from the committed files of every partition.
fn output(dir: &Path) -> Vec<(u64, String, i64)> {
    let mut rows = Vec::new();
    let Ok(parts) = std::fs::read_dir(dir.join("out")) else {
        return rows;
    };
    for part in parts.flatten() {
        let Ok(files) = std::fs::read_dir(part.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.starts_with("part-") {
                continue;
            }
            for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                rows.push((
                    v["id"].as_u64().unwrap(),
                    v["key"].as_str().unwrap().to_string(),
                    v["n"].as_i64().unwrap(),
                ));
            }
        }
    }
    rows
}

/// Waits until the output holds `expected` rows (or more, which the check then reports), up
/// to a minute.
fn wait_for_output(dir: &Path, expected: usize) -> Vec<(u64, String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = output(dir);
        if rows.len() >= expected || Instant::now() >= deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// For a failure's diagnosis: each node's view of the cluster (the job's assignment and
/// committed checkpoints) and the end of its log, on stderr.
fn print_cluster_state(nodes: &[NodeProc]) {
    for n in nodes {
        let state = status(&n.addr).map_or("(no answer)".to_string(), |s| {
            serde_json::to_string_pretty(&s).unwrap()
        });
        eprintln!("--- node {} status: {state}", n.id);
        let log = std::fs::read_to_string(n.dir.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("--- node {} log, last 40 lines:", n.id);
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{line}");
        }
    }
}

/// The oracle: every acknowledged row exactly once, nothing else, and every running count
/// equal to the reference (the row's position among its key's rows in its client's order).
fn check_exactly_once(rows: &[(u64, String, i64)], acknowledged: &BTreeMap<u64, u64>) {
    let mut expected: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    for (&client, &requests) in acknowledged {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for seq in 0..requests {
            for r in 0..ROWS {
                let id = row_id(client, seq, r);
                let key = key_of(client, id);
                let n = counts.entry(key.clone()).or_default();
                *n += 1;
                expected.insert(id, (key, *n));
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut duplicated = Vec::new();
    let mut unexpected = Vec::new();
    let mut wrong = Vec::new();
    for (id, key, n) in rows {
        if !seen.insert(*id) {
            duplicated.push(*id);
        }
        match expected.get(id) {
            None => unexpected.push(*id),
            Some((k, want)) if k != key || want != n => wrong.push((*id, *n, *want)),
            Some(_) => {}
        }
    }
    let missing: Vec<u64> = expected
        .keys()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    assert!(
        duplicated.is_empty() && unexpected.is_empty() && missing.is_empty() && wrong.is_empty(),
        "{} rows out, {} acknowledged: duplicated {:?}, not sent {:?}, missing {:?} (of {}), wrong counts (id, got, want) {:?}",
        rows.len(),
        expected.len(),
        &duplicated[..duplicated.len().min(10)],
        &unexpected[..unexpected.len().min(10)],
        &missing[..missing.len().min(10)],
        missing.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// The highest generation any partition of the job is owned under, as `s` shows it.
fn max_generation(s: &Value) -> u64 {
    s["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|j| j["partitions"].as_array().into_iter().flatten())
        .filter_map(|p| p["generation"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Which node each round kills.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    /// A node that does not lead (a worker only).
    Worker,
    /// The leader.
    Leader,
}

/// Three nodes, a keyed job, two clients, and `rounds` SIGKILLs of a `victim` at random
/// moments, each restarted; then the oracle, and identical replicas.
fn survive_kills(victim: Victim, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path(), &[]);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    submit_job(dir.path(), &addr_refs);
    let apis: Vec<String> = nodes.iter().map(|n| n.api.clone()).collect();
    let clients: Vec<Client> = (0..2).map(|c| Client::start(c, apis.clone())).collect();
    let mut dice = Dice::new();
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(dice.range(300, 1500)));
        let lead = leading(&nodes);
        let v = match victim {
            Victim::Leader => lead,
            Victim::Worker => (lead + 1 + dice.range(0, 2) as usize) % 3,
        };
        eprintln!("round {round}: SIGKILL node {}", nodes[v].id);
        nodes[v].kill();
        // Every other node stays down past the reassignment timeout (1.5 s), so that its
        // partitions move; the others come back before it.
        let down = if round % 2 == 0 {
            dice.range(2500, 4000)
        } else {
            dice.range(200, 1200)
        };
        std::thread::sleep(Duration::from_millis(down));
        nodes[v].restart();
        let id = nodes[v].id;
        wait_for(
            "the killed node back in the cluster",
            &[&nodes[v].addr],
            Duration::from_secs(30),
            |s| {
                s["leader"]
                    .as_u64()
                    .is_some_and(|l| l != id || leader(s) == Some(id))
            },
        );
    }
    let acknowledged: BTreeMap<u64, u64> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| (c as u64, client.finish()))
        .collect();
    let total: u64 = acknowledged.values().sum::<u64>() * ROWS;
    assert!(total > 0, "the clients got acknowledgements");
    let rows = wait_for_output(dir.path(), total as usize);
    if rows.len() != total as usize {
        print_cluster_state(&nodes);
    }
    check_exactly_once(&rows, &acknowledged);
    identical_replicas(&addr_refs);
    let s = status(&nodes[leading(&nodes)].addr).unwrap();
    if victim == Victim::Worker {
        assert!(
            max_generation(&s) > PARTITIONS as u64,
            "partitions moved between workers: {s:#?}"
        );
    }
}

#[test]
fn worker_nodes_killed_ten_times_mid_stream_lose_and_repeat_no_event() {
    survive_kills(Victim::Worker, 10);
}

#[test]
fn leaders_killed_ten_times_under_load_lose_and_repeat_no_event() {
    survive_kills(Victim::Leader, 10);
}

#[test]
fn a_paused_worker_loses_its_partitions_and_on_resuming_is_fenced_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(dir.path(), &[]);
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    submit_job(dir.path(), &addr_refs);
    let apis: Vec<String> = nodes.iter().map(|n| n.api.clone()).collect();
    let lead = leading(&nodes);
    let w = (lead + 1) % 3;
    let wid = nodes[w].id;
    // The client talks to the other two doors: the paused node's would not answer.
    let doors: Vec<String> = (0..3)
        .filter(|i| *i != w)
        .map(|i| apis[i].clone())
        .collect();
    let client = Client::start(0, doors);
    // The worker owns partitions and has committed checkpoints of them.
    let before = wait_for(
        "the worker commits checkpoints",
        &[&addrs[lead]],
        Duration::from_secs(30),
        |s| {
            partitions(s)
                .iter()
                .any(|p| p["owner"] == wid && p["checkpoint"]["node"] == wid)
        },
    );
    let owned: Vec<u64> = partitions(&before)
        .iter()
        .filter(|p| p["owner"] == wid)
        .map(|p| p["partition"].as_u64().unwrap())
        .collect();
    let applied_at_pause = before["applied_index"].as_u64().unwrap();
    nodes[w].signal(rustix::process::Signal::STOP);
    // Past the reassignment timeout its partitions are owned, and checkpointed, elsewhere.
    wait_for(
        "the paused worker's partitions resume elsewhere",
        &[&addrs[lead]],
        Duration::from_secs(30),
        |s| {
            partitions(s).iter().all(|p| {
                let mine = owned.contains(&p["partition"].as_u64().unwrap());
                !mine
                    || (p["owner"] != wid
                        && p["checkpoint"]["node"] != wid
                        && p["checkpoint"]["committed_at"]
                            .as_u64()
                            .is_some_and(|i| i > applied_at_pause))
            })
        },
    );
    nodes[w].signal(rustix::process::Signal::CONT);
    // It resumes with work in flight: its commit is refused (or it learns of the move first)
    // and it stops the partitions' tasks, saying why.
    let log = nodes[w].dir.with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("was fenced") || l.contains("stopping its tasks here"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the resumed worker never said it stopped: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("the resumed worker said: {said}");
    std::thread::sleep(Duration::from_millis(500));
    let requests = client.finish();
    let acknowledged = BTreeMap::from([(0, requests)]);
    let rows = wait_for_output(dir.path(), (requests * ROWS) as usize);
    check_exactly_once(&rows, &acknowledged);
}

fn partitions(s: &Value) -> Vec<Value> {
    s["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["name"] == JOB)
        .flat_map(|j| j["partitions"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A free port on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_leader_cut_off_in_the_minority_acknowledges_nothing_and_the_majority_serves() {
    let dir = tempfile::tempdir().unwrap();
    // Each node listens on an address of its own, and its connections come from it; a proxy in
    // front of each node's peer port can then cut single links.
    let ips: Vec<IpAddr> = (11..14)
        .map(|i| format!("127.0.0.{i}").parse().unwrap())
        .collect();
    let listens: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, free_port(*ip)))
        .collect();
    let proxies: Vec<FaultProxy> = listens.iter().map(|l| FaultProxy::start(*l)).collect();
    let start = |i: usize, join: Option<&str>| {
        NodeProc::start(
            i as u64 + 1,
            &dir.path().join(format!("n{}", i + 1)),
            &listens[i].to_string(),
            join,
            &["--advertise".to_string(), proxies[i].addr().to_string()],
        )
    };
    let first = start(0, None);
    wait_for(
        "node 1 leads",
        &[&listens[0].to_string()],
        Duration::from_secs(30),
        |s| leader(s) == Some(1),
    );
    let through = proxies[0].addr().to_string();
    let nodes = vec![first, start(1, Some(&through)), start(2, Some(&through))];
    // Status is asked of each node directly, never through the proxies.
    let direct: Vec<String> = listens.iter().map(|l| l.to_string()).collect();
    let direct_refs: Vec<&str> = direct.iter().map(String::as_str).collect();
    wait_for("three voters", &direct_refs, Duration::from_secs(30), |s| {
        s["members"]
            .as_array()
            .is_some_and(|m| m.iter().filter(|m| m["voter"] == true).count() == 3)
    });
    submit_job(dir.path(), &direct_refs);
    let apis: Vec<String> = nodes.iter().map(|n| n.api.clone()).collect();
    let client = Client::start(0, apis.clone());
    std::thread::sleep(Duration::from_millis(500));

    let lead = (0..3)
        .find(|i| status(&direct[*i]).is_some_and(|s| leader(&s) == Some(*i as u64 + 1)))
        .expect("one node leads");
    let old_term = status(&direct[lead]).unwrap()["term"].as_u64().unwrap();
    // Cut the leader off: nobody reaches it, and it reaches nobody.
    proxies[lead].set(Link::Down);
    for (i, p) in proxies.iter().enumerate() {
        if i != lead {
            p.set_from(ips[lead], Link::Down);
        }
    }
    let others: Vec<&str> = (0..3)
        .filter(|i| *i != lead)
        .map(|i| direct_refs[i])
        .collect();
    let new = wait_for(
        "the majority elects a leader",
        &others,
        Duration::from_secs(30),
        |s| leader(s).is_some_and(|l| l != lead as u64 + 1),
    );
    assert!(new["term"].as_u64().unwrap() > old_term);
    // The old leader's door acknowledges nothing: it cannot reach a majority.
    let lonely = request(9, 0);
    match post(&apis[lead], "minority", 0, &lonely) {
        Ok((200, text)) => panic!("the minority acknowledged a write: {text}"),
        other => eprintln!("the cut-off leader's door answered: {other:?}"),
    }
    // The majority serves: the client's requests go on being acknowledged.
    let served = status(others[0]).unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    wait_for(
        "the majority commits new entries",
        &others,
        Duration::from_secs(30),
        |s| s["applied_index"].as_u64().is_some_and(|i| i > served + 5),
    );

    // Heal: one leader, identical logs, the old leader a follower in the new term.
    for p in &proxies {
        p.clear_rules();
        p.set(Link::Up);
    }
    let requests = client.finish();
    identical_replicas(&direct_refs);
    let old = status(&direct[lead]).unwrap();
    assert_ne!(leader(&old), Some(lead as u64 + 1), "{old:#?}");
    let acknowledged = BTreeMap::from([(0, requests)]);
    let rows = wait_for_output(dir.path(), (requests * ROWS) as usize);
    // Client 9's rows (the request the minority could not commit) must not appear either.
    check_exactly_once(&rows, &acknowledged);
    drop(nodes);
}

#[test]
fn a_local_cluster_takes_events_at_its_door_and_answers_retries_gaps_bad_bodies_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let mut up = quiver();
    up.args(["cluster", "up", "--nodes", "1", "--dir"])
        .arg(&cluster)
        .stderr(std::process::Stdio::null());
    let up = up.spawn().expect("quiver cluster up");
    let on_cluster = |args: &[&str]| {
        let mut c = quiver();
        c.args(["cluster"]).args(args).arg("--dir").arg(&cluster);
        run(c)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !on_cluster(&["status"]).0 {
        assert!(
            Instant::now() < deadline,
            "the local cluster did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let layout: Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.join("cluster.json")).unwrap())
            .unwrap();
    let api = layout["nodes"][0]["api"].as_str().unwrap().to_string();
    submit_job(dir.path(), &[layout["nodes"][0]["peer"].as_str().unwrap()]);

    let answer = |job: &str, headers: &str, body: &str| {
        post_to(&api, job, headers, body).expect("the door answers")
    };
    let numbered = |seq: u64| format!("X-Quiver-Producer: p\r\nX-Quiver-Seq: {seq}\r\n");
    let (code, text) = answer(JOB, &numbered(0), &request(0, 0));
    assert_eq!(code, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first["rows"], ROWS);
    assert_eq!(first["duplicate"], false);
    // A retry is acknowledged again and not applied twice.
    let (code, text) = answer(JOB, &numbered(0), &request(0, 0));
    assert_eq!(
        (
            code,
            serde_json::from_str::<Value>(&text).unwrap()["duplicate"].clone()
        ),
        (200, Value::Bool(true)),
        "{text}"
    );
    // A number that skips one is refused, saying which comes next.
    let (code, text) = answer(JOB, &numbered(2), &request(0, 2));
    assert_eq!(code, 409, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["expected"], 1);
    // A line that does not parse is refused, naming it; so is a number without a producer.
    let bad = format!(
        "{}\n{{\"id\": 7, \"key\": \n",
        request(0, 1).lines().next().unwrap()
    );
    let (code, text) = answer(JOB, &numbered(1), &bad);
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("line 2") || text.contains(":2"),
        "names the line: {text}"
    );
    let (code, text) = answer(JOB, "X-Quiver-Seq: 1\r\n", &request(0, 1));
    assert_eq!(code, 400, "{text}");
    // No such job, and a stopped one.
    let (code, text) = answer("nobody", &numbered(0), &request(0, 0));
    assert_eq!(code, 404, "{text}");
    // The first request comes out once, before the job is stopped (a stop drops what is
    // pending).
    let rows = wait_for_output(dir.path(), ROWS as usize);
    check_exactly_once(&rows, &BTreeMap::from([(0, 1)]));
    let (ok, out, err) = on_cluster(&["stop", JOB]);
    assert!(ok, "{out}{err}");
    let (code, text) = answer(JOB, &numbered(1), &request(0, 1));
    assert_eq!(code, 410, "{text}");

    // Ctrl-C (SIGTERM here) stops the cluster and its node.
    let pid = rustix::process::Pid::from_child(&up);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = finish_within(up, Duration::from_secs(30));
    assert!(out.success(), "quiver cluster up ended with {out:?}");
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
fn finish_within(mut child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
