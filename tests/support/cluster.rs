//! Redis Cluster nodes for the tests: cluster-enabled servers on free
//! loopback ports, joined with `redis-cli --cluster create`, stopped by pid
//! and their config files removed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use fred::clients::Client;

use super::{admin, RedisServer};

/// `count` cluster nodes: the first `count / (replicas + 1)` primaries,
/// the others their replicas (`redis-cli` assigns them).
pub struct ClusterNodes {
    pub nodes: Vec<RedisServer>,
    files: Vec<PathBuf>,
}

impl ClusterNodes {
    /// Starts the nodes and assigns the 16384 slots; `create` returns once
    /// the nodes agree on them.
    pub fn start(count: usize, replicas: usize) -> ClusterNodes {
        ClusterNodes::start_with(count, replicas, |_| Vec::new(), &[])
    }

    /// As [`start`](Self::start), with the arguments `extra` makes for a
    /// node's port added to its command line, and `cli` to `redis-cli`'s
    /// (a TLS cluster's, say).
    pub fn start_with(
        count: usize,
        replicas: usize,
        extra: impl Fn(u16) -> Vec<String> + Clone,
        cli: &[String],
    ) -> ClusterNodes {
        let files = Arc::new(Mutex::new(Vec::new()));
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| launch_node(&files, extra.clone()))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = Command::new("redis-cli")
            .args(cli)
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli (it comes with redis-server)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        // `create` returns once the nodes agree on the slots; each says
        // `cluster_state:ok` a moment later.
        for node in &nodes {
            wait_state_ok(node.port(), cli);
        }
        let files = files.lock().unwrap().clone();
        ClusterNodes { nodes, files }
    }

    /// Starts one more node and adds it to the cluster as a primary that
    /// owns no slot (`redis-cli --cluster add-node`), as a cluster grows
    /// before a reshard; returns when every node lists it. Plain TCP.
    pub fn add_empty_primary(&mut self) -> u16 {
        let files = Arc::new(Mutex::new(Vec::new()));
        let node = launch_node(&files, |_| Vec::new());
        let port = node.port();
        self.files.extend(files.lock().unwrap().drain(..));
        let added = Command::new("redis-cli")
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("127.0.0.1:{}", self.nodes[0].port()))
            .output()
            .expect("run redis-cli");
        assert!(
            added.status.success(),
            "redis-cli --cluster add-node: {}",
            String::from_utf8_lossy(&added.stdout)
        );
        self.nodes.push(node);
        // Known to all (gossip), and in a cluster that is ok.
        let count = self.nodes.len();
        for node in &self.nodes {
            wait_for_cli(node.port(), &[], &["CLUSTER", "NODES"], |text| {
                text.lines().filter(|l| l.contains(" connected")).count() == count
                    && !text.contains("handshake")
            });
        }
        wait_state_ok(port, &[]);
        port
    }

    /// A `redis-cluster://` URL naming every node.
    pub fn url(&self) -> String {
        let first = self.nodes[0].port();
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", others.join("&"))
    }
}

/// Starts one cluster-enabled node, its config file named in `files`.
fn launch_node(
    files: &Arc<Mutex<Vec<PathBuf>>>,
    extra: impl Fn(u16) -> Vec<String>,
) -> RedisServer {
    let files = files.clone();
    RedisServer::launch_with(move |port| {
        let file =
            std::env::temp_dir().join(format!("tca-cluster-{}-{port}.conf", std::process::id()));
        let _ = std::fs::remove_file(&file);
        files.lock().unwrap().push(file.clone());
        let mut args: Vec<String> = vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            file.display().to_string(),
            // A replica's full sync starts at once, by socket.
            "--repl-diskless-sync".into(),
            "yes".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--repl-diskless-load".into(),
            "on-empty-db".into(),
        ];
        args.extend(extra(port));
        args
    })
}

/// Waits until the node on `port` says `cluster_state:ok`.
fn wait_state_ok(port: u16, cli: &[String]) {
    wait_for_cli(port, cli, &["CLUSTER", "INFO"], |text| {
        text.contains("cluster_state:ok")
    });
}

