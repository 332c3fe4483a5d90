//! Redis Cluster nodes for the tests: cluster-enabled servers on free
//! loopback ports, joined with `redis-cli --cluster create`, stopped by pid
//! and their config files removed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::RedisServer;

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
            .map(|_| {
                let files = files.clone();
                let extra = extra.clone();
                RedisServer::launch_with(move |port| {
                    let file = std::env::temp_dir()
                        .join(format!("tca-cluster-{}-{port}.conf", std::process::id()));
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
            })
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
        // `cluster_state:ok` a moment later. No event announces it: look,
        // bounded to 20 s.
        for node in &nodes {
            let start = std::time::Instant::now();
            loop {
                let info = Command::new("redis-cli")
                    .args(cli)
                    .args(["-p", &node.port().to_string(), "CLUSTER", "INFO"])
                    .output()
                    .expect("run redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(20),
                    "node {} never says cluster_state:ok",
                    node.port()
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        let files = files.lock().unwrap().clone();
        ClusterNodes { nodes, files }
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
