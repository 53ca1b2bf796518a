//! The Prometheus endpoint of a streaming run: `GET /metrics` on the address in `[stream]
//! metrics-addr` (or `--metrics-addr`).
//!
//! The driver renders a [`MetricsSnapshot`] to the text exposition format after every micro-batch and
//! checkpoint ([`render`] is pure); a small server thread answers each request with the latest
//! text, so scraping never waits for or slows the pipeline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};

use super::http::{answer, HttpError, HttpLimits, HttpServer};
use super::ingest::IngestStats;

use quiver_plugin_host::plugin::Metrics;

/// What a streaming run exposes.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// The job.
    pub job: String,
    /// Lines read from the source.
    pub rows_in: u64,
    /// Rows written to the sink.
    pub rows_out: u64,
    /// Bytes of input not read yet.
    pub lag_bytes: u64,
    /// Checkpoints committed by this run.
    pub checkpoints: u64,
    /// The last committed epoch.
    pub last_epoch: u64,
    /// How long the last checkpoint took (close, fsync, manifest, rename), in seconds.
    pub last_checkpoint_seconds: f64,
    /// Bytes of output the last checkpoint committed.
    pub last_checkpoint_bytes: u64,
    /// Batches a plugin dropped under the `skip` policy.
    pub skipped_batches: u64,
    /// Retried plugin calls.
    pub retries: u64,
    /// Input lines that did not parse.
    pub malformed: u64,
    /// Events behind the watermark.
    pub late: u64,
    /// Rows written to the dead letters.
    pub dead_letters: u64,
    /// Windows open (waiting for the watermark).
    pub open_windows: u64,
    /// Each plugin's name and figures, in chain order.
    pub plugins: Vec<(String, Metrics)>,
    /// The HTTP ingest endpoint's figures, when the source is one.
    pub ingest: Option<IngestStats>,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The snapshot in Prometheus' text exposition format (version 0.0.4).
pub fn render(s: &MetricsSnapshot) -> String {
    let job = label(&s.job);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{{job=\"{job}\"{labels}}} {value}\n"));
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "quiver_stream_rows_in_total",
        "counter",
        "Lines read from the source.",
        &one(s.rows_in as f64),
    );
    metric(
        "quiver_stream_rows_out_total",
        "counter",
        "Rows written to the sink.",
        &one(s.rows_out as f64),
    );
    metric(
        "quiver_stream_lag_bytes",
        "gauge",
        "Bytes of input not read yet.",
        &one(s.lag_bytes as f64),
    );
    metric(
        "quiver_stream_checkpoints_total",
        "counter",
        "Checkpoints committed by this run.",
        &one(s.checkpoints as f64),
    );
    metric(
        "quiver_stream_last_checkpoint_epoch",
        "gauge",
        "The last committed checkpoint.",
        &one(s.last_epoch as f64),
    );
    metric(
        "quiver_stream_checkpoint_duration_seconds",
        "gauge",
        "How long the last checkpoint took.",
        &one(s.last_checkpoint_seconds),
    );
    metric(
        "quiver_stream_checkpoint_size_bytes",
        "gauge",
        "Bytes of output the last checkpoint committed.",
        &one(s.last_checkpoint_bytes as f64),
    );
    metric(
        "quiver_stream_errors_total",
        "counter",
        "Plugin failures handled by the error policy, by kind.",
        &[
            (",kind=\"skipped_batch\"".into(), s.skipped_batches as f64),
            (",kind=\"retry\"".into(), s.retries as f64),
            (",kind=\"malformed_line\"".into(), s.malformed as f64),
            (",kind=\"late_event\"".into(), s.late as f64),
        ],
    );
    metric(
        "quiver_stream_dead_letters_total",
        "counter",
        "Rows written to the dead letters.",
        &one(s.dead_letters as f64),
    );
    metric(
        "quiver_stream_open_windows",
        "gauge",
        "Event-time windows waiting for the watermark.",
        &one(s.open_windows as f64),
    );
    if let Some(i) = &s.ingest {
        metric(
            "quiver_ingest_requests_total",
            "counter",
            "POST /ingest requests answered, by outcome.",
            &[
                (",outcome=\"accepted\"".into(), i.accepted as f64),
                (",outcome=\"refused\"".into(), i.refused as f64),
                (",outcome=\"backpressure\"".into(), i.backpressure as f64),
                (",outcome=\"failed\"".into(), i.failed as f64),
            ],
        );
        metric(
            "quiver_ingest_rows_total",
            "counter",
            "Rows acknowledged by the ingest endpoint.",
            &one(i.rows as f64),
        );
        metric(
            "quiver_ingest_fsyncs_total",
            "counter",
            "Fsyncs of the write-ahead log (concurrent requests share them).",
            &one(i.fsyncs as f64),
        );
    }
    let per_plugin = |f: &dyn Fn(&Metrics) -> f64| -> Vec<(String, f64)> {
        s.plugins
            .iter()
            .enumerate()
            .map(|(i, (name, m))| {
                (
                    format!(",plugin=\"{}\",position=\"{i}\"", label(name)),
                    f(m),
                )
            })
            .collect()
    };
    metric(
        "quiver_plugin_seconds_total",
        "counter",
        "Time inside each plugin's transform calls.",
        &per_plugin(&|m| m.time.as_secs_f64()),
    );
    metric(
        "quiver_plugin_calls_total",
        "counter",
        "Transform calls of each plugin.",
        &per_plugin(&|m| m.calls as f64),
    );
    metric(
        "quiver_plugin_rows_out_total",
        "counter",
        "Rows each plugin produced.",
        &per_plugin(&|m| m.rows_out as f64),
    );
    out
}

