//! What the store knows of a Cluster's slots being migrated: the node
//! importing each, and a client of the store's own per such node, on which
//! `call.rs` sends `ASKING`, then the command.
//!
//! fred 10.1 cannot be let follow `ASK` (see `call.rs`), so the store asks
//! the slot's owner which node imports it (`CLUSTER NODES` marks the slot
//! `[<slot>->-<node id>]` on its own line), remembers the answer for the
//! slot, and sends the two commands pipelined on a plain client of that
//! node, made the first time it is needed with the store's settings (TLS
//! and credentials included). A node that owns no slot yet, as one added to
//! a cluster is until its first slot arrives, is one fred does not connect
//! to; this client reaches it all the same.
//!
//! The invariants kept: `ASKING` and its command go on one connection, one
//! right after the other, with nothing between them (fred writes a
//! pipeline's commands in a row); an importing node learnt from an owner is
//! forgotten as soon as it answers a redirection itself (the migration
//! ended, or went elsewhere); each node gets one client, quit when the
//! store is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::config::{Server, ServerConfig};
use fred::types::Builder;
use tokio::sync::OnceCell;

use crate::Error;

/// Most slots remembered as migrating (all 16,384 fit; this only bounds
/// memory against a cluster that migrates everything at once).
const MAX_SLOTS: usize = 16_384;

/// The slots this store has found migrating, and its clients of the nodes
/// importing them; shared by every view of one store.
#[derive(Default)]
pub(super) struct Migrations {
    /// A migrating slot, and the node importing it.
    targets: Mutex<HashMap<u16, Server>>,
    /// A client per importing node, made on first use.
    clients: Mutex<HashMap<Server, Arc<OnceCell<Client>>>>,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations").finish_non_exhaustive()
    }
}

impl Migrations {
    /// The node importing `slot`, if this store has learnt of one.
    pub(super) fn known(&self, slot: u16) -> Option<Server> {
        lock(&self.targets).get(&slot).cloned()
    }

    /// Forgets that `slot` migrates (its importing node redirected a
    /// command itself).
    pub(super) fn forget(&self, slot: u16) {
        lock(&self.targets).remove(&slot);
    }

    /// Remembers the node importing `slot` that `nodes` (`CLUSTER NODES`
    /// as the slot's owner answered it) names, and returns it; `None` when
    /// it names none (the redirection was a `MOVED`).
    pub(super) fn learn(&self, nodes: &str, slot: u16) -> Option<Server> {
        let target = importing_node(nodes, slot)?;
        let mut targets = lock(&self.targets);
        if targets.len() >= MAX_SLOTS {
            targets.clear();
        }
        targets.insert(slot, target.clone());
        Some(target)
    }

    /// This store's client of `node`, made with the settings of `store`
    /// (the store's own client) and connected, within `wait`, the first
    /// time.
    pub(super) async fn client(
        &self,
        store: &Client,
        node: &Server,
        wait: Duration,
    ) -> Result<Client, Error> {
        let cell = lock(&self.clients).entry(node.clone()).or_default().clone();
        let connect = || async {
            let mut config = store.client_config();
            config.server = ServerConfig::Centralized {
                server: node.clone(),
            };
            let mut builder = Builder::from_config(config);
            builder
                .set_connection_config(store.connection_config().clone())
                .set_performance_config(store.perf_config());
            if let Some(policy) = store.client_reconnect_policy() {
                builder.set_policy(policy);
            }
            let client = builder.build()?;
            match tokio::time::timeout(wait, client.init()).await {
                Ok(Ok(_)) => Ok(client),
                Ok(Err(error)) => {
                    let _ = client.quit().await;
                    Err(Error::Redis(error))
                }
                Err(_) => {
                    let _ = client.quit().await;
                    Err(Error::Timeout(wait))
                }
            }
        };
        cell.get_or_try_init(connect).await.cloned()
    }
}

impl Drop for Migrations {
    /// Quits the clients of importing nodes (in the background, on the
    /// runtime the store is dropped on, if any).
    fn drop(&mut self) {
        let clients: Vec<Client> = lock(&self.clients)
            .drain()
            .filter_map(|(_, cell)| cell.get().cloned())
            .collect();
        if clients.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for client in clients {
                    let _ = client.quit().await;
                }
            });
        }
    }
}

/// The map behind `mutex`, even if a panic poisoned it (its maps stay
/// consistent: each change is one insert or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A primary as its own `CLUSTER NODES` line shows it: what a pattern
/// purge compares before and after its scan (`purge.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OwnView {
    /// How many slots it owns.
    pub(super) slots: u32,
    /// Whether it is importing a slot (a `[<slot>-<-<id>]` mark).
    pub(super) importing: bool,
}

