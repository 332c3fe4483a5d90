//! A loopback TCP proxy a test puts between a client and a server, to make
//! the server look slow or hung without touching it.
//!
//! Client → server bytes always pass at once, so the server still executes
//! every command it is sent. Server → client bytes pass according to a
//! switch shared by every connection:
//!
//! - [`SlowProxy::heal`]: at once (the initial state);
//! - [`SlowProxy::delay`]: each chunk read from the server is held for a
//!   while before it is written to the client (order is kept);
//! - [`SlowProxy::stall`]: everything read from the server is held until
//!   the switch changes, then delivered in order.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What happens to the bytes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwarded at once.
    Pass,
    /// Each chunk is forwarded after this delay.
    Delay(Duration),
    /// Held until the mode changes.
    Stall,
}

/// A proxy on a loopback port of its own, in front of `upstream`. Its tasks
/// run on the runtime that started it and are aborted when it is dropped.
#[derive(Debug)]
pub struct SlowProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SlowProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> SlowProxy {
        assert!(upstream.ip().is_loopback(), "loopback only: {upstream}");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Pass);
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let mode = mode.clone();
            let tasks = Arc::downgrade(&tasks);
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Some(tasks) = tasks.upgrade() else {
                        return;
                    };
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        // The server is down: the client sees a closed
                        // connection, as it would without the proxy.
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pump_up(client_read, server_write));
                    let down = tokio::spawn(pump_down(server_read, client_write, mode.subscribe()));
                    lock(&tasks).extend([up, down]);
                }
            })
        };
        lock(&tasks).push(accept);
        SlowProxy { addr, mode, tasks }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Forwards the server's bytes, each chunk after `delay`.
    pub fn delay(&self, delay: Duration) {
        self.mode.send_replace(Mode::Delay(delay));
    }

    /// Holds everything the server sends until [`heal`](Self::heal) (or
    /// [`delay`](Self::delay)).
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Forwards at once again, the held bytes first.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Client → server: at once.
async fn pump_up(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Server → client: as the mode says.
async fn pump_down(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Stalled: the chunk is held (and nothing more is read) until the
        // switch changes.
        let current = match mode.wait_for(|m| *m != Mode::Stall).await {
            Ok(current) => *current,
            Err(_) => break,
        };
        if let Mode::Delay(delay) = current {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
