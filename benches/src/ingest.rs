//! The HTTP ingest endpoint (`ingest.rs`): acknowledged rows/s when 8 clients post at once vs
//! 1 client, every row fsynced into the write-ahead log before its answer. Concurrent requests
//! share fsyncs (group commit); the fsyncs per request show how many.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver::stream::ingest::{IngestConfig, IngestServer};

use crate::Args;

/// Rows per request.
const ROWS: usize = 100;

/// One keep-alive connection posting JSON lines.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Result<Client> {
        let conn = TcpStream::connect(addr)?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            reader: BufReader::new(conn),
        })
    }

    /// Posts `body`; fails unless the answer is `200`.
    fn post(&mut self, body: &[u8]) -> Result<()> {
        let head = format!(
            "POST /ingest HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let conn = self.reader.get_mut();
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer)?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("{} {}", status.trim(), String::from_utf8_lossy(&answer));
        }
        Ok(())
    }
}

/// `clients` threads each posting `requests` requests of [`ROWS`] rows to a fresh endpoint;
/// returns (seconds, fsyncs per request).
fn run(dir: &Path, clients: usize, requests: usize) -> Result<(f64, f64)> {
    let wal = dir.join(format!("wal-{clients}"));
    if wal.exists() {
        std::fs::remove_dir_all(&wal)?;
    }
    let server = IngestServer::start(IngestConfig {
        addr: "127.0.0.1:0".into(),
        wal,
        segment_bytes: 64 << 20,
        handlers: 4,
        max_connections: 256,
        idle_timeout: Duration::from_secs(30),
        max_body_bytes: 64 << 20,
        max_unread_bytes: u64::MAX / 2,
        schema: None,
    })?;
    let addr = server.local_addr();
    let body: String = (0..ROWS)
        .map(|i| {
            format!(
                "{{\"seq\":{i},\"k\":{},\"x\":{i}.25,\"s\":\"user{i}@example.com\"}}\n",
                i % 97
            )
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut client = Client::connect(addr)?;
                    for _ in 0..requests {
                        client.post(body.as_bytes())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a client thread panicked")?;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let total = clients * requests;
    let stats = server.stats();
    ensure!(
        stats.rows == (total * ROWS) as u64,
        "{} rows acknowledged of {}",
        stats.rows,
        total * ROWS
    );
    let per_request = stats.fsyncs as f64 / total as f64;
    server.stop();
    Ok((secs, per_request))
}

/// Prints acknowledged rows/s with 8 clients against 1 client.
pub fn bench_ingest(args: &Args) -> Result<()> {
    let dir = std::path::absolute("target/bench-data/ingest")?;
    std::fs::create_dir_all(&dir).context("creating the bench directory")?;
    let requests = if args.quick { 200 } else { 1000 };
    println!("\n== HTTP ingest: {ROWS}-row requests, each fsynced into the write-ahead log before its answer");
    let mut figures = Vec::new();
    for clients in [1, 8] {
        // The median of `runs` runs by time, after a shorter warm-up run.
        run(&dir, clients, requests / 10)?;
        let mut runs: Vec<(f64, f64)> = (0..args.runs.max(1))
            .map(|_| run(&dir, clients, requests))
            .collect::<Result<_>>()?;
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, syncs) = runs[runs.len() / 2];
        let rows_per_sec = (clients * requests * ROWS) as f64 / secs;
        println!(
            "{clients} client(s) × {requests} requests: {:.0} requests/s, {:.2} M rows/s, {syncs:.2} fsyncs per request",
            (clients * requests) as f64 / secs,
            rows_per_sec / 1e6
        );
        figures.push(rows_per_sec);
    }
    println!(
        "8 clients vs 1 client: {:.2}× the acknowledged rows/s",
        figures[1] / figures[0]
    );
    Ok(())
}
