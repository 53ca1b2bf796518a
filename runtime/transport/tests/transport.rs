//! The transport over real sockets on 127.0.0.1: round trips, big snapshots, unreachable
//! peers and the backoff, timeouts, restarts and remote errors. Every test is bounded in time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_transport::{
    serve, ClientConfig, ControlCall, ControlHandler, GroupId, HandlerError, HandlerResult,
    PeerClient, PeerHandler, Rpc, ServerConfig, ServerHandle, TransportError,
};
use tokio::net::{TcpListener, TcpStream};

const MS: Duration = Duration::from_millis(1);

/// The group whose Raft handlers never answer.
const HANGING_GROUP: GroupId = GroupId(99);
/// The group whose Raft handlers fail.
const FAILING_GROUP: GroupId = GroupId(13);

/// A node that records what it receives and answers with the call's name, the group and the
/// payload, except in [`HANGING_GROUP`] and [`FAILING_GROUP`] and for the control methods
/// `hang` and `fail`.
#[derive(Default)]
struct TestNode {
    received: Mutex<Vec<(&'static str, GroupId, Bytes)>>,
}

impl TestNode {
    async fn answer(&self, call: &'static str, group: GroupId, payload: Bytes) -> HandlerResult {
        self.received
            .lock()
            .unwrap()
            .push((call, group, payload.clone()));
        if group == HANGING_GROUP {
            std::future::pending::<()>().await;
        }
        if group == FAILING_GROUP {
            return Err(HandlerError::new(format!("{call}: no such group: {group}")));
        }
        Ok(reply(call, group, &payload))
    }
}

fn reply(call: &str, group: GroupId, payload: &[u8]) -> Bytes {
    let mut reply = format!("{call}/{}/", group.0).into_bytes();
    reply.extend_from_slice(payload);
    reply.into()
}

impl PeerHandler for TestNode {
    async fn append_entries(&self, group: GroupId, payload: Bytes) -> HandlerResult {
        self.answer("append_entries", group, payload).await
    }

    async fn vote(&self, group: GroupId, payload: Bytes) -> HandlerResult {
        self.answer("vote", group, payload).await
    }

    async fn install_snapshot(&self, group: GroupId, payload: Bytes) -> HandlerResult {
        let len = payload.len();
        self.received
            .lock()
            .unwrap()
            .push(("install_snapshot", group, payload));
        Ok(format!("installed {len} bytes for {group}").into())
    }
}

impl ControlHandler for TestNode {
    async fn call(&self, call: ControlCall) -> HandlerResult {
        match call.method.as_str() {
            "hang" => std::future::pending().await,
            "fail" => Err(HandlerError::new("the log is full")),
            "echo" => self.answer("echo", call.group, call.payload).await,
            other => Err(HandlerError::new(format!("unknown method `{other}`"))),
        }
    }
}

/// Runs a test body, failing it if it takes longer than `limit`.
async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .expect("the test took too long")
}

