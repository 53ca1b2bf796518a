//! Cluster mode (`cluster.rs`): three `quiver node` processes on 127.0.0.1 forming one Raft
//! group, running a keyed running-count job (4 partitions); each figure next to its target or
//! its single-node baseline, measured in the same run:
//!
//! 1. **Leader failover** (default timings): three producers keep posting 5-row requests to
//!    the nodes' HTTP doors; the leader is killed with SIGKILL. The figure is the time from the
//!    kill to the first request *sent after the kill* that the cluster acknowledges (200): only
//!    a new leader can commit it. The producers retry the same producer id and sequence number
//!    on 503 or a connection error after 20 ms on the next node's door (not after the door's
//!    `Retry-After: 1`, which would measure the client's back-off). The survivors' status is
//!    polled every 20 ms too, to show how much of it is the election. The killed node is
//!    restarted (same id, data directory and addresses, no `--join`) and caught up before the
//!    next trial. p50 and max over the trials vs the targets (p50 ≤ 1 s, max ≤ 2 s).
//! 2. **Worker failover**: while two producers keep sending events to every partition, a
//!    worker that is not the leader and owns partitions is killed with SIGKILL. The figure is
//!    the time from the kill until every partition it owned has a checkpoint committed by
//!    another worker (the leader's status, polled every 20 ms), p50 vs the target (≤ 2 s). The
//!    worker is restarted, and the next trial waits until every partition's owner has
//!    committed a checkpoint under its current generation.
//! 3. **Replicated ingest**: acknowledged requests/s of the three-node cluster (producers
//!    spread over the three doors) and of `quiver run --stream` with its single-node HTTP
//!    ingest (the same producers on its one door), at 8, 32 and 64 producers: the same 100-row
//!    request bodies on keep-alive connections, each producer sending its next request once
//!    the last was acknowledged, the same pipeline running behind both. A cluster request
//!    waits for a round of replication (about a millisecond and a half here), so a few
//!    producers cannot keep it busy: its nodes group the requests in flight into one entry
//!    (`quiver-node`'s batching), and it reaches its capacity only with more in flight. The
//!    figure is capacity against capacity — the most acknowledged requests/s of each over the
//!    sweep — printed next to the ratio at every count. Target: cluster ≥ 0.5× single node.
//!    Every event of a group goes through its one leader, so the cluster figure is the
//!    group's ceiling; the largest count on the leader's door only and on a follower's door
//!    only shows what forwarding costs.
//! 4. **Catch-up**: a follower is killed, ~100 MB of JSON events are written in 1000-row
//!    requests (bodies' bytes counted; no snapshot is taken meanwhile), the follower is
//!    restarted and timed until its applied index reaches the leader's last log index: MB/s
//!    from the log. Then from a snapshot: in a cluster taking one every 200 entries, the
//!    leader purges its log past the stopped follower, which on its return must install the
//!    leader's snapshot (confirmed by its `snapshots_installed`).
//! 5. **Checkpoint cost**: the same checkpoints (the manifest and running-count state of a
//!    real streaming run of the job's pipeline over events like the job's, and over 100k keys
//!    for a large state) through the `LocalStore` and through the `ClusterStore` of an
//!    in-process three-node cluster, for a worker on a follower and one on the leader, in
//!    turns: median ms per checkpoint (put the state, commit the manifest) over 50 after 10
//!    warm-up ones, and the bytes each writes per checkpoint (the files for the local store;
//!    the log's growth per replica for the cluster).
//!
//! Every process is started on 127.0.0.1 with free ports and killed at the end (a guard kills
//! them on error too); every wait is a loop with a deadline. The nodes' logs are kept in
//! `target/bench-data/cluster/<figure>/n<id>.log`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use quiver::checkpoint::store::{CheckpointStore, LocalStore};
use quiver::checkpoint::Manifest;
use quiver::coordination::{Generation, PartitionId};
use quiver::node::{cluster_status, Node, NodeConfig, NodeStatus, Timing};
use quiver::pipeline::Pipeline;
use quiver::plugin::Host;
use quiver::replication::{Command as ClusterCommand, Reply};
use quiver::stream::{self, StreamOptions};
use quiver::worker::store::ClusterStore;

use crate::Args;

/// The job every cluster here runs.
const JOB: &str = "job";
/// Partitions of the job.
const PARTITIONS: u32 = 4;
/// Distinct keys in the events.
const KEYS: u64 = 100;
/// Rows per request of the throughput figure and of the snapshot catch-up.
const ROWS: usize = 100;
/// Rows per request when the catch-up figure writes its volume.
const BIG: usize = 1000;
/// How often status is polled while timing.
const POLL: Duration = Duration::from_millis(20);
/// How long a producer waits before retrying a request that was not acknowledged.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The job's pipeline: a keyed running count into `out/`. `listen` adds the single-node HTTP
/// ingest.
fn pipeline_text(listen: bool) -> String {
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
batch-rows = 300
batch-ms = 20
checkpoint-ms = 100
poll-ms = 5
{}"#,
        if listen {
            "listen = \"127.0.0.1:0\"\n"
        } else {
            ""
        }
    )
}

/// One event line, numbered `seq` within its producer.
fn event(producer: usize, seq: u64) -> String {
    let key = (seq.wrapping_mul(7919) + producer as u64 * 13) % KEYS;
    format!(
        "{{\"seq\": {seq}, \"key\": \"k{key}\", \"x\": {}.5}}\n",
        seq % 1000
    )
}

/// A request body of `rows` events, the `request`-th of `producer`.
fn body(producer: usize, request: u64, rows: usize) -> Vec<u8> {
    (0..rows as u64)
        .map(|i| event(producer, request * rows as u64 + i))
        .collect::<String>()
        .into_bytes()
}