/// The primaries `CLUSTER NODES` lists (flag `master`, not failed, with an
/// address), by address.
pub(super) fn primaries(nodes: &str) -> Vec<Server> {
    nodes
        .lines()
        .filter(|line| {
            line.split_whitespace().nth(2).is_some_and(|flags| {
                let mut flags = flags.split(',');
                flags.clone().any(|flag| flag == "master")
                    && !flags.any(|flag| flag == "fail" || flag == "noaddr")
            })
        })
        .filter_map(|line| address(line.split_whitespace().nth(1)?))
        .collect()
}

/// What the node that answered `nodes` (`CLUSTER NODES`) says of itself
/// (its `myself` line); `None` for a bad answer.
pub(super) fn own_view(nodes: &str) -> Option<OwnView> {
    let myself = nodes.lines().find(|line| {
        line.split_whitespace()
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
    })?;
    let mut view = OwnView {
        slots: 0,
        importing: false,
    };
    for field in myself.split_whitespace().skip(8) {
        if field.starts_with('[') {
            view.importing |= field.contains("-<-");
            continue;
        }
        let (a, b) = field.split_once('-').unwrap_or((field, field));
        let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
        view.slots += u32::from(b.saturating_sub(a)) + 1;
    }
    Some(view)
}

/// A node's address as `CLUSTER NODES` writes it (`ip:port@bus-port`,
/// then perhaps `,hostname`); `None` when it has none.
fn address(field: &str) -> Option<Server> {
    let endpoint = field.split(['@', ',']).next()?;
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some(Server::new(host, port))
}

/// The node importing `slot`, from `CLUSTER NODES` as the slot's owner
/// answers it: its own line (`myself`) marks the slot `[<slot>->-<id>]`,
/// and the line of `<id>` gives its address (`ip:port@bus-port`, then
/// perhaps `,hostname`). Anything else (no mark, no such node, no address,
/// a bad line) is `None`.
fn importing_node(nodes: &str, slot: u16) -> Option<Server> {
    let mark = format!("[{slot}->-");
    let myself = nodes.lines().find(|line| {
        line.split_whitespace()
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
    })?;
    let id = myself
        .split_whitespace()
        .skip(8)
        .find_map(|field| field.strip_prefix(&mark)?.strip_suffix(']'))?;
    let line = nodes
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id))?;
    address(line.split_whitespace().nth(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,cache-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f] [77-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    #[test]
    fn the_importing_node_is_read_off_the_owners_own_line() {
        let node = importing_node(NODES, 93).expect("slot 93 migrates");
        assert_eq!((&*node.host, node.port), ("127.0.0.1", 30003));
        // Importing here, not migrating from here; not open at all.
        assert!(importing_node(NODES, 77).is_none());
        assert!(importing_node(NODES, 94).is_none());
        assert!(importing_node(NODES, 9).is_none());
    }

    #[test]
    fn primaries_and_a_nodes_own_view_are_read_off_the_list() {
        let ports: Vec<u16> = primaries(NODES).iter().map(|s| s.port).collect();
        assert_eq!(ports, [30002, 30003, 30001]);
        assert_eq!(
            own_view(NODES),
            Some(OwnView {
                slots: 5461,
                importing: true
            })
        );
        let failed = "a 127.0.0.1:1@2 master,fail - 0 0 1 connected 0-5\nb :0@0 master,noaddr - 0 0 1 connected\n";
        assert!(primaries(failed).is_empty());
        assert_eq!(
            own_view("a 127.0.0.1:1@2 master - 0 0 1 connected 0-5\n"),
            None
        );
        assert_eq!(
            own_view("a 127.0.0.1:1@2 myself,master - 0 0 1 connected x-5\n"),
            None
        );
    }

    #[test]
    fn a_bad_answer_names_no_node() {
        for nodes in [
            "",
            "garbage",
            // No myself line.
            "e7d1 127.0.0.1:30001@31001 master - 0 0 1 connected 0-5460 [93->-abc]\n",
            // A mark naming an unknown node.
            "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected [93->-abc]\n",
            // A node with no address (not yet met), or a bad port.
            "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected [93->-abc]\nabc :0@0 master - 0 0 1 connected\n",
            "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected [93->-abc]\nabc 127.0.0.1:x@1 master - 0 0 1 connected\n",
        ] {
            assert!(importing_node(nodes, 93).is_none(), "{nodes:?}");
        }
        let ipv6 = "e7d1 [::1]:1@2 myself,master - 0 0 1 connected [93->-abc]\nabc ::1:30005@31005 master - 0 0 1 connected\n";
        let node = importing_node(ipv6, 93).expect("an IPv6 node");
        assert_eq!((&*node.host, node.port), ("::1", 30005));
    }
}