async fn start(addr: SocketAddr, config: ServerConfig) -> (Arc<TestNode>, ServerHandle) {
    let node = Arc::new(TestNode::default());
    let server = serve(addr, node.clone(), node.clone(), config)
        .await
        .unwrap();
    (node, server)
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client(addr: SocketAddr, config: ClientConfig) -> PeerClient {
    PeerClient::new(addr.to_string(), config).unwrap()
}

/// A port on 127.0.0.1 with nothing listening on it (free when this returns).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(any_port()).await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn each_rpc_arrives_with_its_group_and_payload_and_returns_the_reply() {
    bounded(Duration::from_secs(20), async {
        let (node, server) = start(any_port(), ServerConfig::default()).await;
        let peer = client(server.local_addr(), ClientConfig::default());

        let ae = peer
            .append_entries(GroupId(0), Bytes::from_static(b"entries"), None)
            .await
            .unwrap();
        assert_eq!(ae, reply("append_entries", GroupId(0), b"entries"));
        let vote = peer
            .vote(GroupId(7), Bytes::from_static(b"term 3"), None)
            .await
            .unwrap();
        assert_eq!(vote, reply("vote", GroupId(7), b"term 3"));
        let snapshot = peer
            .install_snapshot(GroupId(2), Bytes::from_static(b"state"), None)
            .await
            .unwrap();
        assert_eq!(snapshot, "installed 5 bytes for group 2");
        let echo = peer
            .call("echo", GroupId(5), Bytes::from_static(b"hello"), None)
            .await
            .unwrap();
        assert_eq!(echo, reply("echo", GroupId(5), b"hello"));
        let empty = peer
            .install_snapshot(GroupId(4), Bytes::new(), None)
            .await
            .unwrap();
        assert_eq!(empty, "installed 0 bytes for group 4");

        let received = node.received.lock().unwrap().clone();
        assert_eq!(
            received,
            [
                ("append_entries", GroupId(0), Bytes::from_static(b"entries")),
                ("vote", GroupId(7), Bytes::from_static(b"term 3")),
                ("install_snapshot", GroupId(2), Bytes::from_static(b"state")),
                ("echo", GroupId(5), Bytes::from_static(b"hello")),
                ("install_snapshot", GroupId(4), Bytes::new()),
            ]
        );
        server.shutdown(Duration::from_secs(1)).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_50_mb_snapshot_arrives_intact() {
    bounded(Duration::from_secs(60), async {
        let (node, server) = start(any_port(), ServerConfig::default()).await;
        let peer = client(server.local_addr(), ClientConfig::default());
        // Not a repeating pattern, so a chunk out of place or lost would show.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let snapshot: Bytes = (0..50 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>()
            .into();

        let answer = peer
            .install_snapshot(GroupId(0), snapshot.clone(), Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(answer, format!("installed {} bytes for group 0", 50 << 20));
        let received = node.received.lock().unwrap();
        assert_eq!(received.len(), 1);
        assert!(received[0].2 == snapshot, "the snapshot arrived altered");
    })
    .await
}

#[tokio::test]
async fn an_append_entries_above_tonics_default_limit_passes_and_one_above_the_servers_limit_is_refused(
) {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let peer = client(server.local_addr(), ClientConfig::default());
        let eight_mb = Bytes::from(vec![7u8; 8 << 20]);
        let answer = peer
            .append_entries(GroupId(0), eight_mb, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(answer.len(), "append_entries/0/".len() + (8 << 20));

        // Snapshot chunks (1 MiB) still fit in a message; whole snapshots of 2 MiB do not.
        let small = ServerConfig {
            max_message_size: 3 << 19,
            max_snapshot_size: 1 << 20,
            ..ServerConfig::default()
        };
        let (_, server) = start(any_port(), small).await;
        let peer = client(server.local_addr(), ClientConfig::default());
        let err = peer
            .append_entries(GroupId(0), vec![0; 2 << 20].into(), None)
            .await
            .unwrap_err();
        match err {
            TransportError::Remote { call, message, .. } => {
                assert_eq!(call, Rpc::AppendEntries);
                assert!(message.contains("too large"), "{message}");
            }
            other => panic!("expected a remote error, got {other}"),
        }
        let err = peer
            .install_snapshot(GroupId(3), vec![0; 2 << 20].into(), None)
            .await
            .unwrap_err();
        match err {
            TransportError::Remote { call, message, .. } => {
                assert_eq!(call, Rpc::InstallSnapshot);
                assert!(message.contains("over this node's limit"), "{message}");
                assert!(message.contains("group 3"), "{message}");
            }
            other => panic!("expected a remote error, got {other}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_handler_error_arrives_as_remote_with_its_message() {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let addr = server.local_addr();
        let peer = client(addr, ClientConfig::default());

        let err = peer
            .call("fail", GroupId(0), Bytes::new(), None)
            .await
            .unwrap_err();
        match &err {
            TransportError::Remote {
                peer,
                call,
                message,
            } => {
                assert_eq!(peer, &addr.to_string());
                assert_eq!(call, &Rpc::Control("fail".into()));
                assert_eq!(message, "the log is full");
            }
            other => panic!("expected a remote error, got {other}"),
        }
        assert_eq!(
            err.to_string(),
            format!("control call `fail` failed on {addr}: the log is full")
        );

        let err = peer
            .vote(FAILING_GROUP, Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Remote { call: Rpc::Vote, message, .. }
                if message == "vote: no such group: group 13"),
            "{err}"
        );
    })
    .await
}

#[tokio::test]
async fn a_port_with_nothing_listening_is_unreachable_at_once_and_not_redialed_inside_the_backoff()
{
    bounded(Duration::from_secs(20), async {
        let addr = closed_port().await;
        // A wide first window, so that a slow moment of a busy machine does not close it
        // before the calls that must be turned away.
        let config = ClientConfig {
            backoff_min: 1000 * MS,
            backoff_max: 4000 * MS,
            ..ClientConfig::default()
        };
        let peer = client(addr, config);

        let started = Instant::now();
        let err = peer
            .vote(GroupId(0), Bytes::new(), Some(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(started.elapsed() < 500 * MS, "took {:?}", started.elapsed());
        match &err {
            TransportError::Unreachable { peer, reason } => {
                assert_eq!(peer, &addr.to_string());
                assert!(reason.contains("connect to"), "{reason}");
            }
            other => panic!("expected unreachable, got {other}"),
        }

        // Something listens again on the port, counting the connections it gets.
        let accepted = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind(addr).await.unwrap();
        let counter = accepted.clone();
        let acceptor = tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket); // not a gRPC server: hang up at once
            }
        });

        // Inside the window, on either connection: refused without dialing.
        let started = Instant::now();
        let err = peer
            .vote(GroupId(0), Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("not dialing")),
            "{err}"
        );
        let err = peer
            .call("echo", GroupId(0), Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("not dialing")),
            "{err}"
        );
        assert!(started.elapsed() < 300 * MS, "took {:?}", started.elapsed());
        tokio::time::sleep(50 * MS).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "dialed inside the window");

        // After the window, the next call dials.
        tokio::time::sleep(1000 * MS).await;
        let err = peer
            .vote(GroupId(0), Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
        tokio::time::sleep(50 * MS).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // That failure opened a longer window: no dial again.
        let err = peer
            .vote(GroupId(0), Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("not dialing")),
            "{err}"
        );
        tokio::time::sleep(50 * MS).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        acceptor.abort();
    })
    .await
}