/// The text the server answers with; the driver replaces it.
pub type Shared = Arc<Mutex<String>>;

/// Starts the endpoint on `addr`; returns the server (which stops when dropped) and the text
/// to keep up to date.
pub fn serve(addr: &str) -> Result<(HttpServer, Shared), HttpError> {
    let shared: Shared = Arc::new(Mutex::new(String::new()));
    let text = shared.clone();
    let limits = HttpLimits {
        max_connections: 16,
        idle_timeout: Duration::from_secs(10),
        blocking_threads: 1,
    };
    let server = HttpServer::start(
        "metrics",
        addr,
        limits,
        move |request: Request<Incoming>| {
            let mut response =
                if request.method() == Method::GET && request.uri().path() == "/metrics" {
                    let mut page = answer(200, text.lock().map(|t| t.clone()).unwrap_or_default());
                    page.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    page
                } else {
                    answer(404, "only GET /metrics is served here\n".to_string())
                };
            // Scrapes are seconds apart: no point in keeping a connection open between them.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            std::future::ready(response)
        },
    )?;
    Ok((server, shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_endpoint_serves_the_latest_snapshot_in_the_text_format() {
        let (server, shared) = serve("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let mut s = MetricsSnapshot {
            job: "j\"1".into(),
            rows_in: 10,
            rows_out: 7,
            skipped_batches: 2,
            plugins: vec![(
                "scale".into(),
                Metrics {
                    calls: 3,
                    time: Duration::from_millis(1500),
                    ..Metrics::default()
                },
            )],
            ..MetricsSnapshot::default()
        };
        *shared.lock().unwrap() = render(&s);
        let page = get(addr, "/metrics");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("quiver_stream_rows_in_total{job=\"j\\\"1\"} 10\n"),
            "{page}"
        );
        assert!(
            page.contains("quiver_stream_errors_total{job=\"j\\\"1\",kind=\"skipped_batch\"} 2\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "quiver_plugin_seconds_total{job=\"j\\\"1\",plugin=\"scale\",position=\"0\"} 1.5\n"
            ),
            "{page}"
        );
        // Every sample line is `name{labels} number`, after its HELP and TYPE lines.
        for l in page.split("\r\n\r\n").nth(1).unwrap().lines() {
            if !l.starts_with('#') {
                let (_, v) = l.rsplit_once(' ').unwrap();
                v.parse::<f64>().unwrap();
            }
        }
        assert!(!page.contains("quiver_ingest"), "{page}");
        s.rows_in = 11;
        s.ingest = Some(IngestStats {
            accepted: 5,
            backpressure: 2,
            fsyncs: 3,
            rows: 40,
            ..IngestStats::default()
        });
        *shared.lock().unwrap() = render(&s);
        let page = get(addr, "/metrics");
        assert!(page.contains("quiver_stream_rows_in_total{job=\"j\\\"1\"} 11\n"));
        for line in [
            "quiver_ingest_requests_total{job=\"j\\\"1\",outcome=\"accepted\"} 5\n",
            "quiver_ingest_requests_total{job=\"j\\\"1\",outcome=\"backpressure\"} 2\n",
            "quiver_ingest_requests_total{job=\"j\\\"1\",outcome=\"failed\"} 0\n",
            "quiver_ingest_rows_total{job=\"j\\\"1\"} 40\n",
            "quiver_ingest_fsyncs_total{job=\"j\\\"1\"} 3\n",
        ] {
            assert!(page.contains(line), "{line} in {page}");
        }
        assert!(get(addr, "/other").starts_with("HTTP/1.1 404"));
    }
}
