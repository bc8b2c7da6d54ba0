//! The configurations `bb farm` gives its scheduler, workers and runners,
//! rendered as TOML tables (never by pasting strings, so any path works).

use bb_util::config::ByteSize;
use std::path::Path;
use toml::{Table, Value};

pub(crate) fn table(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Table(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

pub(crate) fn text(value: impl ToString) -> Value {
    Value::String(value.to_string())
}

pub(crate) fn path(value: &Path) -> Value {
    text(value.display())
}

/// Has a program export its spans to the OTLP/gRPC collector at
/// `endpoint`, if there is one.
pub fn export_spans(config: &mut Table, endpoint: Option<&str>) {
    let Some(endpoint) = endpoint else { return };
    let log = config.entry("log").or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(log) = log {
        log.insert("otlp".into(), table([("endpoint", text(endpoint))]));
    }
}

/// Puts the scheduler's CAS and Action Cache on bb-storage nodes instead
/// of its own disk: each blob and each result on `copies` of them, spread
/// by rendezvous hashing, a write needing one copy (so a node down stops
/// nothing) and lacking copies repaired as they are found.
pub fn shard_storage(config: &mut Table, nodes: &[String], copies: usize) {
    let shards: Vec<Value> = nodes
        .iter()
        .map(|endpoint| {
            table([
                ("name", text(endpoint)),
                ("store", table([("backend", text("grpc")), ("endpoint", text(endpoint))])),
            ])
        })
        .collect();
    let sharding = || {
        table([
            ("backend", text("sharding")),
            ("copies", Value::Integer(copies as i64)),
            ("write_quorum", Value::Integer(1)),
            ("shards", Value::Array(shards.clone())),
        ])
    };
    if let Some(Value::Table(storage)) = config.get_mut("storage") {
        storage.insert("cas".into(), sharding());
        if let Some(Value::Table(action_cache)) = storage.get_mut("action_cache") {
            action_cache.insert("store".into(), sharding());
        }
    }
}

/// An S3 bucket for the farm's storage.
pub struct Bucket<'a> {
    pub name: &'a str,
    pub endpoint: Option<&'a str>,
    pub credentials_file: Option<&'a Path>,
}

/// Puts the scheduler's CAS and Action Cache into `bucket` (under the
/// prefixes `cas` and `ac`), each behind its disk store as a read cache.
pub fn bucket_storage(config: &mut Table, bucket: &Bucket) {
    let slow = |prefix: &str| {
        let mut slow = Table::new();
        slow.insert("backend".into(), text("object_storage"));
        slow.insert("bucket".into(), text(bucket.name));
        slow.insert("prefix".into(), text(prefix));
        if let Some(endpoint) = bucket.endpoint {
            slow.insert("endpoint".into(), text(endpoint));
        }
        if let Some(file) = bucket.credentials_file {
            slow.insert("credentials_file".into(), path(file));
        }
        Value::Table(slow)
    };
    let in_front = |fast: Option<Value>, prefix: &str| {
        let fast = fast.unwrap_or_else(|| Value::Table(Table::new()));
        table([("backend", text("read_caching")), ("fast", fast), ("slow", slow(prefix))])
    };
    if let Some(Value::Table(storage)) = config.get_mut("storage") {
        let cas = in_front(storage.remove("cas"), "cas");
        storage.insert("cas".into(), cas);
        if let Some(Value::Table(action_cache)) = storage.get_mut("action_cache") {
            let store = in_front(action_cache.remove("store"), "ac");
            action_cache.insert("store".into(), store);
        }
    }
}

/// The scheduler with disk storage under `state`. No fsync per blob: every
/// read is checked (CAS blobs against their digest, Action Cache entries
/// against their checksum), so a crash can lose entries but never serve a
/// damaged one, and a farm on one machine wants the 0.4 ms per write back.
/// The Remote Asset API fetches from `asset_origins` only.
pub fn scheduler(
    client: &str,
    worker_port: u16,
    http: &str,
    state: &Path,
    storage_size: ByteSize,
    asset_origins: &[String],
) -> Table {
    let store = |dir: &str, size: String| {
        table([
            ("backend", text("disk")),
            ("path", path(&state.join("storage").join(dir))),
            ("max_size", text(size)),
            ("sync_writes", Value::Boolean(false)),
        ])
    };
    let durations = [
        ("default_action_timeout", "30m"),
        ("maximum_action_timeout", "3h"),
        ("keepalive_interval", "30s"),
        ("client_disconnect_grace", "60s"),
        ("completed_retention", "60s"),
        ("worker_timeout", "60s"),
        ("executing_sync_interval", "10s"),
        ("idle_sync_wait", "30s"),
        ("unmatched_platform_timeout", "60s"),
    ];
    let mut scheduler: Table = durations.into_iter().map(|(k, v)| (k.to_string(), text(v))).collect();
    scheduler.insert("max_attempts".into(), Value::Integer(3));
    let Value::Table(config) = table([
        ("client_listen", Value::Array(vec![text(client)])),
        ("worker_listen", Value::Array(vec![text(format!("127.0.0.1:{worker_port}"))])),
        ("http_listen", text(http)),
        ("log", table([("level", text("warn"))])),
        ("scheduler", Value::Table(scheduler)),
        (
            "storage",
            table([
                ("cas", store("cas", storage_size.to_string())),
                ("action_cache", table([("store", store("ac", "1GiB".into()))])),
                (
                    "remote_asset",
                    table([("allowed_origins", Value::Array(asset_origins.iter().map(text).collect()))]),
                ),
            ]),
        ),
    ]) else {
        unreachable!("table() makes a table")
    };
    config
}

/// What one runner is given.
pub struct Runner<'a> {
    pub socket: &'a Path,
    pub build: &'a Path,
    pub kill_user_processes: bool,
    /// The cgroup delegated to the runner, beneath the farm's own.
    pub cgroup_parent: Option<&'a str>,
    /// Per-action limits.
    pub memory: Option<ByteSize>,
    pub processes: Option<u64>,
    pub cpus: Option<f64>,
    pub allow_network: bool,
    pub network_property: bool,
    /// Namespaces and a cgroup per action; off for `--unsandboxed`.
    pub sandboxed: bool,
    /// Actions chroot into their input root.
    pub chroot: bool,
}