#[tokio::test]
async fn a_handler_that_never_answers_times_out_while_raft_calls_still_go_through() {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let peer = client(server.local_addr(), ClientConfig::default());

        // A control call that will hang for its whole timeout.
        let slow = {
            let peer = peer.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = peer
                    .call("hang", GroupId(0), Bytes::new(), Some(1500 * MS))
                    .await;
                (result, started.elapsed())
            })
        };
        tokio::time::sleep(100 * MS).await;

        // Raft calls meanwhile: answered, and a hanging one times out on its own timeout.
        let started = Instant::now();
        let vote = peer
            .vote(GroupId(0), Bytes::from_static(b"v"), Some(500 * MS))
            .await
            .unwrap();
        assert_eq!(vote, reply("vote", GroupId(0), b"v"));
        assert!(started.elapsed() < 500 * MS);

        let started = Instant::now();
        let err = peer
            .append_entries(HANGING_GROUP, Bytes::new(), Some(300 * MS))
            .await
            .unwrap_err();
        let took = started.elapsed();
        match err {
            TransportError::Timeout { call, after, .. } => {
                assert_eq!(call, Rpc::AppendEntries);
                assert_eq!(after, 300 * MS);
            }
            other => panic!("expected a timeout, got {other}"),
        }
        assert!(took >= 300 * MS && took < 1000 * MS, "took {took:?}");

        // The connection is still good after the timeout.
        peer.vote(GroupId(0), Bytes::new(), Some(500 * MS))
            .await
            .unwrap();
        assert!(!slow.is_finished(), "the slow call ended early");

        let (result, took) = slow.await.unwrap();
        match result {
            Err(TransportError::Timeout { call, after, .. }) => {
                assert_eq!(call, Rpc::Control("hang".into()));
                assert_eq!(after, 1500 * MS);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(took >= 1500 * MS && took < 3000 * MS, "took {took:?}");
    })
    .await
}

