//! Capabilities: what a plugin may reach outside its sandbox. Nothing, unless the pipeline
//! grants it.
//!
//! A plugin's `[plugin.grants]` table may grant:
//! - `dirs`: host directories, read-only unless `write = true`. They are opened once through
//!   cap-std (wasmtime-wasi's preopens), so `..`, absolute paths and symlinks cannot leave them.
//! - `env`: names of environment variables whose host values the plugin sees.
//! - `clock`: the wall and monotonic clocks (`true`, or `"deterministic"`).
//! - `random`: `wasi:random/random` and `insecure` (`true`, or `"deterministic"`).
//!
//! The decision is made from the component's imports before anything runs ([`check`]):
//! - always linked, and empty unless granted: `wasi:io`, stdio (captured), `exit`, terminals,
//!   `wasi:cli/environment` (every standard library imports it; it lists only granted
//!   variables), `wasi:random/insecure-seed` (hash-map seeding; a fixed value unless `random`
//!   is granted) and Quiver's own `host` interface;
//! - linked only when granted: `wasi:filesystem/*` (a directory), `wasi:clocks/*` (`clock`),
//!   `wasi:random/random` and `insecure` (`random`);
//! - never linked: `wasi:sockets`, `wasi:http`, anything else.
//!
//! A granted clock cannot hold the host past a call's deadline: a sleep that would end after
//! the deadline stops the call at once with the time-limit error (the epoch interruption only
//! fires while Wasm code runs, not while the host sleeps for the plugin). In deterministic mode the
//! clocks are virtual (they start at a fixed instant, advance 1 µs per reading and jump over
//! sleeps at once) and the random bytes are a fixed sequence, so runs repeat exactly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{FsPerms, HostWallClock, WasiCtxBuilder};

/// Access to a clock or to randomness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AccessValue", into = "AccessValue")]
pub enum Access {
    /// Not granted (the default): a plugin importing it is refused.
    #[default]
    Denied,
    /// The host's real clock or entropy.
    Real,
    /// A fixed, repeatable stand-in.
    Deterministic,
}

/// How `Access` is written in a pipeline file: `true`, `false` or `"deterministic"`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum AccessValue {
    Flag(bool),
    Mode(String),
}

impl TryFrom<AccessValue> for Access {
    type Error = String;
    fn try_from(v: AccessValue) -> Result<Self, String> {
        match v {
            AccessValue::Flag(false) => Ok(Access::Denied),
            AccessValue::Flag(true) => Ok(Access::Real),
            AccessValue::Mode(m) if m == "deterministic" => Ok(Access::Deterministic),
            AccessValue::Mode(m) if m == "real" => Ok(Access::Real),
            AccessValue::Mode(m) => Err(format!(
                "`{m}` is not an access: use true, false or \"deterministic\""
            )),
        }
    }
}

impl From<Access> for AccessValue {
    fn from(a: Access) -> Self {
        match a {
            Access::Denied => AccessValue::Flag(false),
            Access::Real => AccessValue::Flag(true),
            Access::Deterministic => AccessValue::Mode("deterministic".into()),
        }
    }
}

impl Access {
    /// Whether anything is granted.
    pub fn granted(self) -> bool {
        self != Access::Denied
    }
}

/// A host directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DirGrant {
    /// The host directory (relative paths are relative to the pipeline file).
    pub path: PathBuf,
    /// Where the plugin sees it (default: `/` followed by the directory's name).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// Whether the plugin may create, change and delete files in it (default: read-only).
    #[serde(default)]
    pub write: bool,
}

impl DirGrant {
    /// The name the plugin sees the directory by.
    pub fn guest_path(&self) -> String {
        match &self.guest {
            Some(g) => g.clone(),
            None => format!(
                "/{}",
                self.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "dir".into())
            ),
        }
    }
}

/// A directory grant as written: a path (read-only), or a table.
#[derive(Deserialize)]
#[serde(untagged)]
enum DirGrantValue {
    Path(PathBuf),
    Table(DirGrant),
}

