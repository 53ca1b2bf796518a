//! Dialing a peer, and not dialing it again too soon.
//!
//! Every TCP connection to a peer is opened here: tonic's channels call [`Dialer`] whenever
//! they need a connection, the first time and after one broke. The peer's [`Backoff`], shared
//! by all of a [`PeerClient`](crate::PeerClient)'s channels, decides whether to dial at all:
//! after a failure, dials within a window that doubles from [`ClientConfig::backoff_min`] up
//! to [`ClientConfig::backoff_max`] are refused at once, without touching the network, so a
//! node whose peer is down does not spin on `connect` while openraft keeps sending heartbeats.
//! A call that gets through (any answer from the peer, even an error) resets the window.
//!
//! [`ClientConfig::backoff_min`]: crate::ClientConfig::backoff_min
//! [`ClientConfig::backoff_max`]: crate::ClientConfig::backoff_max

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;

/// When the next dial to one peer may happen. Pure: the caller passes the clock in.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failures since the last success; the window is `min * 2^(failures - 1)`, capped.
    failures: u32,
    /// No dial before this instant (`None`: dial freely).
    retry_at: Option<Instant>,
    /// Why the last dial or connection failed, repeated to the callers that are turned away.
    last_reason: String,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            retry_at: None,
            last_reason: String::new(),
        }
    }

    /// `Err` with the last failure's reason and the time left if no dial may happen at `now`.
    pub(crate) fn check(&self, now: Instant) -> Result<(), (String, Duration)> {
        match self.retry_at {
            Some(at) if now < at => Err((self.last_reason.clone(), at - now)),
            _ => Ok(()),
        }
    }

    /// Records a failed dial or a broken connection at `now`; returns the new window.
    pub(crate) fn failed(&mut self, now: Instant, reason: String) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(31);
        let window = self
            .min
            .checked_mul(1 << doublings)
            .map_or(self.max, |w| w.min(self.max));
        self.retry_at = Some(now + window);
        self.last_reason = reason;
        window
    }

    /// Records that the peer answered: the next failure starts again from the smallest window.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

/// Why a dial did not give a connection. Travels inside tonic's error chain, where the client
/// finds it again to report [`TransportError::Unreachable`](crate::TransportError::Unreachable).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    /// The dial was attempted and failed (refused, DNS, timeout).
    #[error("{0}")]
    Failed(String),
    /// The dial was not attempted: the peer failed recently.
    #[error("not dialing for another {remaining:?} after: {reason}")]
    BackingOff { reason: String, remaining: Duration },
}

/// The connector given to tonic's channels for one peer: resolves, connects with a timeout,
/// and consults and updates the peer's shared [`Backoff`].
#[derive(Clone)]
pub(crate) struct Dialer {
    /// `host:port` as given by the user; resolved on every dial, so a name may move.
    pub(crate) addr: Arc<str>,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff: Arc<Mutex<Backoff>>,
    /// The address connections come from, if not the system's choice.
    pub(crate) local_ip: Option<std::net::IpAddr>,
}

impl Dialer {
    /// Connects from [`Dialer::local_ip`] when one is set, else from the system's choice.
    async fn connect(&self) -> std::io::Result<TcpStream> {
        let Some(ip) = self.local_ip else {
            return TcpStream::connect(&*self.addr).await;
        };
        let mut last = None;
        for target in tokio::net::lookup_host(&*self.addr).await? {
            let socket = match target {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if target.is_ipv4() != ip.is_ipv4() {
                continue;
            }
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
            match socket.connect(target).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("{} has no address reachable from {ip}", self.addr),
            )
        }))
    }

    async fn dial(self) -> Result<TokioIo<TcpStream>, DialError> {
        let refused = lock(&self.backoff).check(Instant::now());
        if let Err((reason, remaining)) = refused {
            return Err(DialError::BackingOff { reason, remaining });
        }
        let connect = tokio::time::timeout(self.connect_timeout, self.connect());
        let failure = match connect.await {
            Ok(Ok(stream)) => {
                // Raft messages are small and latency-bound: do not wait to fill a segment.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(peer = %self.addr, "cannot set TCP_NODELAY: {err}");
                }
                return Ok(TokioIo::new(stream));
            }
            Ok(Err(err)) => format!("connect to {}: {err}", self.addr),
            Err(_) => format!(
                "connect to {} timed out after {:?}",
                self.addr, self.connect_timeout
            ),
        };
        let window = lock(&self.backoff).failed(Instant::now(), failure.clone());
        tracing::debug!(peer = %self.addr, ?window, "{failure}");
        Err(DialError::Failed(failure))
    }
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // The address is the dialer's own; the URI only names it for HTTP/2's `:authority`.
        Box::pin(self.clone().dial())
    }
}

/// Locks a backoff; a panic elsewhere while it was held leaves valid data, so go on with it.
pub(crate) fn lock(backoff: &Mutex<Backoff>) -> std::sync::MutexGuard<'_, Backoff> {
    backoff.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn window_doubles_from_min_to_max_and_success_resets_it() {
        let mut backoff = Backoff::new(100 * MS, 2000 * MS);
        let t0 = Instant::now();
        assert!(backoff.check(t0).is_ok());
        let windows: Vec<u128> = (0..8)
            .map(|_| backoff.failed(t0, "refused".into()).as_millis())
            .collect();
        assert_eq!(windows, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);

        backoff.succeeded();
        assert!(backoff.check(t0).is_ok());
        assert_eq!(backoff.failed(t0, "refused".into()), 100 * MS);
    }

    #[test]
    fn dials_inside_the_window_are_refused_with_the_last_reason() {
        let mut backoff = Backoff::new(100 * MS, 2000 * MS);
        let t0 = Instant::now();
        backoff.failed(t0, "connection refused".into());
        let (reason, remaining) = backoff.check(t0 + 30 * MS).unwrap_err();
        assert_eq!(reason, "connection refused");
        assert_eq!(remaining, 70 * MS);
        assert!(backoff.check(t0 + 100 * MS).is_ok());
    }

    #[test]
    fn many_failures_do_not_overflow_the_window() {
        let mut backoff = Backoff::new(100 * MS, 2000 * MS);
        let t0 = Instant::now();
        for _ in 0..100 {
            backoff.failed(t0, String::new());
        }
        assert_eq!(backoff.failed(t0, String::new()), 2000 * MS);
    }
}
