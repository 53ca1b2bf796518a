//! `quiver node` (one node of a cluster) and `quiver cluster …` (commands that reach a cluster
//! through any of its nodes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use quiver::node::{cluster_status, Node, NodeConfig, Timing};
use quiver::worker::ingest::{Door, DoorConfig};
use quiver::worker::{Runner, RunnerConfig};

/// `quiver node`.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's id: a number unique in the cluster, kept with its data directory.
    #[arg(long)]
    pub id: u64,
    /// Where the node keeps its log, vote and snapshots (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Where it listens for other nodes and for `quiver cluster` commands.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// The address others reach it at, if not the one it listens on (behind NAT, 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where its HTTP ingest listens (`POST /ingest/<job>`); port 0 takes a free port, printed
    /// at start and shown by `quiver cluster status`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api: String,
    /// The largest ingest request body taken, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_body_mib: usize,
    /// Join the cluster that the node at this address belongs to. Without it, the node starts
    /// a new cluster of its own — or, restarted on a data directory that holds one, rejoins it.
    #[arg(long)]
    pub join: Option<String>,
    /// Start even if the log or a snapshot is damaged: move the damaged files aside, keep what
    /// precedes the damage, and let the leader send the rest. Only for one node at a time of a
    /// cluster whose other nodes are healthy: the lost entries may be ones this node helped to
    /// commit. When the state itself is gone (a damaged snapshot whose log was already
    /// purged), give --join ADDR of a live member too: the node leaves the cluster, sets its
    /// log aside, and joins again under its id, receiving the leader's snapshot.
    #[arg(long)]
    pub repair: bool,
    /// Milliseconds between the leader's heartbeats.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for its lease (1.5 × this) and then a random time
    /// between this and 1.5 × this many milliseconds campaigns to become leader: a dead leader
    /// is replaced after about 2.5 × this. At least three heartbeats.
    #[arg(long, default_value_t = 300)]
    pub election_ms: u64,
    /// Take a snapshot every this many applied entries; the log before it may then be purged,
    /// and a follower that lacks purged entries gets the snapshot instead.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every: u64,
}

/// How a `quiver cluster` command reaches the cluster: any node's address, or the directory of
/// a local cluster started with `quiver cluster up`.
#[derive(Args, Clone)]
pub struct Target {
    /// Any node of the cluster (its `--listen` address).
    #[arg(long, required_unless_present = "dir", conflicts_with = "dir")]
    pub addr: Option<String>,
    /// The directory of a local cluster (`quiver cluster up --dir`): its nodes are tried in turn.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl Target {
    /// The addresses to try, in order.
    fn addrs(&self) -> Result<Vec<String>> {
        match (&self.addr, &self.dir) {
            (Some(a), _) => Ok(vec![a.clone()]),
            (None, Some(dir)) => Ok(crate::local_cluster::Layout::read(dir)?
                .nodes
                .into_iter()
                .map(|n| n.peer)
                .collect()),
            (None, None) => bail!("give --addr ADDR of a node, or --dir DIR of a local cluster"),
        }
    }