fn dirs_from_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DirGrant>, D::Error> {
    let values = Vec::<DirGrantValue>::deserialize(d)?;
    Ok(values
        .into_iter()
        .map(|v| match v {
            DirGrantValue::Path(path) => DirGrant {
                path,
                guest: None,
                write: false,
            },
            DirGrantValue::Table(t) => t,
        })
        .collect())
}

/// What one plugin is granted (`[plugin.grants]`). The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Grants {
    /// Host directories: `"data/ref"` (read-only) or `{ path = "out", as = "/out", write = true }`.
    #[serde(default, deserialize_with = "dirs_from_values")]
    pub dirs: Vec<DirGrant>,
    /// Environment variables the plugin sees, with the host's values.
    #[serde(default)]
    pub env: Vec<String>,
    /// The wall and monotonic clocks.
    #[serde(default)]
    pub clock: Access,
    /// Random bytes.
    #[serde(default)]
    pub random: Access,
}

impl Grants {
    /// The same grants with the clock and randomness made deterministic (if granted at all).
    pub fn deterministic(mut self) -> Self {
        for a in [&mut self.clock, &mut self.random] {
            if a.granted() {
                *a = Access::Deterministic;
            }
        }
        self
    }

    /// Resolves relative directory paths against `base`.
    pub fn resolved(mut self, base: &Path) -> Self {
        for d in &mut self.dirs {
            if d.path.is_relative() {
                d.path = base.join(&d.path);
            }
        }
        self
    }

    /// A one-line summary for messages and the report (`nothing` when empty).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for d in &self.dirs {
            parts.push(format!(
                "dir {} as {}{}",
                d.path.display(),
                d.guest_path(),
                if d.write { " (read-write)" } else { "" }
            ));
        }
        if !self.env.is_empty() {
            parts.push(format!("env {}", self.env.join(",")));
        }
        for (what, a) in [("clock", self.clock), ("random", self.random)] {
            match a {
                Access::Denied => {}
                Access::Real => parts.push(what.to_string()),
                Access::Deterministic => parts.push(format!("{what} (deterministic)")),
            }
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }
}

/// What an import needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Linked for every plugin; empty unless granted.
    Ambient,
    /// A granted directory.
    Dir,
    /// The `clock` grant.
    Clock,
    /// The `random` grant.
    Random,
    /// The network: never linked.
    Network,
    /// Something Quiver does not provide.
    Unknown,
}

/// Classifies one import name (`wasi:clocks/wall-clock@0.2.6`).
pub fn classify(import: &str) -> Need {
    let name = import.split('@').next().unwrap_or(import);
    match name {
        "wasi:random/insecure-seed" => Need::Ambient,
        "wasi:random/random" | "wasi:random/insecure" => Need::Random,
        n if n.starts_with("wasi:io/") || n.starts_with("wasi:cli/") => Need::Ambient,
        n if n.starts_with("quiver:plugin/") => Need::Ambient,
        n if n.starts_with("wasi:filesystem/") => Need::Dir,
        n if n.starts_with("wasi:clocks/") => Need::Clock,
        n if n.starts_with("wasi:sockets/") || n.starts_with("wasi:http/") => Need::Network,
        _ => Need::Unknown,
    }
}