/// Where the bench runs things and how it reaches the nodes.
struct Env {
    quiver: PathBuf,
    plugins: PathBuf,
    cache: PathBuf,
    dir: PathBuf,
    trials: usize,
    quick: bool,
    /// Runs the status calls (gRPC) to the nodes.
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new(args: &Args) -> Result<Env> {
        let quiver = std::env::current_exe()?.with_file_name("quiver");
        ensure!(
            quiver.exists(),
            "{} is missing: cargo build --release -p quiver-cli",
            quiver.display()
        );
        let plugins = std::path::absolute(&args.plugins)?;
        ensure!(
            plugins.join("running-count.wasm").exists(),
            "{} has no running-count.wasm: plugins/build.sh",
            plugins.display()
        );
        let dir = std::path::absolute("target/bench-data/cluster")?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        // Compiled plugins survive between runs, so no trial waits for a compile.
        let cache = match std::env::var_os("QUIVER_CACHE_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::path::absolute("target/bench-data/plugin-cache")?,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Env {
            quiver,
            plugins,
            cache,
            dir,
            trials: if args.quick { 3 } else { args.trials },
            quick: args.quick,
            rt,
        })
    }

    /// The node at `addr`'s own view (`local`) or its leader's; `None` if it does not answer.
    fn status(&self, addr: &str, local: bool) -> Option<NodeStatus> {
        self.rt
            .block_on(cluster_status(addr, local, Duration::from_millis(1000)))
            .ok()
    }

    /// A `quiver` command with the plugin path and compile cache set.
    fn quiver(&self) -> Command {
        let mut c = Command::new(&self.quiver);
        c.env("QUIVER_PLUGIN_PATH", &self.plugins)
            .env("QUIVER_CACHE_DIR", &self.cache)
            .stdin(Stdio::null());
        c
    }
}

/// Retries `check` every [`POLL`] until it gives a value, for up to `within`.
fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// A running `quiver node`, killed when dropped.
struct NodeProc {
    id: u64,
    dir: PathBuf,
    /// Its peer address and HTTP door, fixed at the first start and kept on restarts, since the
    /// membership records them.
    listen: String,
    api: String,
    extra: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts node `id`; returns once it has said where it listens.
    fn start(
        env: &Env,
        id: u64,
        dir: &Path,
        addrs: (&str, &str),
        join: Option<&str>,
        extra: &[String],
    ) -> Result<NodeProc> {
        let log_path = dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut c = env.quiver();
        c.args(["node", "--id", &id.to_string()])
            .args(["--listen", addrs.0, "--api", addrs.1])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(j) = join {
            c.args(["--join", j]);
        }
        let mut child = c.spawn().context("starting quiver node")?;
        let stdout = child.stdout.take().expect("piped");
        let mut node = NodeProc {
            id,
            dir: dir.to_path_buf(),
            listen: String::new(),
            api: String::new(),
            extra: extra.to_vec(),
            child: Some(child),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.listen.is_empty() || node.api.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|e| {
                let what = match e {
                    mpsc::RecvTimeoutError::Timeout => "did not say where it listens within 30 s",
                    mpsc::RecvTimeoutError::Disconnected => "ended before saying where it listens",
                };
                anyhow!("node {id} {what} (see {})", log_path.display())
            })?;
            if let Some(a) = line.strip_prefix(&format!("node {id} listening on ")) {
                node.listen = a.trim().to_string();
            } else if let Some(a) = line
                .strip_prefix(&format!("node {id} ingest: http://"))
                .and_then(|a| a.strip_suffix("/ingest/<job>"))
            {
                node.api = a.to_string();
            }
        }
        Ok(node)
    }

    /// SIGKILL; returns when it was sent.
    fn kill(&mut self) -> Instant {
        let at = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        at
    }

    /// Starts it again on its data directory and addresses, without `--join`: it rejoins from
    /// its own log.
    fn restart(&mut self, env: &Env) -> Result<()> {
        self.kill();
        let again = NodeProc::start(
            env,
            self.id,
            &self.dir.clone(),
            (&self.listen.clone(), &self.api.clone()),
            None,
            &self.extra.clone(),
        )?;
        *self = again;
        Ok(())
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn door(&self) -> SocketAddr {
        self.api.parse().expect("the node printed a socket address")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three nodes with the job submitted.
struct Cluster {
    nodes: Vec<NodeProc>,
}

impl Cluster {
    /// Starts three nodes in `env.dir/<name>` with the flags `extra`, submits the job and
    /// waits until every partition has an owner.
    fn start(env: &Env, name: &str, extra: &[&str]) -> Result<Cluster> {
        let dir = env.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let local = ("127.0.0.1:0", "127.0.0.1:0");
        let n1 = NodeProc::start(env, 1, &dir.join("n1"), local, None, &extra)?;
        wait_for("node 1 leads", Duration::from_secs(30), || {
            env.status(&n1.listen, true).filter(|s| s.role == "leader")
        })?;
        let mut cluster = Cluster { nodes: vec![n1] };
        for id in [2, 3] {
            let join = cluster.nodes[0].listen.clone();
            let n = NodeProc::start(
                env,
                id,
                &dir.join(format!("n{id}")),
                local,
                Some(&join),
                &extra,
            )?;
            cluster.nodes.push(n);
        }
        wait_for("three voters", Duration::from_secs(30), || {
            env.status(&cluster.nodes[0].listen, false)
                .filter(|s| s.members.iter().filter(|m| m.voter).count() == 3)
        })?;
        let file = dir.join(format!("{JOB}.toml"));
        std::fs::write(&file, pipeline_text(false))?;
        let out = env
            .quiver()
            .args([
                "cluster",
                "submit",
                "--addr",
                &cluster.nodes[0].listen,
                "--name",
                JOB,
            ])
            .arg(&file)
            .output()?;
        ensure!(
            out.status.success(),
            "submitting the job: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("every partition owned", Duration::from_secs(30), || {
            let s = env.status(&cluster.nodes[0].listen, false)?;
            let job = s.jobs.iter().find(|j| j.name == JOB)?;
            job.partitions
                .iter()
                .all(|p| p.owner.is_some())
                .then_some(())
        })?;
        Ok(cluster)
    }

    fn doors(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(NodeProc::door).collect()
    }

    /// The node that leads, by its own word, with its view.
    fn leader(&self, env: &Env) -> Option<(usize, NodeStatus)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alive())
            .filter_map(|(i, n)| Some((i, env.status(&n.listen, true)?)))
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
    }

    /// Waits until a leader holds all three nodes in step (each matched within a few entries
    /// of its log), and returns its index.
    fn settled(&self, env: &Env) -> Result<usize> {
        wait_for(
            "a leader with every node in step",
            Duration::from_secs(60),
            || {
                let (i, s) = self.leader(env)?;
                let in_step =
                    s.members.len() == 3 && s.members.iter().all(|m| m.lag.is_some_and(|l| l <= 5));
                in_step.then_some(i)
            },
        )
    }

    /// Restarts node `i` and waits until its applied index reaches the leader's last log index
    /// as of its restart; returns the time that took and, of it, the time until the process
    /// said where it listens.
    fn restart_and_catch_up(&mut self, env: &Env, i: usize) -> Result<(f64, f64)> {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|&k| k != i && self.nodes[k].alive())
            .map(|k| self.nodes[k].listen.clone())
            .collect();
        let target = wait_for("the leader's log index", Duration::from_secs(30), || {
            others
                .iter()
                .find_map(|a| env.status(a, false).filter(|s| s.role == "leader"))
                .and_then(|s| s.last_log_index)
        })?;
        let t = Instant::now();
        self.nodes[i].restart(env)?;
        let started = t.elapsed().as_secs_f64();
        let addr = self.nodes[i].listen.clone();
        wait_for(
            &format!("node {} catching up to log index {target}", i + 1),
            Duration::from_secs(120),
            || {
                env.status(&addr, true)
                    .filter(|s| s.applied_index.unwrap_or(0) >= target)
            },
        )?;
        Ok((t.elapsed().as_secs_f64(), started))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP producers