    /// Runs `call` against each address until one answers; the last error otherwise.
    fn first<T>(
        &self,
        runtime: &tokio::runtime::Runtime,
        mut call: impl FnMut(
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>>>>,
    ) -> Result<T> {
        let mut errors = Vec::new();
        for addr in self.addrs()? {
            match runtime.block_on(call(addr.clone())) {
                Ok(v) => return Ok(v),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        bail!("cannot reach the cluster: {}", errors.join("; "))
    }
}

/// `quiver cluster …`.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster of `--nodes` child processes on 127.0.0.1 for trying cluster mode
    /// out; stops them on Ctrl-C. Its directory holds each node's data and log
    /// (`n1/`, `n1.log`, …) and `cluster.json`, which the other `quiver cluster` commands read
    /// with `--dir`; starting it again on the same directory restarts the same nodes.
    Up {
        /// How many nodes (3 tolerates one failure, 5 two).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// The cluster's directory.
        #[arg(long, default_value = "quiver-cluster")]
        dir: PathBuf,
    },
    /// Show the cluster as its leader sees it: leader, term, every node's role, matched index
    /// and lag, each worker's partitions, generations and last heartbeat, each job's partitions
    /// with their rows, owner and last checkpoint, and the hottest partitions.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the contacted node's own view (its role, log and applied state), not the
        /// leader's.
        #[arg(long)]
        local: bool,
        /// How long to wait for an answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Submit a streaming pipeline as a job of the cluster (the same pipeline file as
    /// `quiver run --stream`; its `[source]` is replaced by the cluster's HTTP ingest, and its
    /// sink directory must be one every node reaches). It is replicated to every node before
    /// this returns; events are then taken at `POST http://API/ingest/JOB` of any node.
    Submit {
        /// The pipeline file.
        pipeline: PathBuf,
        #[command(flatten)]
        target: Target,
        /// The job's name (default: the file's name without `.toml`).
        #[arg(long)]
        name: Option<String>,
        /// How long to wait for the cluster to commit it, in milliseconds.
        #[arg(long, default_value_t = 10000)]
        timeout_ms: u64,
    },
    /// Stop a job: its partitions stop on every worker and its pending events are dropped;
    /// output already committed stays.
    Stop {
        /// The job's name.
        job: String,
        #[command(flatten)]
        target: Target,
        /// How long to wait for the cluster to commit it, in milliseconds.
        #[arg(long, default_value_t = 10000)]
        timeout_ms: u64,
    },
    /// Add a node: runs it here, in the foreground, joined to the cluster (as `quiver node
    /// --join` does); it is promoted to a voter once it has caught up, and workers' partitions
    /// are rebalanced onto it.
    AddNode {
        #[command(flatten)]
        target: Target,
        /// Its id (default with --dir: one more than the highest there).
        #[arg(long)]
        id: Option<u64>,
        /// Its data directory (default with --dir: `DIR/n<id>`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where it listens for the other nodes.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where its HTTP ingest listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        api: String,
    },
    /// Take a node out of the cluster: it stops voting, and its partitions move to the others.
    /// Stop its process afterwards.
    RemoveNode {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        target: Target,
        /// How long to wait for the cluster to commit it, in milliseconds.
        #[arg(long, default_value_t = 10000)]
        timeout_ms: u64,
    },
}

/// Runs a node until SIGINT or SIGTERM.
pub fn node(args: NodeArgs) -> Result<()> {
    if args.heartbeat_ms == 0 || args.election_ms < 3 * args.heartbeat_ms {
        bail!(
            "--election-ms ({}) must be at least three heartbeats (--heartbeat-ms {}): a follower would campaign while the leader is alive",
            args.election_ms,
            args.heartbeat_ms
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    // The ingest door listens before the node starts, so that the node can tell the others
    // where it is; it answers 503 until the node is up.
    let door = std::sync::Arc::new(Door::new(args.max_body_mib << 20));
    let ingest = quiver::worker::ingest::serve(&args.api, door.clone())
        .with_context(|| format!("node {}: the HTTP ingest", args.id))?;
    let api = ingest.local_addr().to_string();
    let config = NodeConfig {
        id: args.id,
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise: args.advertise,
        api: api.clone(),
        join: args.join,
        repair: args.repair,
        timing: Timing {
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            election_min: Duration::from_millis(args.election_ms),
            election_max: Duration::from_millis(args.election_ms * 3 / 2),
            snapshot_every: args.snapshot_every.max(2),
            ..Timing::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver-node")
        .build()
        .context("cannot start the node's runtime")?;
    let work_dir = args.data_dir.join("partitions");
    runtime.block_on(async move {
        let node = Node::start(config).await?;
        door.open(DoorConfig {
            state: node.state(),
            writer: node.writer(),
            write_timeout: Duration::from_secs(10),
        });
        let runner = Runner::start(RunnerConfig {
            state: node.state(),
            writer: node.writer(),
            lease: node.lease(),
            runtime: tokio::runtime::Handle::current(),
            work_dir,
            call_timeout: Duration::from_secs(5),
            cache_dir: quiver::plugin::Host::default_cache_dir(),
        });
        // Tests and scripts read this line to learn the bound port.
        println!("node {} listening on {}", node.id, node.addr);
        println!("node {} ingest: http://{api}/ingest/<job>", node.id);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot catch SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("node {}: stopping", node.id);
        // The partitions take a final checkpoint; their commits need the node's runtime.
        let _ = tokio::task::spawn_blocking(move || runner.stop()).await;
        node.shutdown().await;
        ingest.stop();
        Ok(())
    })
}

/// Runs a `quiver cluster` command.
pub fn cluster(command: ClusterCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    match command {
        ClusterCommand::Up { nodes, dir } => crate::local_cluster::up(nodes, &dir),
        ClusterCommand::Status {
            target,
            json,
            local,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let status = target.first(&runtime, |addr| {
                Box::pin(async move { cluster_status(&addr, local, timeout).await })
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
        ClusterCommand::Submit {
            pipeline,
            target,
            name,
            timeout_ms,
        } => {
            let parsed = quiver::pipeline::Pipeline::from_file(&pipeline)?;
            let text = std::fs::read_to_string(&pipeline)
                .with_context(|| format!("cannot read {}", pipeline.display()))?;
            let job = match name {
                Some(n) => n,
                None => pipeline
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .context("the pipeline file has no name; pass --name")?,
            };
            if !quiver::checkpoint::names::valid_job(&job) {
                bail!("`{job}` cannot name a job: use letters, digits, `-` and `_`");
            }
            if parsed.sink.table.is_some() {
                // A partition's run is named by its generation, which a failover changes: the
                // table's transaction id would not follow the job across it.
                bail!("a cluster job writes files ([sink] path); a table sink is written exactly-once by `quiver run --stream` on one node");
            }
            let partitions =
                quiver::stream::partitioning(&parsed)?.map_or(1, |p| p.partitions()) as u32;
            let base_dir = std::path::absolute(&parsed.base_dir)
                .with_context(|| format!("cannot resolve {}", parsed.base_dir.display()))?;
            let command = quiver::replication::Command::SubmitJob {
                job: job.clone(),
                pipeline_toml: text,
                partitions,
                base_dir: base_dir.to_string_lossy().into_owned(),
            };
            let (index, reply) = write_through(&runtime, &target, command, timeout_ms)
                .with_context(|| format!("cannot submit {job}"))?;
            match reply {
                quiver::replication::Reply::Applied => {
                    println!("job {job} submitted ({partitions} partitions; log index {index})");
                    Ok(())
                }
                other => bail!("the cluster refused job {job}: {other:?}"),
            }
        }
        ClusterCommand::Stop {
            job,
            target,
            timeout_ms,
        } => {
            let command = quiver::replication::Command::StopJob { job: job.clone() };
            let (index, reply) = write_through(&runtime, &target, command, timeout_ms)
                .with_context(|| format!("cannot stop {job}"))?;
            match reply {
                quiver::replication::Reply::Applied => {
                    println!("job {job} stopped (log index {index})");
                    Ok(())
                }
                quiver::replication::Reply::UnknownJob => bail!("there is no job named {job}"),
                quiver::replication::Reply::JobStopped => bail!("job {job} was stopped already"),
                other => bail!("the cluster refused to stop job {job}: {other:?}"),
            }
        }
        ClusterCommand::AddNode {
            target,
            id,
            data_dir,
            listen,
            api,
        } => {
            let layout = match &target.dir {
                Some(dir) => Some(crate::local_cluster::Layout::read(dir)?),
                None => None,
            };
            let id = match (id, &layout) {
                (Some(id), _) => id,
                (None, Some(l)) => l.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1,
                (None, None) => bail!("give the new node an --id"),
            };
            let data_dir = match (data_dir, &target.dir) {
                (Some(d), _) => d,
                (None, Some(dir)) => dir.join(format!("n{id}")),
                (None, None) => bail!("give the new node a --data-dir"),
            };
            let join = target.addrs()?.into_iter().next();
            drop(runtime);
            node(NodeArgs {
                id,
                data_dir,
                listen,
                advertise: None,
                api,
                max_body_mib: 64,
                join,
                repair: false,
                heartbeat_ms: 100,
                election_ms: 300,
                snapshot_every: 5000,
            })
        }
        ClusterCommand::RemoveNode {
            id,
            target,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            target.first(&runtime, |addr| {
                Box::pin(async move { quiver::node::remove_node(&addr, id, timeout).await })
            })?;
            println!("node {id} removed from the cluster; stop its process");
            Ok(())
        }
    }
}

/// Writes `command` through the first node of `target` that answers.
fn write_through(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    command: quiver::replication::Command,
    timeout_ms: u64,
) -> Result<(u64, quiver::replication::Reply)> {
    let timeout = Duration::from_millis(timeout_ms);
    target.first(runtime, |addr| {
        let command = command.clone();
        Box::pin(async move { quiver::node::write(&addr, &command, timeout).await })
    })
}