/// Why a plugin cannot run with its grants: the imports that nothing grants, by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusal {
    /// Network imports (never granted).
    pub network: Vec<String>,
    /// Imports Quiver does not provide.
    pub unknown: Vec<String>,
    /// Missing grants, each with the imports that need it (`dirs`, `clock`, `random`).
    pub missing: Vec<(&'static str, Vec<String>)>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.network.is_empty() {
            parts.push(format!(
                "it imports {}, which Quiver never grants (plugins get no network)",
                self.network.join(", ")
            ));
        }
        if !self.unknown.is_empty() {
            parts.push(format!(
                "it imports {}, which Quiver does not provide",
                self.unknown.join(", ")
            ));
        }
        if !self.missing.is_empty() {
            let grants: Vec<String> = self
                .missing
                .iter()
                .map(|(g, imports)| {
                    let how = match *g {
                        "dirs" => "dirs = [\"some/dir\"]",
                        "clock" => "clock = true (or \"deterministic\")",
                        _ => "random = true (or \"deterministic\")",
                    };
                    format!("`{how}` for {}", imports.join(", "))
                })
                .collect();
            parts.push(format!(
                "the pipeline does not grant what it imports; missing grants in [plugin.grants]: {}",
                grants.join("; ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Checks a component's imports against its grants, before anything is instantiated.
pub fn check(imports: &[String], grants: &Grants) -> Result<(), Refusal> {
    let mut r = Refusal::default();
    let mut need = |g: &'static str, i: &String| match r.missing.iter_mut().find(|(n, _)| *n == g) {
        Some((_, list)) => list.push(i.clone()),
        None => r.missing.push((g, vec![i.clone()])),
    };
    let mut network = Vec::new();
    let mut unknown = Vec::new();
    for i in imports {
        match classify(i) {
            Need::Ambient => {}
            Need::Dir if grants.dirs.is_empty() => need("dirs", i),
            Need::Clock if !grants.clock.granted() => need("clock", i),
            Need::Random if !grants.random.granted() => need("random", i),
            Need::Dir | Need::Clock | Need::Random => {}
            Need::Network => network.push(i.clone()),
            Need::Unknown => unknown.push(i.clone()),
        }
    }
    r.network = network;
    r.unknown = unknown;
    if r == Refusal::default() {
        Ok(())
    } else {
        Err(r)
    }
}

/// The fixed instant deterministic clocks start at: 2000-01-01T00:00:00Z.
pub const DETERMINISTIC_EPOCH: Duration = Duration::from_secs(946_684_800);

/// Seed of the deterministic random bytes.
const DETERMINISTIC_SEED: u64 = 0x5157_4956_4552; // "QUIVER"

/// Length of the repeating deterministic random sequence.
const DETERMINISTIC_RANDOM_BYTES: usize = 4096;

/// Applies the grants to a WASI context under construction.
pub fn apply(grants: &Grants, builder: &mut WasiCtxBuilder) -> Result<(), String> {
    for d in &grants.dirs {
        let perms = if d.write {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&d.path, d.guest_path(), perms)
            .map_err(|e| format!("cannot open granted directory {}: {e}", d.path.display()))?;
    }
    for name in &grants.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    match grants.random {
        Access::Deterministic => {
            builder
                .secure_random(wasmtime_wasi::Deterministic::new(deterministic_bytes()))
                .insecure_random(wasmtime_wasi::Deterministic::new(deterministic_bytes()))
                .insecure_random_seed(DETERMINISTIC_SEED as u128);
        }
        Access::Denied => {
            // Only `insecure-seed` is reachable without the grant: give it nothing to learn.
            builder.insecure_random_seed(DETERMINISTIC_SEED as u128);
        }
        Access::Real => {}
    }
    if grants.clock == Access::Deterministic {
        builder.wall_clock(VirtualWallClock);
    }
    Ok(())
}

/// A fixed sequence of bytes (SplitMix64 from a constant seed).
fn deterministic_bytes() -> Vec<u8> {
    let mut state = DETERMINISTIC_SEED;
    let mut out = Vec::with_capacity(DETERMINISTIC_RANDOM_BYTES);
    while out.len() < DETERMINISTIC_RANDOM_BYTES {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// The deterministic wall clock: always [`DETERMINISTIC_EPOCH`]. (Elapsed time is the
/// monotonic clock's business; a wall clock that stands still is the repeatable choice.)
struct VirtualWallClock;

impl HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }
    fn now(&self) -> Duration {
        DETERMINISTIC_EPOCH
    }
}

/// The monotonic clock a plugin sees, and the deadline of the call in progress.
#[derive(Debug)]
pub struct Clock {
    mode: ClockMode,
    /// When the current call must end (set by the host before each call).
    pub deadline: Option<Instant>,
}

#[derive(Debug)]
enum ClockMode {
    Real(Instant),
    /// Virtual nanoseconds.
    Virtual(u64),
}

impl Clock {
    /// The clock for a plugin with `access` to it.
    pub fn new(access: Access) -> Self {
        Clock {
            mode: match access {
                Access::Deterministic => ClockMode::Virtual(0),
                _ => ClockMode::Real(Instant::now()),
            },
            deadline: None,
        }
    }

    fn now(&mut self) -> u64 {
        match &mut self.mode {
            ClockMode::Real(start) => start.elapsed().as_nanos() as u64,
            ClockMode::Virtual(ns) => {
                *ns += 1_000;
                *ns
            }
        }
    }

    /// How long a sleep of `ns` really lasts: as asked on the real clock, unless it would
    /// end past the call's deadline; nothing at all on a virtual clock, which jumps instead.
    fn sleep_for(&mut self, ns: u64) -> Result<Duration, SleptPastDeadline> {
        match &mut self.mode {
            ClockMode::Virtual(now) => {
                *now = now.saturating_add(ns);
                Ok(Duration::ZERO)
            }
            ClockMode::Real(_) => {
                let wanted = Duration::from_nanos(ns);
                match self.deadline {
                    Some(d) if Instant::now().checked_add(wanted).is_none_or(|end| end > d) => {
                        Err(SleptPastDeadline)
                    }
                    _ => Ok(wanted),
                }
            }
        }
    }
}

/// A plugin asked to sleep past its call's deadline: the call is stopped (a trap that the host
/// reports as the time limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the plugin asked to sleep past its call's deadline")]
pub struct SleptPastDeadline;

/// A sleep, as a WASI pollable.
struct Sleep {
    until: Option<tokio::time::Instant>,
    yielded: bool,
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Sleep {
    async fn ready(&mut self) {
        match self.until {
            Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
            _ if !self.yielded => {
                // As wasmtime-wasi's own zero-length sleep: let the runtime breathe once.
                self.yielded = true;
                tokio::task::yield_now().await
            }
            _ => {}
        }
    }
}

/// The monotonic clock interface, bounded by the call's deadline.
pub struct ClockView<'a> {
    /// The clock.
    pub clock: &'a mut Clock,
    /// The store's resources (for pollables).
    pub table: &'a mut ResourceTable,
}

impl ClockView<'_> {
    fn subscribe(&mut self, ns: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let d = self.clock.sleep_for(ns)?;
        let until = (!d.is_zero())
            .then(|| tokio::time::Instant::now().checked_add(d))
            .flatten();
        let sleep = self.table.push(Sleep {
            until,
            yielded: false,
        })?;
        wasmtime_wasi_io::poll::subscribe(self.table, sleep)
    }
}

impl monotonic_clock::Host for ClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clock.now())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1_000)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.clock.now();
        self.subscribe(when.saturating_sub(now))
    }

    fn subscribe_duration(&mut self, ns: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.subscribe(ns)
    }
}