/// Runs `redis-cli` `command` on `port` until `done` holds of its output.
/// No event announces a cluster's state: look, bounded to 20 s.
fn wait_for_cli(port: u16, cli: &[String], command: &[&str], done: impl Fn(&str) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let out = Command::new("redis-cli")
            .args(cli)
            .args(["-p", &port.to_string()])
            .args(command)
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        if done(&text) {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "node {port}: {command:?} never as expected: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for ClusterNodes {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.stop();
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// One slot's migration between two primaries, by hand, as `redis-cli
/// --cluster reshard` makes it: [`open`](Self::open) (`SETSLOT
/// IMPORTING` on the target, `MIGRATING` on the source),
/// [`move_keys`](Self::move_keys) (`GETKEYSINSLOT`, `MIGRATE`), then
/// [`close`](Self::close) (`SETSLOT NODE` on the target, the source and
/// every other primary).
pub struct SlotMigration<'a> {
    pub source: &'a Client,
    pub target: &'a Client,
    /// The target's port, for `MIGRATE`.
    pub target_port: u16,
    /// Every other primary, told the new owner at the close.
    pub others: Vec<&'a Client>,
}

/// The port of the primary that owns `slot`, as `client`'s node sees
/// the cluster (`CLUSTER NODES`).
pub async fn slot_owner(client: &Client, slot: u16) -> u16 {
    let text: String = admin(client, &["CLUSTER", "NODES"])
        .await
        .expect("CLUSTER NODES");
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let owns = fields.iter().skip(8).any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
        });
        if owns {
            let address = fields[1].split(['@', ',']).next().unwrap_or_default();
            return address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("port in {line:?}"));
        }
    }
    panic!("no owner of slot {slot} in {text}");
}

/// A node's id (`CLUSTER MYID`).
pub async fn node_id(client: &Client) -> String {
    admin(client, &["CLUSTER", "MYID"])
        .await
        .expect("CLUSTER MYID")
}

impl SlotMigration<'_> {
    async fn setslot(node: &Client, slot: u16, state: &str, id: &str) {
        let reply: String = admin(node, &["CLUSTER", "SETSLOT", &slot.to_string(), state, id])
            .await
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
        assert_eq!(reply, "OK");
    }

    /// Opens `slot`: importing on the target, migrating on the source.
    pub async fn open(&self, slot: u16) {
        let (source, target) = (node_id(self.source).await, node_id(self.target).await);
        Self::setslot(self.target, slot, "IMPORTING", &source).await;
        Self::setslot(self.source, slot, "MIGRATING", &target).await;
    }

    /// Moves `key` (of an open slot) from the source to the target.
    pub async fn move_key(&self, key: &str) {
        let port = self.target_port.to_string();
        let reply: String = admin(
            self.source,
            &["MIGRATE", "127.0.0.1", &port, key, "0", "5000"],
        )
        .await
        .expect("MIGRATE");
        assert_eq!(reply, "OK", "MIGRATE {key}");
    }

    /// Moves every key of `slot` from the source to the target, each
    /// `GETKEYSINSLOT` page in one `MIGRATE`; returns how many.
    pub async fn move_keys(&self, slot: u16) -> usize {
        let mut moved = 0;
        loop {
            let keys: Vec<String> = admin(
                self.source,
                &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "1000"],
            )
            .await
            .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                return moved;
            }
            moved += keys.len();
            let port = self.target_port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let reply: String = admin(self.source, &args).await.expect("MIGRATE");
            assert!(
                ["OK", "NOKEY"].contains(&reply.as_str()),
                "MIGRATE: {reply}"
            );
        }
    }

    /// Gives `slot` to the target, on every primary.
    pub async fn close(&self, slot: u16) {
        let target = node_id(self.target).await;
        Self::setslot(self.target, slot, "NODE", &target).await;
        Self::setslot(self.source, slot, "NODE", &target).await;
        for other in &self.others {
            Self::setslot(other, slot, "NODE", &target).await;
        }
    }
}
