//! The classic cache-aside exercise, done with the typed [`Cache`]: a users
//! "database" that takes 100 ms to read and 50 ms to write, read through
//! the cache, updated, and read again.
//!
//! ```sh
//! cargo run --example classic
//! ```
//!
//! It uses Redis at `$REDIS_URL` (default `redis://127.0.0.1:6379`); when
//! `REDIS_URL` is unset and no Redis answers, it caches in process
//! ([`MemoryStore`]); when it is set and Redis does not answer, it runs
//! uncached until Redis does. It prints the story with the times it measured:
//!
//! ```text
//! caching in Redis at redis://127.0.0.1:6379
//! 1st read of user 1: MISS   102.7 ms  Alice
//! 2nd read of user 1: HIT      0.3 ms  Alice
//! update user 1 -> Alicia (invalidated 1 entry)
//! 3rd read of user 1: MISS   101.5 ms  Alicia
//! read of user 9: MISS   102.7 ms  (none), then HIT 0.3 ms (none) (cached as absent)
//! database reads: 3, writes: 1
//! ```

use std::collections::HashMap;
use std::env;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tower_cache_aside::{Cache, MemoryStore, RedisStore, Store};

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// The slow database the cache is for.
#[derive(Default)]
struct Db {
    users: Mutex<HashMap<u64, User>>,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl Db {
    fn seeded() -> Db {
        let db = Db::default();
        if let Ok(mut users) = db.users.lock() {
            for (id, name, email) in [
                (1, "Alice", "alice@example.com"),
                (2, "Bob", "bob@example.com"),
            ] {
                let user = User {
                    id,
                    name: name.into(),
                    email: email.into(),
                };
                users.insert(id, user);
            }
        }
        db
    }

    async fn get_user(&self, id: u64) -> Result<Option<User>, std::io::Error> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .users
            .lock()
            .ok()
            .and_then(|users| users.get(&id).cloned()))
    }

    async fn rename(&self, id: u64, name: &str) -> Result<(), std::io::Error> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut users) = self.users.lock() {
            if let Some(user) = users.get_mut(&id) {
                user.name = name.to_owned();
            }
        }
        Ok(())
    }
}

/// Cache-aside read: the cache, else the database (and cache what it says).
async fn get_user(
    cache: &Cache,
    db: &Arc<Db>,
    id: u64,
) -> Result<(Option<User>, &'static str, f64), std::io::Error> {
    let fetched = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let user = {
        let (db, fetched) = (db.clone(), fetched.clone());
        cache
            .get_or_fetch(&format!("user:{id}"), TTL, move || async move {
                fetched.fetch_add(1, Ordering::SeqCst);
                db.get_user(id).await
            })
            .await?
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let outcome = if fetched.load(Ordering::SeqCst) > 0 {
        "MISS"
    } else {
        "HIT "
    };
    Ok((user, outcome, ms))
}

fn name(user: &Option<User>) -> String {
    user.as_ref()
        .map_or("(none)".to_owned(), |u| u.name.clone())
}

async fn open_store() -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    let explicit = env::var("REDIS_URL").ok();
    let url = explicit
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
    match tokio::time::timeout(Duration::from_secs(3), RedisStore::connect(&url)).await {
        Ok(Ok(store)) => {
            println!("caching in Redis at {url}");
            Ok(Arc::new(store))
        }
        Ok(Err(tower_cache_aside::Error::Redis(error)))
            if *error.kind() == fred::error::ErrorKind::Auth =>
        {
            Err(format!("Redis at {url} refused the login: {error}").into())
        }
        _ if explicit.is_some() => {
            println!("Redis at {url} does not answer yet: uncached until it does");
            Ok(Arc::new(RedisStore::connect_lazy(&url)?))
        }
        _ => {
            println!("no Redis at {url}: caching in process (MemoryStore)");
            Ok(Arc::new(MemoryStore::new()))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Arc::new(Db::seeded());
    // A prefix of its own per run, so that runs do not read each other.
    let prefix = format!("classic-example:{}:", std::process::id());
    let cache = Cache::builder(open_store().await?)
        .prefix(prefix)
        .store_timeout(Duration::from_secs(1))
        .build()?;

    let (user, outcome, ms) = get_user(&cache, &db, 1).await?;
    println!("1st read of user 1: {outcome} {ms:7.1} ms  {}", name(&user));
    let (user, outcome, ms) = get_user(&cache, &db, 1).await?;
    println!("2nd read of user 1: {outcome} {ms:7.1} ms  {}", name(&user));

    db.rename(1, "Alicia").await?;
    let invalidated = cache.invalidate("user:1").await?;
    println!("update user 1 -> Alicia (invalidated {invalidated} entry)");

    let (user, outcome, ms) = get_user(&cache, &db, 1).await?;
    println!("3rd read of user 1: {outcome} {ms:7.1} ms  {}", name(&user));

    let (user, outcome, ms) = get_user(&cache, &db, 9).await?;
    let (again, outcome2, ms2) = get_user(&cache, &db, 9).await?;
    println!(
        "read of user 9: {outcome} {ms:7.1} ms  {}, then {} {ms2:.1} ms {} (cached as absent)",
        name(&user),
        outcome2.trim(),
        name(&again)
    );
    println!(
        "database reads: {}, writes: {}",
        db.reads.load(Ordering::SeqCst),
        db.writes.load(Ordering::SeqCst)
    );
    cache.invalidate_pattern("user:*").await?;
    Ok(())
}
