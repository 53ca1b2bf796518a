//! Group commit of a node's writes.
//!
//! Every write a node makes — an ingest request from its door, a checkpoint commit of its
//! worker, a write forwarded to it as leader — goes through one queue. While fewer than
//! [`BatchLimits::in_flight`] writes are under way, a write goes out at once on its own; when
//! that many are, the writes that arrive meanwhile wait and then go out together as one
//! [`Command::Batch`]: as one Raft entry when the node leads, as one call to the leader
//! otherwise (where it may join a batch of the leader's). One entry costs one round of
//! replication and one fsync per node however many commands it carries, so under load the
//! cluster commits many requests per round instead of one, and an idle node adds no delay.
//!
//! At the leader, entries are handed to Raft in the order the writes arrived. Each caller gets
//! its own command's reply and the entry's log index.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use quiver_replication::{Command, Reply, TypeConfig};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How writes are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Entries handed to Raft and not yet answered, at most; past that writes are grouped.
    pub in_flight: usize,
    /// Commands in one entry, at most.
    pub commands: usize,
    /// Bytes of commands in one entry, at most (a single larger command still goes alone).
    pub bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            in_flight: 2,
            commands: 1024,
            // Well under the transport's message limit, so that an entry of several requests
            // still travels to a follower in one append call.
            bytes: 8 << 20,
        }
    }
}

/// Whether a write of `next` bytes joins a batch that holds `len` commands of `bytes` bytes.
/// The first command always goes, whatever its size.
pub fn joins(limits: &BatchLimits, len: usize, bytes: usize, next: usize) -> bool {
    len == 0 || (len < limits.commands && bytes.saturating_add(next) <= limits.bytes)
}

/// The entry that carries `commands`: the command itself when alone, a batch otherwise.
pub fn entry(mut commands: Vec<Command>) -> Command {
    if commands.len() == 1 {
        commands.pop().expect("one command")
    } else {
        Command::Batch { commands }
    }
}

/// The reply to each of the `n` commands of an entry built by [`entry`], from the entry's
/// reply; `None` if the reply does not fit the entry (which a correct state machine never
/// answers).
pub fn replies(n: usize, reply: Reply) -> Option<Vec<Reply>> {
    match reply {
        Reply::Batch { replies } if n > 1 && replies.len() == n => Some(replies),
        reply if n == 1 => Some(vec![reply]),
        _ => None,
    }
}

/// Where an entry goes: Raft here when this node leads, the leader otherwise.
pub(crate) enum Route {
    /// This node leads.
    Here,
    /// The leader's peer address.
    Leader(String),
    /// No leader is known (an election is under way).
    Unknown,
}

/// Why a write was not answered by the state machine; whether it applied is unknown.
#[derive(Debug, Clone)]
pub(crate) enum Failed {
    /// No leader is known.
    NoLeader,
    /// The leader could not be reached or did not answer.
    Forward {
        /// Its address.
        leader: String,
        /// Why.
        message: String,
    },
    /// Raft here did not commit it.
    Raft(String),
}

/// What a write answers: the log index of its entry and its command's reply.
pub(crate) type Written = Result<(u64, Reply), Failed>;

/// What the batcher sends entries through (the node's handlers).
pub(crate) trait Routes: Send + Sync + 'static {
    /// Where an entry goes now.
    fn route(&self) -> Route;
    /// This node's Raft.
    fn raft(&self) -> &Raft<TypeConfig>;
    /// Sends `entry` to the leader at `leader` and returns its answer.
    fn forward_write(
        &self,
        leader: String,
        entry: Command,
    ) -> impl std::future::Future<Output = Written> + Send;
}

struct Pending {
    command: Command,
    bytes: usize,
    answer: oneshot::Sender<Written>,
}

/// The queue in front of the node's writes: cheap to clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

/// The receiving end of a [`Batcher`], until [`run`] takes it.
pub(crate) struct Queue(mpsc::UnboundedReceiver<Pending>);

impl Batcher {
    /// A batcher and its queue, for [`spawn`].
    pub(crate) fn new() -> (Batcher, Queue) {
        let (queue, rx) = mpsc::unbounded_channel();
        (Batcher { queue }, Queue(rx))
    }