/// One keep-alive HTTP connection, opened again after an error.
struct Conn {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl Conn {
    fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        Conn {
            addr,
            reader: None,
            timeout,
        }
    }

    /// Posts `body` to `path` with `headers`; the status code and the answer's body. An error
    /// (connection refused or cut, no answer in time) drops the connection.
    fn post(&mut self, path: &str, headers: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let answer = self.exchange(path, headers, body);
        if answer.is_err() {
            self.reader = None;
        }
        answer
    }

    fn exchange(
        &mut self,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        if self.reader.is_none() {
            let conn = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))?;
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(self.timeout))?;
            conn.set_write_timeout(Some(self.timeout))?;
            self.reader = Some(BufReader::new(conn));
        }
        let reader = self.reader.as_mut().expect("connected above");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let conn = reader.get_mut();
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)?;
        let mut status = String::new();
        if reader.read_line(&mut status)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status:?}")))?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(std::io::Error::other)?;
                }
            }
        }
        let mut answer = vec![0; length];
        reader.read_exact(&mut answer)?;
        Ok((code, answer))
    }
}

/// The headers that name a request to the cluster's door.
fn seq_headers(producer: &str, seq: u64) -> String {
    format!("X-Quiver-Producer: {producer}\r\nX-Quiver-Seq: {seq}\r\n")
}

/// A request acknowledged by the cluster: when its (last) attempt was sent and answered.
#[derive(Clone, Copy)]
struct Ack {
    sent: Instant,
    at: Instant,
}

/// Producers posting small requests in a loop until stopped, each retrying the same sequence
/// number on the next door after a failure; they stop when dropped.
struct Producers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    /// Failed attempts by kind (`503`, `connection`, …).
    failures: Arc<Mutex<BTreeMap<String, u64>>>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl Producers {
    fn start(doors: Vec<SocketAddr>, name: &str, count: usize, rows: usize) -> Producers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(BTreeMap::new()));
        let threads = (0..count)
            .map(|p| {
                let (stop, acks, failures, doors) =
                    (stop.clone(), acks.clone(), failures.clone(), doors.clone());
                let producer = format!("{name}-{p}");
                std::thread::spawn(move || -> Result<()> {
                    let path = format!("/ingest/{JOB}");
                    let mut door = p % doors.len();
                    let mut conn = Conn::new(doors[door], Duration::from_secs(3));
                    let mut seq = 0;
                    let mut payload = body(p, seq, rows);
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let answer = conn.post(&path, &seq_headers(&producer, seq), &payload);
                        let failure = match answer {
                            Ok((200, _)) => {
                                let at = Instant::now();
                                acks.lock().expect("acks").push(Ack { sent, at });
                                seq += 1;
                                payload = body(p, seq, rows);
                                continue;
                            }
                            Ok((409, a)) => bail!(
                                "{producer}: request {seq} refused as out of order: {}",
                                String::from_utf8_lossy(&a)
                            ),
                            Ok((code, _)) => code.to_string(),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                "no answer in 3 s".to_string()
                            }
                            Err(_) => "connection error".to_string(),
                        };
                        *failures
                            .lock()
                            .expect("failures")
                            .entry(failure)
                            .or_default() += 1;
                        door = (door + 1) % doors.len();
                        conn = Conn::new(doors[door], Duration::from_secs(3));
                        std::thread::sleep(RETRY_PAUSE);
                    }
                    Ok(())
                })
            })
            .collect();
        Producers {
            stop,
            acks,
            failures,
            threads,
        }
    }

    fn acked(&self) -> usize {
        self.acks.lock().expect("acks").len()
    }

    /// When the first request whose attempt was sent after `t` was acknowledged.
    fn first_ack_sent_after(&self, t: Instant) -> Option<Instant> {
        self.acks
            .lock()
            .expect("acks")
            .iter()
            .filter(|a| a.sent >= t)
            .map(|a| a.at)
            .min()
    }

    /// Stops them; the failed attempts by kind.
    fn stop(mut self) -> Result<BTreeMap<String, u64>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().map_err(|_| anyhow!("a producer panicked"))??;
        }
        Ok(self.failures.lock().expect("failures").clone())
    }
}

