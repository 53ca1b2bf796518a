//! A TCP proxy that injects network faults between real processes: put one in front of a
//! node's port and tell the others to dial the proxy. It passes bytes through, drops every
//! connection (as a crashed host would: refused and reset), or blackholes them (accepted, then
//! silence in both directions, as a cut cable would look), and can be switched at any moment —
//! for everyone, or for the connections coming from one address (a node whose connections all
//! come from the address it listens on), which cuts single links of a cluster.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
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
    /// Links that differ from `link` for connections from one address.
    rules: Mutex<HashMap<IpAddr, Link>>,
    /// Every connection's source address and two sockets, so that `Down` can reset them.
    open: Mutex<Vec<(IpAddr, TcpStream, TcpStream)>>,
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
            rules: Mutex::new(HashMap::new()),
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

    /// Switches the link for everyone (rules for single sources stay); `Down` resets every
    /// open connection at once.
    pub fn set(&self, link: Link) {
        self.shared.link.store(link as u8, Ordering::SeqCst);
        if link == Link::Down {
            self.reset(|_| true);
        }
    }

    /// Switches the link for connections from `source` only.
    pub fn set_from(&self, source: IpAddr, link: Link) {
        self.shared.rules.lock().unwrap().insert(source, link);
        if link == Link::Down {
            self.reset(|ip| ip == source);
        }
    }

    /// Drops every rule for single sources.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    fn reset(&self, which: impl Fn(IpAddr) -> bool) {
        let mut open = self.shared.open.lock().unwrap();
        open.retain(|(ip, a, b)| {
            if which(*ip) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    fn link(&self) -> Link {
        Link::from_u8(self.shared.link.load(Ordering::SeqCst))
    }
}

impl Shared {
    /// The link for connections from `source`.
    fn link_for(&self, source: IpAddr) -> Link {
        match self.rules.lock().unwrap().get(&source) {
            Some(l) => *l,
            None => Link::from_u8(self.link.load(Ordering::SeqCst)),
        }
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
        let (client, source) = match listener.accept() {
            Ok((c, from)) => (c, from.ip()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nonblocking(false);
        if shared.link_for(source) == Link::Down {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue; // The target is down: the client sees its connection closed.
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            shared.open.lock().unwrap().push((source, c, s));
        }
        for (from, to) in [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ] {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let s = shared.clone();
            thread::spawn(move || pump(from, to, source, s));
        }
    }
}

/// Copies one direction until either side closes; under `Blackhole` it reads and drops.
fn pump(mut from: TcpStream, mut to: TcpStream, source: IpAddr, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match shared.link_for(source) {
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

    /// A connection to `to` made from `source` (any 127.x.y.z is local on Linux).
    fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
        let socket = bound_connect(source, to);
        socket.set_nodelay(true).unwrap();
        socket
    }

    /// Binds a std socket to `source:0` and connects (std has no bind-before-connect, so this
    /// goes through tokio's socket in a throwaway runtime).
    fn bound_connect(source: &str, to: SocketAddr) -> TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let stream = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(format!("{source}:0").parse().unwrap()).unwrap();
            s.connect(to).await.unwrap()
        });
        let std = stream.into_std().unwrap();
        std.set_nonblocking(false).unwrap();
        std
    }

    #[test]
    fn a_rule_for_one_source_cuts_only_its_connections() {
        let proxy = FaultProxy::start(echo());
        let mut one = connect_from("127.0.0.1", proxy.addr());
        let mut two = connect_from("127.0.0.2", proxy.addr());
        assert_eq!(ask(&mut one, b"a").unwrap(), b"a");
        assert_eq!(ask(&mut two, b"b").unwrap(), b"b");
        proxy.set_from("127.0.0.2".parse().unwrap(), Link::Down);
        assert_eq!(
            ask(&mut one, b"c").unwrap(),
            b"c",
            "the other source still passes"
        );
        assert!(ask(&mut two, b"d").is_err(), "its open connection is reset");
        let mut again = connect_from("127.0.0.2", proxy.addr());
        assert!(ask(&mut again, b"e").is_err(), "and new ones are closed");
        proxy.clear_rules();
        let mut healed = connect_from("127.0.0.2", proxy.addr());
        assert_eq!(ask(&mut healed, b"f").unwrap(), b"f");
    }
}
