//! The HTTP/1.1 servers of a streaming run: the ingest endpoint ([`ingest`](super::ingest)) and
//! the metrics endpoint ([`metrics`](super::metrics)). Each runs hyper on a single-threaded
//! async runtime on a thread of its own, so serving never waits for the pipeline, and shares
//! what a server facing arbitrary clients needs:
//!
//! - at most [`HttpLimits::max_connections`] connections at once, and never more than a quarter
//!   of the process's file-descriptor limit, so that clients cannot take the descriptors the
//!   run needs for its own files; more wait in the listen backlog;
//! - a connection that sends no request head for [`HttpLimits::idle_timeout`] is closed;
//! - when accepting fails (out of descriptors or memory after all) the failure is logged once
//!   and accepting is tried again every 100 ms rather than given up: waiting clients are served
//!   as soon as they can be;
//! - stopping closes the listener and lets requests in flight finish (for up to 10 s);
//! - a panicking handler costs its own connection only; should the server thread itself end
//!   before it is stopped (a bug), [`HttpServer::is_serving`] turns false.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

/// Wait before accepting again after accepting failed.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long a stopping server lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What one server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once (at least 1; never more than a quarter of the process's
    /// file-descriptor limit); more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// A connection is closed when no request head arrives for this long (an idle keep-alive
    /// connection too).
    pub idle_timeout: Duration,
    /// Threads for the handlers' blocking work (`tokio::task::spawn_blocking`), at least 1.
    pub blocking_threads: usize,
}