    /// Writes `command`, alone or with others, and returns its reply once applied.
    pub(crate) async fn write(&self, command: Command) -> Written {
        let (answer, rx) = oneshot::channel();
        let bytes = command.approx_bytes();
        let stopped = || Failed::Raft("the node is shutting down".to_string());
        self.queue
            .send(Pending {
                command,
                bytes,
                answer,
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Runs the batcher of `queue` through `routes` (abort the task to stop it).
pub(crate) fn spawn<R: Routes>(
    routes: Arc<R>,
    queue: Queue,
    limits: BatchLimits,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(routes, queue.0, limits))
}

async fn run<R: Routes>(
    routes: Arc<R>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    limits: BatchLimits,
) {
    let permits = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    let mut held: Option<Pending> = None;
    loop {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // A caller that stopped waiting (its time-out ran out, and it answered "not
        // committed, retry") must not have its write made later behind its back.
        if first.answer.is_closed() {
            continue;
        }
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while let Ok(p) = rx.try_recv() {
            if p.answer.is_closed() {
                continue;
            }
            if !joins(&limits, batch.len(), bytes, p.bytes) {
                held = Some(p);
                break;
            }
            bytes += p.bytes;
            batch.push(p);
        }
        let (commands, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.answer)).unzip();
        let entry = entry(commands);
        match routes.route() {
            Route::Here => {
                // Handed to Raft here, in arrival order; the answer is awaited off this loop.
                let submitted = routes.raft().client_write_ff(entry).await;
                tokio::spawn(async move {
                    let _permit = permit;
                    let outcome = match submitted {
                        Err(fatal) => Err(Failed::Raft(fatal.to_string())),
                        Ok(rx) => match rx.await {
                            Err(_) => Err(Failed::Raft("Raft stopped before answering".into())),
                            Ok(Err(e)) => Err(Failed::Raft(
                                RaftError::<u64, ClientWriteError<u64, _>>::APIError(e).to_string(),
                            )),
                            Ok(Ok(written)) => Ok((written.log_id.index, written.data)),
                        },
                    };
                    answer_all(answers, outcome);
                });
            }
            Route::Leader(leader) => {
                let routes = Arc::clone(&routes);
                tokio::spawn(async move {
                    let _permit = permit;
                    let outcome = routes.forward_write(leader, entry).await;
                    answer_all(answers, outcome);
                });
            }
            Route::Unknown => answer_all(answers, Err(Failed::NoLeader)),
        }
    }
}

fn answer_all(answers: Vec<oneshot::Sender<Written>>, outcome: Written) {
    let n = answers.len();
    match outcome {
        Err(e) => {
            for a in answers {
                let _ = a.send(Err(e.clone()));
            }
        }
        Ok((index, reply)) => match replies(n, reply) {
            Some(replies) => {
                for (a, r) in answers.into_iter().zip(replies) {
                    let _ = a.send(Ok((index, r)));
                }
            }
            None => {
                for a in answers {
                    let _ = a.send(Err(Failed::Raft(format!(
                        "the entry at log index {index} of {n} commands was answered with a reply that does not fit it"
                    ))));
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stop(job: usize) -> Command {
        Command::StopJob {
            job: format!("j{job}"),
        }
    }

    proptest! {
        /// Grouping a queue with `joins` never exceeds the limits (but for a lone large
        /// command), keeps every command once and in order, and only closes a batch when the
        /// next command does not fit.
        #[test]
        fn batches_respect_the_limits_and_keep_the_order(
            sizes in proptest::collection::vec(0usize..5_000, 0..200),
            commands in 1usize..20,
            bytes in 1usize..20_000,
        ) {
            let limits = BatchLimits { in_flight: 1, commands, bytes };
            let mut batches: Vec<Vec<usize>> = Vec::new();
            let mut current: Vec<usize> = Vec::new();
            let mut total = 0;
            for (i, &s) in sizes.iter().enumerate() {
                if !joins(&limits, current.len(), total, s) {
                    batches.push(std::mem::take(&mut current));
                    total = 0;
                }
                prop_assert!(joins(&limits, current.len(), total, s));
                current.push(i);
                total += s;
            }
            if !current.is_empty() {
                batches.push(current);
            }
            let flat: Vec<usize> = batches.iter().flatten().copied().collect();
            prop_assert_eq!(flat, (0..sizes.len()).collect::<Vec<_>>());
            for (k, b) in batches.iter().enumerate() {
                prop_assert!(!b.is_empty());
                prop_assert!(b.len() <= commands);
                let sum: usize = b.iter().map(|&i| sizes[i]).sum();
                prop_assert!(b.len() == 1 || sum <= bytes, "batch {:?} of {} bytes", b, sum);
                if let Some(next) = batches.get(k + 1) {
                    // Closed only because the next command did not fit.
                    prop_assert!(b.len() == commands || sum + sizes[next[0]] > bytes);
                }
            }
        }

        /// An entry of n commands is answered with n replies, each the one for its command.
        #[test]
        fn each_command_of_an_entry_gets_its_own_reply(n in 1usize..30) {
            let commands: Vec<Command> = (0..n).map(stop).collect();
            let expected: Vec<Reply> = (0..n)
                .map(|i| if i % 2 == 0 { Reply::Applied } else { Reply::UnknownJob })
                .collect();
            let e = entry(commands.clone());
            let reply = match &e {
                Command::Batch { commands: inner } => {
                    prop_assert_eq!(inner, &commands);
                    Reply::Batch { replies: expected.clone() }
                }
                single => {
                    prop_assert_eq!(n, 1);
                    prop_assert_eq!(single, &commands[0]);
                    expected[0].clone()
                }
            };
            prop_assert_eq!(replies(n, reply), Some(expected));
        }
    }

    #[test]
    fn a_reply_that_does_not_fit_its_entry_is_refused() {
        let two = Reply::Batch {
            replies: vec![Reply::Applied, Reply::Applied],
        };
        assert_eq!(replies(3, two.clone()), None);
        assert_eq!(replies(2, Reply::Applied), None);
        // A lone command's reply is taken as it is, even a batch reply of a nested batch.
        assert_eq!(replies(1, two.clone()), Some(vec![two]));
    }
}