/// Marker for linking [`ClockView`].
pub struct BoundedClock;

impl HasData for BoundedClock {
    type Data<'a> = ClockView<'a>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imports(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const STD: [&str; 6] = [
        "wasi:cli/environment@0.2.6",
        "wasi:cli/exit@0.2.6",
        "wasi:io/streams@0.2.6",
        "wasi:cli/stderr@0.2.6",
        "wasi:random/insecure-seed@0.2.6",
        "quiver:plugin/host@0.1.0",
    ];

    #[test]
    fn what_every_standard_library_imports_needs_no_grant() {
        assert_eq!(check(&imports(&STD), &Grants::default()), Ok(()));
    }

    #[test]
    fn each_capability_import_needs_its_own_grant() {
        let cases = [
            ("wasi:filesystem/preopens@0.2.6", "dirs"),
            ("wasi:filesystem/types@0.2.0", "dirs"),
            ("wasi:clocks/wall-clock@0.2.6", "clock"),
            ("wasi:clocks/monotonic-clock@0.2.6", "clock"),
            ("wasi:random/random@0.2.6", "random"),
            ("wasi:random/insecure@0.2.6", "random"),
        ];
        let all_granted = Grants {
            dirs: vec![DirGrant {
                path: "x".into(),
                guest: None,
                write: false,
            }],
            env: vec![],
            clock: Access::Real,
            random: Access::Deterministic,
        };
        for (import, grant) in cases {
            let r = check(&imports(&[import]), &Grants::default()).unwrap_err();
            assert_eq!(r.missing, vec![(grant, vec![import.to_string()])]);
            assert!(r.to_string().contains(import), "{r}");
            assert!(r.to_string().contains(&format!("`{grant} =")), "{r}");
            assert_eq!(check(&imports(&[import]), &all_granted), Ok(()), "{import}");
        }
    }

    #[test]
    fn the_network_and_unknown_imports_are_never_granted() {
        let all = Grants {
            clock: Access::Real,
            random: Access::Real,
            ..Grants::default()
        };
        let r = check(
            &imports(&[
                "wasi:sockets/tcp@0.2.6",
                "wasi:http/outgoing-handler@0.2.6",
                "acme:secrets/vault",
                "wasi:clocks/wall-clock@0.2.6",
                "wasi:filesystem/types@0.2.6",
            ]),
            &all,
        )
        .unwrap_err();
        assert_eq!(
            r.network,
            imports(&["wasi:sockets/tcp@0.2.6", "wasi:http/outgoing-handler@0.2.6"])
        );
        assert_eq!(r.unknown, imports(&["acme:secrets/vault"]));
        assert_eq!(
            r.missing,
            vec![("dirs", imports(&["wasi:filesystem/types@0.2.6"]))]
        );
        let text = r.to_string();
        assert!(
            text.contains("no network") && text.contains("does not provide"),
            "{text}"
        );
    }

    #[test]
    fn grants_parse_from_a_pipeline_table() {
        let g: Grants = toml::from_str(
            r#"
            dirs = ["ref", { path = "out", as = "/results", write = true }]
            env = ["TZ"]
            clock = "deterministic"
            random = true
            "#,
        )
        .unwrap();
        assert_eq!(g.dirs[0].guest_path(), "/ref");
        assert!(!g.dirs[0].write);
        assert_eq!(g.dirs[1].guest_path(), "/results");
        assert!(g.dirs[1].write);
        assert_eq!(g.clock, Access::Deterministic);
        assert_eq!(g.random, Access::Real);
        assert_eq!(g.clone().deterministic().random, Access::Deterministic);
        assert_eq!(Grants::default().deterministic(), Grants::default());
        let bad = toml::from_str::<Grants>("clock = \"sometimes\"").unwrap_err();
        assert!(bad.to_string().contains("sometimes"), "{bad}");
        assert!(toml::from_str::<Grants>("network = true").is_err());
    }

    #[test]
    fn a_sleep_past_the_deadline_stops_the_call_and_a_virtual_one_ends_at_once() {
        let mut real = Clock::new(Access::Real);
        assert_eq!(real.sleep_for(u64::MAX), Ok(Duration::from_nanos(u64::MAX)));
        real.deadline = Some(Instant::now() + Duration::from_secs(50));
        assert_eq!(real.sleep_for(3_600_000_000_000), Err(SleptPastDeadline));
        assert_eq!(real.sleep_for(u64::MAX), Err(SleptPastDeadline));
        assert_eq!(real.sleep_for(1_000), Ok(Duration::from_micros(1)));
        let mut virt = Clock::new(Access::Deterministic);
        virt.deadline = real.deadline;
        let t0 = virt.now();
        assert_eq!(virt.sleep_for(3_600_000_000_000), Ok(Duration::ZERO));
        let t1 = virt.now();
        assert_eq!(t1 - t0, 3_600_000_000_000 + 1_000);
        // Two deterministic clocks read the same.
        let mut other = Clock::new(Access::Deterministic);
        assert_eq!(other.now(), t0);
    }

    #[test]
    fn deterministic_bytes_repeat_exactly() {
        let a = deterministic_bytes();
        assert_eq!(a.len(), DETERMINISTIC_RANDOM_BYTES);
        assert_eq!(a, deterministic_bytes());
        // Not a constant: more than a handful of distinct byte values.
        let distinct: std::collections::BTreeSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 200);
    }
}