/// Why an [`HttpServer`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The server thread or its runtime could not be started.
    #[error("cannot start the server thread for {addr}: {source}")]
    Spawn {
        /// The address listened on.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// A running server; stopped when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves every request with `handler` on a thread named `quiver-NAME`;
    /// returns at once. `name` also starts the server's log messages.
    pub fn start<H, F>(
        name: &'static str,
        addr: &str,
        limits: HttpLimits,
        handler: H,
    ) -> Result<HttpServer, HttpError>
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let bind_err = |source| HttpError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let bound = listener.local_addr().map_err(bind_err)?;
        let spawn_err = |source| HttpError::Spawn {
            addr: bound,
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(limits.blocking_threads.max(1))
            .thread_name(format!("quiver-{name}-handler"))
            .build()
            .map_err(spawn_err)?;
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(listener).map_err(bind_err)?
        };
        // Clients must not be able to take every file descriptor of the run.
        let fd_share = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |n| usize::try_from(n / 4).unwrap_or(usize::MAX));
        let accept = AcceptLoop {
            name,
            listener,
            max_connections: limits.max_connections.min(fd_share).max(1),
            idle_timeout: limits.idle_timeout,
        };
        let (stop, stopped) = oneshot::channel();
        let thread = thread::Builder::new()
            .name(format!("quiver-{name}"))
            .spawn(move || runtime.block_on(accept.run(Arc::new(handler), stopped)))
            .map_err(spawn_err)?;
        Ok(HttpServer {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the server is bound to (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server thread is still taking connections: it ends only when stopped, or
    /// should it panic (the panic message is printed as it happens).
    pub fn is_serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops accepting connections, lets requests in flight finish (for up to 10 s) and waits
    /// for the server thread. Dropping the server does the same.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(addr = %self.addr, "HTTP server thread panicked");
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the server thread runs.
struct AcceptLoop {
    name: &'static str,
    listener: TcpListener,
    max_connections: usize,
    idle_timeout: Duration,
}

impl AcceptLoop {
    /// Accepts connections until `stopped` fires; then lets the requests in flight finish.
    async fn run<H, F>(self, handler: Arc<H>, mut stopped: oneshot::Receiver<()>)
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let name = self.name;
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.idle_timeout);
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        // Set while accepting fails, so that a failure is logged once rather than every retry.
        let mut failing = false;
        loop {
            let slot = tokio::select! {
                _ = &mut stopped => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                _ = &mut stopped => break,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before it was accepted: nothing wrong with the listener.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            error = %e,
                            "{name}: cannot accept a connection; retrying every 100 ms (waiting clients stay queued)"
                        );
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            if failing {
                failing = false;
                tracing::warn!("{name}: accepting connections again");
            }
            let handler = handler.clone();
            let service = service_fn(move |request| {
                let answer = handler(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "{name}: a connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        // Idle connections are closed at once; requests in flight are answered first.
        if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("{name}: requests still in flight after 10 s were cut off");
        }
    }
}

/// A plain-text (or any `text`) answer with `status`.
pub fn answer(status: u16, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn limits(max_connections: usize, idle_timeout: Duration) -> HttpLimits {
        HttpLimits {
            max_connections,
            idle_timeout,
            blocking_threads: 1,
        }
    }

    /// Answers with the path; `/slow` after 300 ms, `/boom` panics.
    fn server(limits: HttpLimits) -> HttpServer {
        HttpServer::start(
            "test",
            "127.0.0.1:0",
            limits,
            |request: Request<Incoming>| {
                let path = request.uri().path().to_string();
                async move {
                    match path.as_str() {
                        "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                        "/boom" => panic!("a handler bug"),
                        _ => {}
                    }
                    answer(200, path)
                }
            },
        )
        .unwrap()
    }

    fn ask(conn: &mut TcpStream, path: &str) {
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
    }

    /// Reads until the server closes the connection, or fails after `wait`.
    pub(crate) fn read_all(conn: &mut TcpStream, wait: Duration) -> io::Result<String> {
        conn.set_read_timeout(Some(wait))?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)?;
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut conn = TcpStream::connect(addr).unwrap();
        ask(&mut conn, path);
        read_all(&mut conn, Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn connections_past_the_limit_wait_until_one_closes() {
        let server = server(limits(2, Duration::from_secs(30)));
        let addr = server.local_addr();
        let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // A third connection is queued by the kernel but not served ...
        let mut third = TcpStream::connect(addr).unwrap();
        ask(&mut third, "/third");
        let waited = read_all(&mut third, Duration::from_millis(500)).unwrap_err();
        assert_eq!(waited.kind(), io::ErrorKind::WouldBlock, "{waited}");
        // ... until one of the others closes.
        drop(held);
        let answer = read_all(&mut third, Duration::from_secs(10)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("/third"), "{answer}");
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let server = server(limits(1, Duration::from_millis(300)));
        let addr = server.local_addr();
        let mut silent = TcpStream::connect(addr).unwrap();
        assert_eq!(read_all(&mut silent, Duration::from_secs(10)).unwrap(), "");
        // Its slot is free again.
        assert!(get(addr, "/next").ends_with("/next"));
    }

    #[test]
    fn a_panicking_handler_costs_its_connection_only() {
        let server = server(limits(4, Duration::from_secs(30)));
        let addr = server.local_addr();
        assert_eq!(get(addr, "/boom"), "");
        assert!(get(addr, "/after").ends_with("/after"));
        assert!(server.is_serving());
    }

    #[test]
    fn stopping_answers_requests_in_flight_then_refuses_connections() {
        let server = server(limits(4, Duration::from_secs(30)));
        let addr = server.local_addr();
        let mut slow = TcpStream::connect(addr).unwrap();
        ask(&mut slow, "/slow");
        // Let the request reach its handler before stopping.
        std::thread::sleep(Duration::from_millis(100));
        server.stop();
        let answer = read_all(&mut slow, Duration::from_secs(10)).unwrap();
        assert!(answer.ends_with("/slow"), "{answer}");
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn an_address_in_use_or_invalid_is_named() {
        let server = server(limits(1, Duration::from_secs(1)));
        let taken = server.local_addr().to_string();
        let err = HttpServer::start("test", &taken, limits(1, Duration::from_secs(1)), |_| {
            std::future::ready(answer(200, String::new()))
        })
        .unwrap_err();
        assert!(err.to_string().contains(&taken), "{err}");
        let err = HttpServer::start(
            "test",
            "256.0.0.1:0",
            limits(1, Duration::from_secs(1)),
            |_| std::future::ready(answer(200, String::new())),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("cannot listen on 256.0.0.1:0"),
            "{err}"
        );
    }
}
