//! `quiver cluster up`: a local cluster of `quiver node` child processes on 127.0.0.1, for
//! trying cluster mode on one machine. Its directory holds each node's data (`n<id>/`), its
//! log (`n<id>.log`) and `cluster.json`, the layout the other `quiver cluster` commands read
//! with `--dir`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The file in a local cluster's directory that lists its nodes.
const LAYOUT: &str = "cluster.json";

/// A local cluster's nodes, as `cluster.json` holds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layout {
    /// Every node, by id.
    pub nodes: Vec<LocalNode>,
}

/// One node of a local cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalNode {
    /// Its id.
    pub id: u64,
    /// Its peer address (`--listen`).
    pub peer: String,
    /// Its HTTP ingest address (`--api`).
    pub api: String,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Layout {
    /// Reads `DIR/cluster.json`.
    pub fn read(dir: &Path) -> Result<Layout> {
        let path = dir.join(LAYOUT);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: is {} a cluster started with `quiver cluster up --dir`?",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(LAYOUT);
        let text = serde_json::to_vec_pretty(self).expect("a layout serializes");
        quiver::durable::write_durably(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A free port on 127.0.0.1 (the system's choice, released for the node to take).
fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.to_string())
}

/// The command that runs `node` (also what to type to restart it by hand).
fn node_args(node: &LocalNode, join: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "node".to_string(),
        "--id".into(),
        node.id.to_string(),
        "--data-dir".into(),
        node.data_dir.display().to_string(),
        "--listen".into(),
        node.peer.clone(),
        "--api".into(),
        node.api.clone(),
    ];
    if let Some(j) = join {
        args.extend(["--join".to_string(), j.to_string()]);
    }
    args
}

/// Starts `node` as a child and waits (up to a minute) until it says where it listens.
fn spawn(dir: &Path, node: &LocalNode, join: Option<&str>) -> Result<Child> {
    let log_path = dir.join(format!("n{}.log", node.id));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the quiver binary")?;
    let mut child = Command::new(exe)
        .args(node_args(node, join))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start node {}", node.id))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("ingest:") => return Ok(child),
            Ok(_) => {}
            Err(_) => {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "node {} exited ({status}) before it was up; see {}",
                        node.id,
                        log_path.display()
                    );
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    bail!(
                        "node {} was not up within 60 s; see {}",
                        node.id,
                        log_path.display()
                    );
                }
            }
        }
    }
}

/// `quiver cluster up --nodes N --dir DIR`.
pub fn up(nodes: u32, dir: &Path) -> Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::path::absolute(dir)?;
    let layout = if dir.join(LAYOUT).exists() {
        let l = Layout::read(&dir)?;
        eprintln!(
            "restarting the {} nodes of the cluster in {}",
            l.nodes.len(),
            dir.display()
        );
        l
    } else {
        let l = Layout {
            nodes: (1..=nodes as u64)
                .map(|id| {
                    Ok(LocalNode {
                        id,
                        peer: free_addr()?,
                        api: free_addr()?,
                        data_dir: dir.join(format!("n{id}")),
                    })
                })
                .collect::<Result<_>>()?,
        };
        l.write(&dir)?;
        l
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let first = layout.nodes[0].peer.clone();
    let mut children: Vec<(LocalNode, Option<Child>)> = Vec::new();
    for (i, node) in layout.nodes.iter().enumerate() {
        let join = (i > 0).then_some(first.as_str());
        match spawn(&dir, node, join) {
            Ok(child) => children.push((node.clone(), Some(child))),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    eprintln!(
        "a local cluster of {} nodes in {}:",
        children.len(),
        dir.display()
    );
    for (n, _) in &children {
        eprintln!(
            "  node {}: peer {}, ingest http://{}/ingest/<job>, log {}",
            n.id,
            n.peer,
            n.api,
            dir.join(format!("n{}.log", n.id)).display()
        );
    }
    let d = dir.display();
    eprintln!("next: quiver cluster submit PIPELINE.toml --dir {d}");
    eprintln!(
        "      curl --data-binary @events.jsonl http://{}/ingest/JOB",
        layout.nodes[0].api
    );
    eprintln!("      quiver cluster status --dir {d}");
    eprintln!("Ctrl-C stops every node.");
    while !stop.load(Ordering::Relaxed) {
        for (n, slot) in &mut children {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "node {} exited ({status}); to start it again: quiver {}",
                        n.id,
                        node_args(n, None).join(" ")
                    );
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("stopping the cluster");
    stop_all(&mut children);
    Ok(())
}

/// Asks every child to stop (SIGTERM: each takes a final checkpoint), then waits up to 15 s
/// before killing what is left.
fn stop_all(children: &mut [(LocalNode, Option<Child>)]) {
    for (_, child) in children.iter() {
        if let Some(c) = child {
            let pid = rustix::process::Pid::from_child(c);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for (n, child) in children.iter_mut() {
        if let Some(c) = child {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("node {} did not stop within 15 s: killing it", n.id);
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}
