//! A TCP proxy that injects network faults between real processes: put one in front of a
//! node's port and tell the others to dial the proxy. It passes bytes through, drops every
//! connection (as a crashed host would: refused and reset), or blackholes them (accepted, then
//! silence in both directions, as a cut cable would look), and can be switched at any moment.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Bytes go through.
    Up,
    /// Open connections are reset and new ones closed at once.
    Down,
    /// Connections are accepted, but no byte goes through either way.
    Blackhole,
}

impl Link {
    fn from_u8(v: u8) -> Link {
        match v {
            0 => Link::Up,
            1 => Link::Down,
            _ => Link::Blackhole,
        }
    }
}

struct Shared {
    link: AtomicU8,
    stop: AtomicBool,
    /// Every connection's two sockets, so that `Down` can reset them.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
    accepted: AtomicUsize,
}

/// A fault-injecting proxy listening on 127.0.0.1, forwarding to one target.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        // Non-blocking accept so that the loop sees `stop` within a few milliseconds.
        listener.set_nonblocking(true).expect("non-blocking accept");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            link: AtomicU8::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, target, s));
        FaultProxy { addr, shared }
    }

    /// Where clients dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Switches the link; `Down` resets every open connection at once.
    pub fn set(&self, link: Link) {
        self.shared.link.store(link as u8, Ordering::SeqCst);
        if link == Link::Down {
            let mut open = self.shared.open.lock().unwrap();
            for (a, b) in open.drain(..) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
    }

    fn link(&self) -> Link {
        Link::from_u8(self.shared.link.load(Ordering::SeqCst))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.set(Link::Down);
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nonblocking(false);
        if Link::from_u8(shared.link.load(Ordering::SeqCst)) == Link::Down {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue; // The target is down: the client sees its connection closed.
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            shared.open.lock().unwrap().push((c, s));
        }
        for (from, to) in [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ] {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let s = shared.clone();
            thread::spawn(move || pump(from, to, s));
        }
    }
}

/// Copies one direction until either side closes; under `Blackhole` it reads and drops.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match Link::from_u8(shared.link.load(Ordering::SeqCst)) {
            Link::Up => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Link::Blackhole => {}
            Link::Down => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server; returns its address.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut c = c;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn ask(stream: &mut TcpStream, what: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(Duration::from_millis(300)))?;
        stream.write_all(what)?;
        let mut got = vec![0u8; what.len()];
        stream.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn the_proxy_passes_blackholes_and_drops_traffic_as_told() {
        let proxy = FaultProxy::start(echo());
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(ask(&mut c, b"ping").unwrap(), b"ping");

        proxy.set(Link::Blackhole);
        assert_eq!(proxy.link(), Link::Blackhole);
        let started = Instant::now();
        let e = ask(&mut c, b"lost").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
        assert!(started.elapsed() >= Duration::from_millis(250));

        proxy.set(Link::Down);
        // The open connection is reset or closed: reading ends.
        let mut rest = Vec::new();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = c.read_to_end(&mut rest);
        // A new connection is accepted by the proxy and closed at once.
        let mut d = TcpStream::connect(proxy.addr()).unwrap();
        assert!(ask(&mut d, b"x").is_err());

        proxy.set(Link::Up);
        let mut e = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(ask(&mut e, b"back").unwrap(), b"back");
        assert!(proxy.accepted() >= 3);
    }
}