impl Drop for Producers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn failures_text(f: &BTreeMap<String, u64>) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(|(k, n)| format!("{n}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `p`-quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

const MB: f64 = 1e6;

// ---------------------------------------------------------------------------------------------
// 1. Leader failover

fn leader_failover(env: &Env, cluster: &mut Cluster) -> Result<()> {
    println!(
        "\n-- leader failover: SIGKILL the leader while 3 producers post 5-row requests; time to the first request sent after the kill that is acknowledged"
    );
    let (mut times, mut elections, mut catch_up) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = BTreeMap::new();
    for trial in 0..env.trials {
        let lead = cluster.settled(env)?;
        let term = env
            .status(&cluster.nodes[lead].listen, true)
            .map_or(0, |s| s.term);
        let survivors: Vec<String> = (0..cluster.nodes.len())
            .filter(|&i| i != lead)
            .map(|i| cluster.nodes[i].listen.clone())
            .collect();
        let producers = Producers::start(cluster.doors(), &format!("lf{trial}"), 3, 5);
        wait_for("producers acknowledged", Duration::from_secs(20), || {
            (producers.acked() >= 10).then_some(())
        })?;
        let killed = cluster.nodes[lead].kill();
        // The election is watched too, to tell it apart from the write path after it.
        let mut elected = None;
        let first = wait_for(
            "a write acknowledged after the leader's kill",
            Duration::from_secs(30),
            || {
                if elected.is_none() {
                    let now = survivors
                        .iter()
                        .filter_map(|a| env.status(a, true))
                        .any(|s| s.role == "leader" && s.term > term);
                    if now {
                        elected = Some(killed.elapsed().as_secs_f64());
                    }
                }
                let first = producers.first_ack_sent_after(killed)?;
                elected.is_some().then_some(first)
            },
        )?;
        for (k, n) in producers.stop()? {
            *failures.entry(k).or_insert(0) += n;
        }
        times.push(first.duration_since(killed).as_secs_f64());
        elections.push(elected.expect("waited for"));
        catch_up.push(cluster.restart_and_catch_up(env, lead)?.0);
    }
    let text: Vec<String> = times
        .iter()
        .zip(&elections)
        .map(|(t, e)| format!("{t:.2} ({e:.2})"))
        .collect();
    times.sort_by(f64::total_cmp);
    elections.sort_by(f64::total_cmp);
    catch_up.sort_by(f64::total_cmp);
    let (p50, max) = (quantile(&times, 0.5), *times.last().expect("trials"));
    println!(
        "trials, s to the first acknowledged write (to a new leader seen in status, polled every 20 ms): {}",
        text.join(" ")
    );
    println!(
        "leader failover: p50 {p50:.2} s, max {max:.2} s over {} trials (target p50 ≤ 1 s, max ≤ 2 s): {}",
        times.len(),
        met(p50 <= 1.0 && max <= 2.0)
    );
    println!(
        "of which the election: p50 {:.2} s, max {:.2} s; the killed leader, restarted, caught up in p50 {:.2} s (process start included); failed attempts the producers retried: {}",
        quantile(&elections, 0.5),
        elections.last().expect("trials"),
        quantile(&catch_up, 0.5),
        failures_text(&failures)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Worker failover

/// Every partition is owned and has a checkpoint committed by its owner under its current
/// generation; returns the leader's index and view.
fn workers_settled(env: &Env, cluster: &Cluster) -> Result<(usize, NodeStatus)> {
    wait_for(
        "every partition checkpointed by its owner",
        Duration::from_secs(60),
        || {
            let (i, s) = cluster.leader(env)?;
            let job = s.jobs.iter().find(|j| j.name == JOB)?;
            let steady = s.members.iter().all(|m| m.lag.is_some_and(|l| l <= 50))
                && job.partitions.iter().all(|p| {
                    p.checkpoint.as_ref().is_some_and(|c| {
                        Some(c.node) == p.owner && Some(c.generation) == p.generation
                    })
                });
            steady.then_some((i, s))
        },
    )
}

fn worker_failover(env: &Env, cluster: &mut Cluster) -> Result<()> {
    println!(
        "\n-- worker failover: SIGKILL a worker (not the leader) that owns partitions while 2 producers send 20-row requests to every partition; time until each of its partitions has a checkpoint committed by another worker"
    );
    let producers = Producers::start(cluster.doors(), "wf", 2, 20);
    let mut times = Vec::new();
    let mut per_partition = Vec::new();
    let mut last_victim = None;
    for _ in 0..env.trials {
        let (lead, s) = workers_settled(env, cluster)?;
        let job = s.jobs.iter().find(|j| j.name == JOB).expect("settled");
        let owned = |i: usize| -> Vec<u32> {
            let id = cluster.nodes[i].id;
            job.partitions
                .iter()
                .filter(|p| p.owner == Some(id))
                .map(|p| p.partition)
                .collect()
        };
        // A worker other than the leader, not the last one killed if another qualifies.
        let mut candidates: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&i| i != lead && !owned(i).is_empty())
            .collect();
        candidates.sort_by_key(|&i| Some(i) == last_victim);
        let Some(&victim) = candidates.first() else {
            bail!("no worker other than the leader owns a partition: {s:?}");
        };
        last_victim = Some(victim);
        let parts = owned(victim);
        let victim_id = cluster.nodes[victim].id;
        let since = s.last_log_index.unwrap_or(0);
        let leader_addr = cluster.nodes[lead].listen.clone();
        let killed = cluster.nodes[victim].kill();
        let mut taken: BTreeMap<u32, f64> = BTreeMap::new();
        wait_for(
            "the killed worker's partitions checkpointed elsewhere",
            Duration::from_secs(30),
            || {
                let s = env.status(&leader_addr, false)?;
                let at = killed.elapsed().as_secs_f64();
                let job = s.jobs.iter().find(|j| j.name == JOB)?;
                for p in job
                    .partitions
                    .iter()
                    .filter(|p| parts.contains(&p.partition))
                {
                    let moved = p
                        .checkpoint
                        .as_ref()
                        .is_some_and(|c| c.node != victim_id && c.committed_at > since);
                    if moved {
                        taken.entry(p.partition).or_insert(at);
                    }
                }
                (taken.len() == parts.len()).then_some(())
            },
        )?;
        per_partition.extend(taken.values().copied());
        times.push(taken.values().copied().fold(0.0, f64::max));
        cluster.restart_and_catch_up(env, victim)?;
    }
    let failures = producers.stop()?;
    let text: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
    times.sort_by(f64::total_cmp);
    per_partition.sort_by(f64::total_cmp);
    let p50 = quantile(&times, 0.5);
    println!(
        "trials (s, until the last of the worker's partitions): {}",
        text.join(" ")
    );
    println!(
        "worker failover: p50 {p50:.2} s, max {:.2} s over {} trials; per partition p50 {:.2} s (target p50 ≤ 2 s): {}",
        times.last().expect("trials"),
        times.len(),
        quantile(&per_partition, 0.5),
        met(p50 <= 2.0)
    );
    println!(
        "for scale: a worker is declared dead after 1.5 s of silence here; Flink's default heartbeat timeout is 50 s, Arroyo's worker heartbeat timeout 30 s"
    );
    println!(
        "failed attempts the producers retried: {}",
        failures_text(&failures)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Replicated ingest

/// Where the throughput producers post: a door, its path, and whether to number requests.
#[derive(Clone)]
struct Target {
    doors: Vec<SocketAddr>,
    path: String,
    numbered: bool,
}

/// `bodies[p]` posted in order by producer `p` (request numbers from `first`), each producer
/// on its own keep-alive connection to door `p % doors`; the seconds until all were
/// acknowledged and the attempts retried (only numbered requests are retried, on 503 or a
/// connection error, since only they apply once).
fn post_all(
    target: &Target,
    name: &str,
    bodies: &[Vec<Vec<u8>>],
    first: u64,
) -> Result<(f64, u64)> {
    let start = Instant::now();
    let retries = std::thread::scope(|scope| -> Result<u64> {
        let threads: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(p, bodies)| {
                let target = target.clone();
                scope.spawn(move || -> Result<u64> {
                    let door = target.doors[p % target.doors.len()];
                    let mut conn = Conn::new(door, Duration::from_secs(30));
                    let producer = format!("{name}-{p}");
                    let mut retries = 0;
                    for (i, b) in bodies.iter().enumerate() {
                        let seq = first + i as u64;
                        let headers = if target.numbered {
                            seq_headers(&producer, seq)
                        } else {
                            String::new()
                        };
                        let deadline = Instant::now() + Duration::from_secs(30);
                        loop {
                            match conn.post(&target.path, &headers, b) {
                                Ok((200, _)) => break,
                                Ok((503, _)) | Err(_)
                                    if target.numbered && Instant::now() < deadline =>
                                {
                                    retries += 1;
                                    std::thread::sleep(RETRY_PAUSE);
                                }
                                Ok((code, a)) => bail!(
                                    "{producer} request {seq} to {door}: {code} {}",
                                    String::from_utf8_lossy(&a)
                                ),
                                Err(e) => bail!("{producer} request {seq} to {door}: {e}"),
                            }
                        }
                    }
                    Ok(retries)
                })
            })
            .collect();
        let mut retries = 0;
        for t in threads {
            retries += t.join().map_err(|_| anyhow!("a producer panicked"))??;
        }
        Ok(retries)
    })?;
    Ok((start.elapsed().as_secs_f64(), retries))
}

/// Starts `quiver run PIPELINE --stream` on the job's pipeline with its HTTP ingest; returns
/// the child (killed when dropped) and the ingest address.
struct Single {
    child: Child,
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_single(env: &Env, dir: &Path) -> Result<(Single, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("single.toml");
    std::fs::write(&file, pipeline_text(true))?;
    let mut child = env
        .quiver()
        .arg("run")
        .arg(&file)
        .arg("--stream")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting quiver run --stream")?;
    let stderr = child.stderr.take().expect("piped");
    let single = Single { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if let Some(a) = line
                .trim()
                .strip_prefix("ingest: http://")
                .and_then(|a| a.strip_suffix("/ingest"))
            {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow!("quiver run --stream did not name its ingest address within 30 s"))?;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .context("the ingest address")?;
    Ok((single, addr))
}

/// Each producer's request bodies, in order.
type Bodies = Vec<Vec<Vec<u8>>>;

/// Producer counts of the replicated-ingest sweep.
const SWEEP: [usize; 3] = [8, 32, 64];

fn replicated_ingest(env: &Env) -> Result<()> {
    let requests = if env.quick { 100 } else { 400 };
    let warm = 10;
    println!(
        "\n-- replicated ingest: {SWEEP:?} producers, each {requests} requests of {ROWS} rows (after {warm} warm-up requests), keep-alive connections, the same bodies for both"
    );
    let bodies = |producers: usize, from: u64, n: u64| -> Bodies {
        (0..producers)
            .map(|p| (from..from + n).map(|r| body(p, r, ROWS)).collect())
            .collect()
    };
    // Each producer count's warm-up and timed bodies.
    let rounds: Vec<(usize, Bodies, Bodies)> = SWEEP
        .iter()
        .map(|&p| (p, bodies(p, 0, warm), bodies(p, warm, requests as u64)))
        .collect();
    let timed_bodies = rounds.iter().flat_map(|r| r.2.iter().flatten());
    let (n, bytes) = timed_bodies.fold((0usize, 0usize), |(n, b), body| (n + 1, b + body.len()));
    let bytes_per_request = bytes as f64 / n as f64;
    let rate = |producers: usize, secs: f64| (producers * requests) as f64 / secs;

    let (single, addr) = start_single(env, &env.dir.join("single"))?;
    let target = Target {
        doors: vec![addr],
        path: "/ingest".into(),
        numbered: false,
    };
    let mut single_rates = Vec::new();
    for (producers, warm_bodies, timed) in &rounds {
        post_all(&target, "single", warm_bodies, 0)?;
        let (secs, _) = post_all(&target, "single", timed, warm)?;
        single_rates.push(rate(*producers, secs));
    }
    drop(single);

    let cluster = Cluster::start(env, "ingest", &[])?;
    let target = Target {
        doors: cluster.doors(),
        path: format!("/ingest/{JOB}"),
        numbered: true,
    };
    let mut cluster_rates = Vec::new();
    let mut retried = 0;
    for (producers, warm_bodies, timed) in &rounds {
        // Producers named by the count, so that each round's numbers start at 0.
        let name = format!("tp{producers}");
        post_all(&target, &name, warm_bodies, 0)?;
        let (secs, retries) = post_all(&target, &name, timed, warm)?;
        cluster_rates.push(rate(*producers, secs));
        retried += retries;
    }
    // The largest count on one door: the leader's (no forwarding) and a follower's (its
    // requests forwarded to the leader, several per call).
    let lead = cluster.settled(env)?;
    let (producers, _, timed) = rounds.last().expect("a sweep");
    let mut one_door = Vec::new();
    for (name, i) in [("tl", lead), ("tf", (lead + 1) % 3)] {
        let target = Target {
            doors: vec![cluster.nodes[i].door()],
            ..target.clone()
        };
        one_door.push(rate(*producers, post_all(&target, name, timed, 0)?.0));
    }
    drop(cluster);

    let mb = |r: f64| r * bytes_per_request / MB;
    println!("producers   single node req/s   3-node cluster req/s   cluster/single");
    for (k, producers) in SWEEP.iter().enumerate() {
        println!(
            "{producers:>9}   {:>17.0}   {:>20.0}   {:>13.2}×",
            single_rates[k],
            cluster_rates[k],
            cluster_rates[k] / single_rates[k]
        );
    }
    println!(
        "(single node: quiver run --stream, HTTP ingest, fsync per group of requests; cluster: the doors of all three nodes, acknowledged once a majority fsynced; {retried} attempts retried)"
    );
    println!(
        "the same {producers} producers on one door of the cluster: the leader's {:.0} requests/s, a follower's {:.0} requests/s",
        one_door[0], one_door[1]
    );
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
    let (s, c) = (best(&single_rates), best(&cluster_rates));
    println!(
        "capacity (the most acknowledged requests/s over the sweep): single node {s:.0} ({:.3} M rows/s, {:.1} MB/s of JSON), cluster {c:.0} ({:.3} M rows/s, {:.1} MB/s of JSON)",
        s * ROWS as f64 / 1e6,
        mb(s),
        c * ROWS as f64 / 1e6,
        mb(c),
    );
    println!(
        "replicated ingest: cluster at {:.2}× the single node's capacity (target ≥ 0.5×): {}; with {} producers {:.2}× (each producer waits for a round of replication per request, so the cluster needs more producers in flight to reach its capacity)",
        c / s,
        met(c / s >= 0.5),
        SWEEP[0],
        cluster_rates[0] / single_rates[0]
    );
    println!(
        "one group's ceiling: {:.3} M rows/s (every event goes through the one leader, so more nodes do not raise it)",
        c * ROWS as f64 / 1e6
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Catch-up

/// Posts requests of `rows` rows from 8 producers (spread over `doors`) until `bytes` of
/// bodies were acknowledged or `until` holds (checked every 100 requests of a producer);
/// returns the bytes and seconds.
fn write_volume(
    doors: &[SocketAddr],
    name: &str,
    rows: usize,
    bytes: usize,
    until: &(dyn Fn() -> bool + Sync),
) -> Result<(usize, f64)> {
    let producers: usize = std::env::var("QPROD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let per = bytes.div_ceil(producers);
    let start = Instant::now();
    let done = AtomicBool::new(false);
    let sent = std::thread::scope(|scope| -> Result<usize> {
        let threads: Vec<_> = (0..producers)
            .map(|p| {
                let done = &done;
                scope.spawn(move || -> Result<usize> {
                    let door = doors[p % doors.len()];
                    let mut conn = Conn::new(door, Duration::from_secs(30));
                    let producer = format!("{name}-{p}");
                    let (mut sent, mut seq) = (0, 0u64);
                    while sent < per && !done.load(Ordering::Relaxed) {
                        let b = body(p, seq, rows);
                        let deadline = Instant::now() + Duration::from_secs(30);
                        loop {
                            match conn.post(
                                &format!("/ingest/{JOB}"),
                                &seq_headers(&producer, seq),
                                &b,
                            ) {
                                Ok((200, _)) => break,
                                Ok((503, _)) | Err(_) if Instant::now() < deadline => {
                                    std::thread::sleep(RETRY_PAUSE)
                                }
                                Ok((code, a)) => bail!(
                                    "{producer} request {seq}: {code} {}",
                                    String::from_utf8_lossy(&a)
                                ),
                                Err(e) => bail!("{producer} request {seq}: {e}"),
                            }
                        }
                        sent += b.len();
                        seq += 1;
                        if p == 0 && seq % 100 == 0 && until() {
                            done.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(sent)
                })
            })
            .collect();
        let mut sent = 0;
        for t in threads {
            sent += t.join().map_err(|_| anyhow!("a producer panicked"))??;
        }
        Ok(sent)
    })?;
    Ok((sent, start.elapsed().as_secs_f64()))
}

fn catch_up(env: &Env) -> Result<()> {
    let mib = if env.quick { 20 } else { 100 };
    println!(
        "\n-- catch-up: a follower is killed, ~{mib} MB of JSON events are written ({BIG}-row requests, 8 producers), the follower is restarted"
    );
    // No snapshot during the writes: the follower catches up from the log.
    let mut cluster = Cluster::start(env, "catch-up", &["--snapshot-every", "10000000"])?;
    let lead = cluster.settled(env)?;
    let down = (lead + 1) % 3;
    let log_dir = cluster.nodes[down].dir.join("group-0/log");
    let log_before = dir_bytes(&log_dir);
    cluster.nodes[down].kill();
    let doors: Vec<SocketAddr> = cluster
        .nodes
        .iter()
        .filter(|n| n.alive())
        .map(NodeProc::door)
        .collect();
    let (bytes, secs) = write_volume(&doors, "cu", BIG, mib * 1_000_000, &|| false)?;
    println!(
        "written with one follower down: {:.1} MB of JSON in {secs:.1} s ({:.1} MB/s)",
        bytes as f64 / MB,
        bytes as f64 / MB / secs
    );
    let (took, started) = cluster.restart_and_catch_up(env, down)?;
    let log_grew = dir_bytes(&log_dir).saturating_sub(log_before);
    println!(
        "catch-up from the log: {:.1} MB of JSON ({:.1} MB of log entries on the follower) in {took:.2} s from the restart ({started:.2} s of it to start the process): {:.1} MB/s of JSON, {:.1} MB/s of log",
        bytes as f64 / MB,
        log_grew as f64 / MB,
        bytes as f64 / MB / took,
        log_grew as f64 / MB / took
    );
    drop(cluster);

    // A snapshot every 200 entries: the leader purges its log past the stopped follower.
    let mut cluster = Cluster::start(env, "snapshot", &["--snapshot-every", "200"])?;
    let lead = cluster.settled(env)?;
    let down = (lead + 1) % 3;
    let had = env
        .status(&cluster.nodes[down].listen, true)
        .and_then(|s| s.last_log_index)
        .unwrap_or(0);
    cluster.nodes[down].kill();
    let leader_addr = cluster.nodes[lead].listen.clone();
    let doors: Vec<SocketAddr> = cluster
        .nodes
        .iter()
        .filter(|n| n.alive())
        .map(NodeProc::door)
        .collect();
    let purged_past = || {
        env.status(&leader_addr, true)
            .and_then(|s| s.purged_index)
            .is_some_and(|p| p > had)
    };
    let (bytes, _) = write_volume(&doors, "sn", ROWS, 50_000_000, &purged_past)?;
    wait_for(
        "the leader purging its log past the stopped follower",
        Duration::from_secs(30),
        || purged_past().then_some(()),
    )?;
    let leader = env
        .status(&leader_addr, true)
        .context("the leader's status")?;
    let snapshot_bytes = dir_bytes(&cluster.nodes[lead].dir.join("group-0/state"));
    let (took, started) = cluster.restart_and_catch_up(env, down)?;
    let back = env
        .status(&cluster.nodes[down].listen, true)
        .context("the restarted follower's status")?;
    println!(
        "catch-up from a snapshot: the follower had log index {had}, the leader purged through {} (snapshot at {}, about {:.1} MB on disk) after {:.1} MB of JSON; caught up in {took:.2} s from the restart ({started:.2} s of it to start the process); snapshots installed on it: {} ({})",
        leader.purged_index.unwrap_or(0),
        leader.snapshot_index.unwrap_or(0),
        snapshot_bytes as f64 / MB,
        bytes as f64 / MB,
        back.snapshots_installed,
        if back.snapshots_installed >= 1 {
            "confirmed"
        } else {
            "NOT installed: it caught up from the log"
        }
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Checkpoint cost

/// A real checkpoint of the job's pipeline: a local streaming run (one partition, as a
/// cluster worker runs it) of `rows` events like the job's over `keys` distinct keys; its last
/// manifest and state blob.
fn real_checkpoint(host: &Host, dir: &Path, rows: u64, keys: u64) -> Result<(Manifest, Vec<u8>)> {
    std::fs::create_dir_all(dir)?;
    let input = dir.join("events.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&input)?);
    for i in 0..rows {
        let key = i.wrapping_mul(7919) % keys;
        writeln!(
            w,
            "{{\"seq\": {i}, \"key\": \"k{key}\", \"x\": {}.5}}",
            i % 1000
        )?;
    }
    w.flush()?;
    drop(w);
    let text = pipeline_text(false)
        .replace(
            "paths = []",
            &format!("paths = [{:?}]", input.display().to_string()),
        )
        .replace(
            &format!("[partition]\nby = [\"key\"]\ncount = {PARTITIONS}\n"),
            "",
        )
        + "job = \"real\"\n";
    let mut p = Pipeline::from_toml(&text).map_err(anyhow::Error::msg)?;
    p.base_dir = dir.to_path_buf();
    let options = StreamOptions {
        stop_at_end: true,
        ..Default::default()
    };
    stream::run(&p, host, &options)?;
    let store = LocalStore::new(dir.join("out-checkpoints"));
    let manifest = store
        .latest("real")?
        .context("the streaming run left no checkpoint")?;
    let state = match manifest.state.get(&0) {
        Some(r) => store.get_state("real", r)?,
        None => bail!("the checkpoint has no state: {manifest:?}"),
    };
    Ok((manifest, state))
}

/// A store whose checkpoints are timed, with the job and generation it commits under.
struct Timed {
    store: Box<dyn CheckpointStore>,
    job: String,
    generation: u64,
    ms: Vec<f64>,
}

impl Timed {
    /// One checkpoint at `epoch` (the state put, then the manifest committed); its
    /// milliseconds.
    fn checkpoint(&mut self, epoch: u64, template: &Manifest, state: &[u8]) -> Result<f64> {
        let t = Instant::now();
        let r = self.store.put_state(&self.job, epoch, 0, state)?;
        let mut m = template.clone();
        m.job = self.job.clone();
        m.generation = self.generation;
        m.epoch = epoch;
        m.state = BTreeMap::from([(0, r)]);
        self.store.commit(&m)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Three in-process nodes on 127.0.0.1 with the job submitted and its partitions owned; shut
/// down with [`InProcess::shutdown`] (or dropped with their runtime).
struct InProcess {
    nodes: Vec<Node>,
    rt: tokio::runtime::Runtime,
}

impl InProcess {
    fn start(dir: &Path) -> Result<InProcess> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let config = |id: u64, join: Option<String>| NodeConfig {
            id,
            data_dir: dir.join(format!("n{id}")),
            listen: "127.0.0.1:0".parse().expect("an address"),
            advertise: None,
            api: "127.0.0.1:0".into(),
            join,
            repair: false,
            timing: Timing::default(),
        };
        let first = rt.block_on(Node::start(config(1, None)))?;
        wait_for("node 1 leads", Duration::from_secs(30), || {
            (first.status().role == "leader").then_some(())
        })?;
        let through = first.addr.clone();
        let mut nodes = vec![first];
        for id in [2, 3] {
            nodes.push(rt.block_on(Node::start(config(id, Some(through.clone()))))?);
        }
        let submit = ClusterCommand::SubmitJob {
            job: JOB.into(),
            pipeline_toml: pipeline_text(false),
            partitions: PARTITIONS,
            base_dir: dir.display().to_string(),
        };
        let (_, reply) = rt
            .block_on(nodes[0].writer().write(submit))
            .map_err(|e| anyhow!("submitting the job: {e}"))?;
        ensure!(reply == Reply::Applied, "the job was refused: {reply:?}");
        let cluster = InProcess { nodes, rt };
        wait_for(
            "the job's partitions owned by all three",
            Duration::from_secs(30),
            || {
                let s = cluster.nodes[0].status();
                let owners: std::collections::BTreeSet<u64> = s
                    .jobs
                    .first()?
                    .partitions
                    .iter()
                    .filter_map(|p| p.owner)
                    .collect();
                (owners.len() == 3).then_some(())
            },
        )?;
        Ok(cluster)
    }

    /// A cluster store for a partition owned by a node that leads (`leader`) or not, claimed.
    fn store(&self, leader: bool) -> Result<Timed> {
        let s = self.nodes[0].status();
        let lead = s.leader.context("no leader")?;
        let job = s.jobs.first().context("no job")?;
        let p = job
            .partitions
            .iter()
            .find(|p| p.owner.is_some_and(|o| (o == lead) == leader))
            .with_context(|| format!("no partition owned by the leader = {leader}"))?;
        let owner = p.owner.expect("found with an owner");
        let node = self.nodes.iter().find(|n| n.id == owner).expect("a member");
        let generation = p.generation.expect("owned");
        let mut store = ClusterStore::new(
            JOB,
            PartitionId(p.partition),
            Generation(generation),
            node.state(),
            node.writer(),
            node.lease(),
            self.rt.handle().clone(),
            Duration::from_secs(5),
        );
        // The worker's lease comes with its first heartbeats' answers.
        let lease = node.lease();
        wait_for("the worker's lease", Duration::from_secs(10), || {
            lease.may_write().then_some(())
        })?;
        store.claim(JOB)?;
        Ok(Timed {
            store: Box::new(store),
            job: JOB.into(),
            generation,
            ms: Vec::new(),
        })
    }

    fn shutdown(self) {
        for n in self.nodes {
            self.rt.block_on(n.shutdown());
        }
    }
}

fn checkpoint_cost(env: &Env, host: &Host) -> Result<()> {
    let (warm, timed) = (10, 50);
    println!(
        "\n-- checkpoint cost: the same checkpoints (manifest + running-count state of a real streaming run of the job's pipeline) through the local store and the cluster store, in turns; median ms of {timed} after {warm}"
    );
    let dir = env.dir.join("checkpoint-cost");
    println!(
        "{:<24} {:>9} {:>14} {:>12} {:>9} {:>12} {:>13}",
        "state", "local ms", "cluster ms", "cluster ms", "cluster/", "local bytes", "cluster bytes"
    );
    println!(
        "{:<24} {:>9} {:>14} {:>12} {:>9} {:>12} {:>13}",
        "", "", "(follower's)", "(leader's)", "local", "per ckpt", "per replica"
    );
    for (label, rows, keys) in [
        ("the job's (100 keys)", 20_000u64, KEYS),
        ("100k keys", 200_000, 100_000),
    ] {
        let sub = dir.join(format!("k{keys}"));
        let (template, state) = real_checkpoint(host, &sub.join("real"), rows, keys)?;
        // The store a single-node streaming run commits to, and workers on a follower (whose
        // commits are forwarded to the leader) and on the leader of an in-process cluster.
        let local_dir = sub.join("local");
        let mut local = LocalStore::new(&local_dir);
        let generation = local.claim("local")?;
        let cluster = InProcess::start(&sub.join("cluster"))?;
        let mut subjects = vec![
            Timed {
                store: Box::new(local),
                job: "local".into(),
                generation,
                ms: Vec::new(),
            },
            cluster.store(false)?,
            cluster.store(true)?,
        ];
        let log = sub.join("cluster/n1/group-0/log");
        let before = dir_bytes(&log);
        for epoch in 1..=(warm + timed) as u64 {
            // The order rotates each turn, so no store always runs right after another.
            for k in (0..3).map(|i| (i + epoch as usize) % 3) {
                let ms = subjects[k].checkpoint(epoch, &template, &state)?;
                if epoch as usize > warm {
                    subjects[k].ms.push(ms);
                }
            }
        }
        // Both cluster stores' checkpoints are in every replica's log.
        let per_replica =
            dir_bytes(&log).saturating_sub(before) as f64 / (2 * (warm + timed)) as f64;
        let job_dir = local_dir.join("local");
        let last = (warm + timed) as u64;
        let local_bytes = std::fs::metadata(job_dir.join(format!("manifest-{last:020}.ckpt")))?
            .len()
            + std::fs::metadata(job_dir.join(format!("state/{last:020}-0.bin")))?.len();
        let median: Vec<f64> = subjects
            .iter_mut()
            .map(|s| {
                s.ms.sort_by(f64::total_cmp);
                quantile(&s.ms, 0.5)
            })
            .collect();
        drop(subjects);
        cluster.shutdown();
        println!(
            "{label:<24} {:>9.2} {:>14.2} {:>12.2} {:>8.1}× {:>12} {:>13.0}",
            median[0],
            median[1],
            median[2],
            median[1] / median[0],
            local_bytes,
            per_replica
        );
        println!(
            "{:<24} (state {} bytes; the cluster writes it to 3 replicas, {:.0} bytes of log per checkpoint in all; the local store to 1 disk)",
            "",
            state.len(),
            per_replica * 3.0
        );
    }
    Ok(())
}

/// Prints the cluster figures.
pub fn bench_cluster(args: &Args, host: &Host) -> Result<()> {
    let env = Env::new(args)?;
    println!(
        "\n== cluster: 3 `quiver node` processes on 127.0.0.1 (2 cores shared), one Raft group, job `{JOB}`: keyed running count, {PARTITIONS} partitions; default timings (Raft heartbeat 100 ms, election 300–450 ms after a lease of 450 ms; worker heartbeat 200 ms, reassignment after 1.5 s)"
    );
    if args.runs_figure("cluster", "failover") {
        let mut cluster = Cluster::start(&env, "failover", &[])?;
        leader_failover(&env, &mut cluster)?;
        worker_failover(&env, &mut cluster)?;
    }
    if args.runs_figure("cluster", "ingest") {
        replicated_ingest(&env)?;
    }
    if args.runs_figure("cluster", "catch-up") {
        catch_up(&env)?;
    }
    if args.runs_figure("cluster", "checkpoint") {
        checkpoint_cost(&env, host)?;
    }
    Ok(())
}
