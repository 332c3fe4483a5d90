//! A `redis-server` child process on a free loopback port, for the tests
//! and the benchmarks (which include this file by path); `valkey-server`
//! when `TCA_REDIS_SERVER` names it.
//!
//! The server is awaited by its "Ready to accept connections" log line, not
//! by sleeping, and killed by its pid on drop. It never uses port 6379 and
//! never touches a server it did not start.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

/// How long a starting `redis-server` may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` child process on a loopback port of its own.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Arguments added to the command line (a cluster node's, say).
    extra: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a server on a free loopback port (another port on a clash).
    pub fn launch() -> RedisServer {
        RedisServer::launch_with(|_| Vec::new())
    }

    /// Starts a server on a free loopback port with the arguments `extra`
    /// makes for that port added to its command line.
    pub fn launch_with(extra: impl Fn(u16) -> Vec<String>) -> RedisServer {
        let mut errors = Vec::new();
        for _ in 0..10 {
            let port = free_port();
            let extra = extra(port);
            match spawn_redis(port, &extra) {
                Ok(child) => {
                    return RedisServer {
                        port,
                        extra,
                        child: Mutex::new(Some(child)),
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        panic!("could not start redis-server: {errors:#?}");
    }

    /// Starts a server on `port`, which the caller picked (for instance a
    /// port a client was already told to connect to while nothing listened
    /// there). Panics when the port is taken or the server does not start.
    pub fn launch_on(port: u16) -> RedisServer {
        let server = RedisServer {
            port,
            extra: Vec::new(),
            child: Mutex::new(None),
        };
        server.start();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.lock().is_some()
    }

    /// Kills the server (by its pid) and reaps it.
    pub fn stop(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(std::env::temp_dir().join(rdb_name(self.port)));
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn start(&self) {
        let mut slot = self.lock();
        assert!(slot.is_none(), "redis-server on {} is running", self.port);
        let mut errors = Vec::new();
        for _ in 0..5 {
            match spawn_redis(self.port, &self.extra) {
                Ok(child) => {
                    *slot = Some(child);
                    return;
                }
                Err(error) => errors.push(error),
            }
        }
        panic!(
            "could not restart redis-server on port {}: {errors:#?}",
            self.port
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server shared by the tests of this binary that are running now: the
/// last one to finish stops it, so the child never outlives the tests (a
/// `static` would never be dropped). With one process per test (nextest) it
/// is one server per test.
pub fn shared_redis() -> Arc<RedisServer> {
    static SHARED: Mutex<Weak<RedisServer>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(RedisServer::launch());
    *slot = Arc::downgrade(&server);
    server
}

/// A loopback port that was free a moment ago (never 6379).
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        if port != 6379 {
            return port;
        }
    }
}

fn spawn_redis(port: u16, extra: &[String]) -> Result<Child, String> {
    assert_ne!(port, 6379, "the tests never use the default Redis port");
    let dir = std::env::temp_dir();
    // A file of its own: a replica writes the RDB of its full sync there,
    // and a server loads it at start; a shared dump.rdb would hand one
    // test's entries to another's new server.
    let rdb = rdb_name(port);
    let _ = std::fs::remove_file(dir.join(&rdb));
    let mut command = Command::new(server_binary());
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .arg("--dbfilename")
        .arg(&rdb)
        .args(extra);
    spawn_ready(command, port, "Ready to accept connections")
}

/// The server binary the tests run: `redis-server`, or the one the
/// environment variable `TCA_REDIS_SERVER` names (scripts/test runs the
/// suite a second time on `valkey-server` that way).
pub fn server_binary() -> String {
    std::env::var("TCA_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// The RDB file name of the server on `port` started by this process.
fn rdb_name(port: u16) -> String {
    format!("tca-{}-{port}.rdb", std::process::id())
}

/// A `redis-server --sentinel` child process on a free loopback port,
/// watching the primary `service` on `primary_port` (quorum 2, down after
/// 1 s); its config file is removed on drop.
#[derive(Debug)]
pub struct Sentinel {
    port: u16,
    file: std::path::PathBuf,
    child: Option<Child>,
}

impl Sentinel {
    pub fn launch(service: &str, primary_port: u16) -> Sentinel {
        Sentinel::launch_with(service, primary_port, |port| format!("port {port}\n"))
    }

    /// As [`launch`](Self::launch), with the config lines `listen` makes
    /// for the sentinel's port in place of `port <port>` (a TLS port, say).
    pub fn launch_with(
        service: &str,
        primary_port: u16,
        listen: impl Fn(u16) -> String,
    ) -> Sentinel {
        let mut errors = Vec::new();
        for _ in 0..10 {
            let port = free_port();
            let file = std::env::temp_dir()
                .join(format!("tca-sentinel-{}-{port}.conf", std::process::id()));
            let config = format!(
                "{}bind 127.0.0.1\ndir {}\n\
                 sentinel monitor {service} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 10000\n\
                 sentinel parallel-syncs {service} 1\n",
                listen(port),
                std::env::temp_dir().display()
            );
            std::fs::write(&file, config).expect("write a sentinel config file");
            let mut command = Command::new(server_binary());
            command.arg(&file).arg("--sentinel");
            match spawn_ready(command, port, "+monitor master") {
                Ok(child) => {
                    return Sentinel {
                        port,
                        file,
                        child: Some(child),
                    }
                }
                Err(error) => {
                    let _ = std::fs::remove_file(&file);
                    errors.push(error);
                }
            }
        }
        panic!("could not start a sentinel: {errors:#?}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Spawns `command` and waits for its log to say `ready`.
fn spawn_ready(mut command: Command, port: u16, ready: &'static str) -> Result<Child, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server (is it on PATH?): {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), Vec<String>>>();
    // Reads the log until the server is ready, then drains it until the
    // process ends so that the pipe never fills up.
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &ready_tx {
                if line.contains(ready) {
                    let _ = tx.send(Ok(()));
                    ready_tx = None;
                } else {
                    seen.push(line);
                }
            }
        }
        if let Some(tx) = ready_tx {
            let _ = tx.send(Err(seen));
        }
    });
    let failure = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(())) => return Ok(child),
        Ok(Err(log)) => format!("redis-server on port {port} exited:\n{}", log.join("\n")),
        Err(_) => format!("redis-server on port {port} not ready after {READY_TIMEOUT:?}"),
    };
    let _ = child.kill();
    let _ = child.wait();
    Err(failure)
}