#[tokio::test]
async fn the_default_timeout_applies_to_a_call_given_none() {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let config = ClientConfig {
            default_timeout: 200 * MS,
            ..ClientConfig::default()
        };
        let peer = client(server.local_addr(), config);
        let err = peer
            .vote(HANGING_GROUP, Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Timeout { after, .. } if after == 200 * MS),
            "{err}"
        );
    })
    .await
}

#[tokio::test]
async fn a_server_restarted_on_the_same_port_is_reachable_again_after_the_backoff() {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let addr = server.local_addr();
        let config = ClientConfig::default();
        let backoff_max = config.backoff_max;
        let peer = client(addr, config);
        peer.vote(GroupId(0), Bytes::new(), None).await.unwrap();

        server.shutdown(Duration::from_secs(1)).await.unwrap();
        let err = peer.vote(GroupId(0), Bytes::new(), None).await.unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");

        let (_, _server) = start(addr, ServerConfig::default()).await;
        let restarted = Instant::now();
        loop {
            match peer
                .vote(GroupId(0), Bytes::from_static(b"back"), None)
                .await
            {
                Ok(answer) => {
                    assert_eq!(answer, reply("vote", GroupId(0), b"back"));
                    break;
                }
                Err(TransportError::Unreachable { .. }) => tokio::time::sleep(20 * MS).await,
                Err(other) => panic!("expected unreachable until it is back, got {other}"),
            }
        }
        assert!(
            restarted.elapsed() < backoff_max + 500 * MS,
            "took {:?}",
            restarted.elapsed()
        );
        // Both connections work again.
        peer.call("echo", GroupId(0), Bytes::new(), None)
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn shutdown_abandons_a_call_that_never_ends_after_the_grace_period() {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let peer = client(server.local_addr(), ClientConfig::default());
        let slow = {
            let peer = peer.clone();
            tokio::spawn(async move {
                peer.call("hang", GroupId(0), Bytes::new(), Some(Duration::from_secs(10)))
                    .await
            })
        };
        tokio::time::sleep(100 * MS).await;

        let started = Instant::now();
        server.shutdown(200 * MS).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        let err = slow.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, TransportError::Unreachable { reason, .. } if reason.contains("shutting down")),
            "{err}"
        );
    })
    .await
}

/// Forwards connections to `target`, counting them.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn raft_traffic_has_a_connection_of_its_own_and_connections_are_reused() {
    bounded(Duration::from_secs(20), async {
        let (_, server) = start(any_port(), ServerConfig::default()).await;
        let (proxy, connections) = counting_proxy(server.local_addr()).await;
        let peer = client(proxy, ClientConfig::default());
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "dialed before a call"
        );

        peer.vote(GroupId(0), Bytes::new(), None).await.unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        peer.call("echo", GroupId(0), Bytes::new(), None)
            .await
            .unwrap();
        assert_eq!(connections.load(Ordering::SeqCst), 2);
        for _ in 0..3 {
            peer.append_entries(GroupId(0), Bytes::new(), None)
                .await
                .unwrap();
            peer.install_snapshot(GroupId(0), Bytes::from_static(b"s"), None)
                .await
                .unwrap();
            peer.call("echo", GroupId(0), Bytes::new(), None)
                .await
                .unwrap();
        }
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    })
    .await
}