pub fn runner(r: &Runner) -> Table {
    let mut limits = Table::new();
    if let Some(memory) = r.memory {
        limits.insert("memory".into(), text(memory));
    }
    if let Some(processes) = r.processes {
        limits.insert("processes".into(), Value::Integer(i64::try_from(processes).unwrap_or(i64::MAX)));
    }
    if let Some(cpus) = r.cpus {
        limits.insert("cpus".into(), Value::Float(cpus));
    }
    let mut sandbox = table([
        ("allow_network", Value::Boolean(r.allow_network)),
        ("network_property", Value::Boolean(r.network_property)),
        ("namespaces", Value::Boolean(r.sandboxed)),
        ("cgroups", Value::Boolean(r.sandboxed)),
        ("limits", Value::Table(limits)),
    ]);
    if let (Some(parent), Value::Table(sandbox)) = (r.cgroup_parent, &mut sandbox) {
        sandbox.insert("cgroup_parent".into(), text(parent));
    }
    [
        ("listen", text(format!("unix:{}", r.socket.display()))),
        ("build_directory", path(r.build)),
        ("kill_user_processes", Value::Boolean(r.kill_user_processes)),
        ("chroot_into_input_root", Value::Boolean(r.chroot)),
        ("sandbox", sandbox),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Where one worker finds everything, and what it offers.
pub struct Worker<'a> {
    pub scheduler_port: u16,
    pub storage_port: u16,
    pub socket: &'a Path,
    pub build: &'a Path,
    pub cache: &'a Path,
    pub cache_size: ByteSize,
    pub slots: usize,
    pub name: &'a str,
    pub platform: &'a [(String, String)],
}

pub fn worker(w: &Worker) -> Table {
    let platform = w
        .platform
        .iter()
        .map(|(name, value)| table([("name", text(name)), ("value", text(value))]))
        .collect();
    [
        ("scheduler", text(format!("grpc://127.0.0.1:{}", w.scheduler_port))),
        ("storage", text(format!("grpc://127.0.0.1:{}", w.storage_port))),
        ("runner", text(format!("unix:{}", w.socket.display()))),
        ("build_directory", path(w.build)),
        ("cache_directory", path(w.cache)),
        ("cache_max_size", text(w.cache_size)),
        ("cache_max_files", Value::Integer(1_000_000)),
        ("concurrency", Value::Integer(w.slots as i64)),
        ("name", text(w.name)),
        ("platform", Value::Array(platform)),
        ("shutdown_grace", text("10s")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// This machine's instruction set as BuildStream spells it (`ISA`).
pub fn host_isa() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86-32",
        "aarch64" => "aarch64",
        "arm" => "aarch32",
        "powerpc64" if cfg!(target_endian = "little") => "power-isa-le",
        "powerpc64" => "power-isa-be",
        other => other,
    }
}

/// What workers offer: `OSFamily=linux` and the host's `ISA` (so Bazel's
/// and BuildStream's actions both match), then each `KEY=VALUE` given,
/// replacing a default of the same name; sorted by name.
pub fn platform(given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut properties = std::collections::BTreeMap::from([
        ("OSFamily".to_string(), "linux".to_string()),
        ("ISA".to_string(), host_isa().to_string()),
    ]);
    for property in given {
        let (name, value) = property
            .split_once('=')
            .filter(|(name, _)| !name.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--platform {property:?}: write it as KEY=VALUE"))?;
        properties.insert(name.to_string(), value.to_string());
    }
    Ok(properties.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_default_and_given() {
        let defaults = platform(&[]).unwrap();
        assert_eq!(defaults[0], ("ISA".to_string(), host_isa().to_string()));
        assert_eq!(defaults[1], ("OSFamily".to_string(), "linux".to_string()));
        let given = platform(&["container-image=nixos".into(), "ISA=x86-64".into()]).unwrap();
        assert_eq!(given.len(), 3);
        assert!(given.contains(&("container-image".to_string(), "nixos".to_string())));
        assert!(platform(&["novalue".into()]).is_err() && platform(&["=x".into()]).is_err());
    }

    #[test]
    fn configs_parse_as_the_programs_read_them_whatever_the_paths() {
        let odd = Path::new("/tmp/a \"quoted\" dir\\with\nbreaks");
        let (socket, build) = (odd.join("s.sock"), odd.join("build"));
        let config = Runner {
            socket: &socket,
            build: &build,
            kill_user_processes: true,
            cgroup_parent: Some("c"),
            memory: Some(ByteSize(1 << 30)),
            processes: Some(100),
            cpus: Some(1.5),
            allow_network: false,
            sandboxed: true,
            chroot: true,
            network_property: true,
        };
        let text = toml::to_string(&runner(&config)).unwrap();
        let runner: bb_runner::config::Config = bb_util::config::parse(&text, "runner").unwrap();
        assert_eq!(runner.build_directory, odd.join("build"));
        assert_eq!(runner.sandbox.cgroup_parent.as_deref(), Some("c"));
        assert!(runner.sandbox.network_property && !runner.sandbox.allow_network);
        assert!(runner.sandbox.namespaces && runner.sandbox.cgroups && runner.chroot_into_input_root);
        assert_eq!(runner.sandbox.limits.memory, Some(ByteSize(1 << 30)));
        assert_eq!((runner.sandbox.limits.processes, runner.sandbox.limits.cpus), (Some(100), Some(1.5)));
        let platform = platform(&[]).unwrap();
        let w = Worker {
            scheduler_port: 1,
            storage_port: 2,
            socket: &odd.join("s.sock"),
            build: &odd.join("build"),
            cache: &odd.join("cache"),
            cache_size: ByteSize(1 << 30),
            slots: 2,
            name: "vm",
            platform: &platform,
        };
        let table = worker(&w);
        bb_worker::check_config(&toml::to_string(&table).unwrap()).unwrap();
        assert_eq!(table["cache_directory"].as_str(), odd.join("cache").to_str());
        assert_eq!(table["platform"].as_array().map(Vec::len), Some(2));
        let mut table = scheduler("[::]:8980", 8983, "[::]:7982", odd, ByteSize(1 << 30), &[]);
        bb_scheduler::check_config(&toml::to_string(&table).unwrap()).unwrap();
        let nodes = ["grpc://127.0.0.1:9001".to_string(), "grpc://127.0.0.1:9002".to_string()];
        shard_storage(&mut table, &nodes, 2);
        bb_scheduler::check_config(&toml::to_string(&table).unwrap()).unwrap();
        let cas = &table["storage"]["cas"];
        assert_eq!((cas["backend"].as_str(), cas["copies"].as_integer()), (Some("sharding"), Some(2)));
        assert_eq!(table["storage"]["action_cache"]["store"]["shards"].as_array().map(Vec::len), Some(2));

        let mut table = scheduler("[::]:8980", 8983, "[::]:7982", odd, ByteSize(1 << 30), &[]);
        let credentials = odd.join("credentials");
        let bucket = Bucket {
            name: "farm",
            endpoint: Some("http://[::1]:8333"),
            credentials_file: Some(&credentials),
        };
        bucket_storage(&mut table, &bucket);
        bb_scheduler::check_config(&toml::to_string(&table).unwrap()).unwrap();
        for (store, prefix) in
            [(&table["storage"]["cas"], "cas"), (&table["storage"]["action_cache"]["store"], "ac")]
        {
            assert_eq!(store["fast"]["backend"].as_str(), Some("disk"));
            assert_eq!(store["slow"]["prefix"].as_str(), Some(prefix));
            assert_eq!(store["slow"]["credentials_file"].as_str(), credentials.to_str());
        }
    }

    #[test]
    fn every_program_exports_spans_when_told_where() {
        let dir = Path::new("/tmp/farm");
        let endpoint = "http://127.0.0.1:4317";
        let mut table = scheduler("[::]:8980", 8983, "[::]:7982", dir, ByteSize(1 << 30), &[]);
        export_spans(&mut table, Some(endpoint));
        let config: bb_scheduler::config::Config =
            bb_util::config::parse(&toml::to_string(&table).unwrap(), "s").unwrap();
        assert_eq!(config.log.otlp.map(|o| o.endpoint).as_deref(), Some(endpoint));
        assert_eq!(config.log.level, "warn", "the rest of the log section is kept");
        let (socket, build) = (dir.join("s.sock"), dir.join("build"));
        let r = Runner {
            socket: &socket,
            build: &build,
            kill_user_processes: false,
            cgroup_parent: None,
            memory: None,
            processes: None,
            cpus: None,
            allow_network: false,
            sandboxed: true,
            chroot: false,
            network_property: false,
        };
        let mut table = runner(&r);
        export_spans(&mut table, Some(endpoint));
        let config: bb_runner::config::Config =
            bb_util::config::parse(&toml::to_string(&table).unwrap(), "r").unwrap();
        assert_eq!(config.log.otlp.map(|o| o.endpoint).as_deref(), Some(endpoint));
    }
}
