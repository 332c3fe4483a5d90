//! The load generator: a closed loop of HTTP/1.1 keep-alive requests.
//!
//! One hyper-util legacy client (its pool keeps one connection per worker
//! alive) on the client runtime. Each of N workers sends a request, reads
//! the whole body, and sends the next one at once, for a warm-up and then
//! a measured window; only requests that start and end inside the window
//! are counted and put in the latency histogram (nanoseconds, 3 significant
//! digits).
//!
//! Also: a burst of N requests sent at once (the stampede), and requests
//! sent one at a time (the miss cost).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A keep-alive client with `TCP_NODELAY`; idle connections stay pooled
/// for the whole run.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(600))
        .build(connector)
}

/// A latency histogram in nanoseconds, from 1 ns to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Which key each request asks for.
#[derive(Debug, Clone)]
pub enum Mix {
    /// Always the first key.
    Hot,
    /// Uniform over all keys.
    Uniform,
    /// Zipf over all keys (rank 1 = the first key).
    Zipf(Arc<Zipf>),
}

/// A Zipf distribution over `1..=n` with exponent `s`, sampled by inverting
/// its cumulative distribution (binary search).
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        assert!(n > 0, "Zipf over no keys");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// A key index in `0..n` (0 is the most frequent).
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// The share of requests that go to index `k`.
    #[cfg(test)]
    pub fn share(&self, k: usize) -> f64 {
        self.cdf[k] - if k == 0 { 0.0 } else { self.cdf[k - 1] }
    }
}

impl Mix {
    fn pick(&self, rng: &mut fastrand::Rng, n: usize) -> usize {
        match self {
            Mix::Hot => 0,
            Mix::Uniform => rng.usize(..n),
            Mix::Zipf(zipf) => zipf.sample(rng),
        }
    }
}

/// What a response must be to count as a success.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Body length; `None` accepts any.
    pub body_len: Option<usize>,
    /// Whether `Cache-Status` must say `hit` (tower-cache-aside only).
    pub hit_header: bool,
}

/// One response, read to its end.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    ok: bool,
    /// `Cache-Status` present and a hit.
    hit: bool,
    /// `Cache-Status` says the hit waited on another request's fill.
    collapsed: bool,
}

async fn send(client: &HttpClient, uri: &Uri, expect: Expect) -> Outcome {
    let request = Request::get(uri.clone())
        .body(Empty::new())
        .expect("a GET request");
    let Ok(response) = client.request(request).await else {
        return Outcome::default();
    };
    let status = response.status();
    let (hit, collapsed) = match response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => (
            v.starts_with("tower-cache-aside; hit"),
            v.contains("collapsed"),
        ),
        None => (false, false),
    };
    let Ok(body) = response.into_body().collect().await else {
        return Outcome::default();
    };
    let len_ok = expect.body_len.is_none_or(|n| body.to_bytes().len() == n);
    Outcome {
        ok: status == hyper::StatusCode::OK && len_ok,
        hit,
        collapsed,
    }
}

/// A closed-loop window: its counts and latencies.
#[derive(Debug)]
pub struct Window {
    /// Successful requests inside the measured window.
    pub requests: u64,
    /// Failed requests (transport error, status, body length) at any time.
    pub errors: u64,
    /// Successful requests that were not hits although `Expect::hit_header`.
    pub non_hits: u64,
    pub latency: Histogram<u64>,
    pub window: Duration,
}

impl Window {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }
}

/// Timing of a closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub concurrency: usize,
    pub warmup: Duration,
    pub window: Duration,
}

/// Runs `timing.concurrency` workers back to back over `uris` (picked by
/// `mix`) for the warm-up and the window. `at_window` runs when the window
/// opens and when it closes (CPU probes).
pub async fn closed_loop<P, F>(
    client: &HttpClient,
    uris: Arc<Vec<Uri>>,
    mix: Mix,
    timing: Timing,
    expect: Expect,
    mut at_window: P,
) -> (Window, [F::Output; 2])
where
    P: FnMut() -> F,
    F: std::future::Future,
{
    let start = Instant::now();
    let measure = start + timing.warmup;
    let end = measure + timing.window;
    let mut workers = JoinSet::new();
    for w in 0..timing.concurrency {
        let client = client.clone();
        let uris = uris.clone();
        let mix = mix.clone();
        workers.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(0x5eed_0000 + w as u64);
            let mut latency = histogram();
            let (mut requests, mut errors, mut non_hits) = (0u64, 0u64, 0u64);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let uri = &uris[mix.pick(&mut rng, uris.len())];
                let outcome = send(&client, uri, expect).await;
                let done = Instant::now();
                if !outcome.ok {
                    errors += 1;
                    continue;
                }
                if sent >= measure && done <= end {
                    requests += 1;
                    latency.saturating_record(nanos(done - sent));
                    if expect.hit_header && !outcome.hit {
                        non_hits += 1;
                    }
                }
            }
            (requests, errors, non_hits, latency)
        });
    }
    tokio::time::sleep_until(measure).await;
    let opened = at_window().await;
    tokio::time::sleep_until(end).await;
    let closed = at_window().await;
    let mut total = Window {
        requests: 0,
        errors: 0,
        non_hits: 0,
        latency: histogram(),
        window: timing.window,
    };
    while let Some(joined) = workers.join_next().await {
        let (requests, errors, non_hits, latency) = joined.expect("a load worker panicked");
        total.requests += requests;
        total.errors += errors;
        total.non_hits += non_hits;
        total
            .latency
            .add(&latency)
            .expect("histograms of the same bounds");
    }
    (total, [opened, closed])
}

/// A burst: one request per URI, all released at once.
#[derive(Debug)]
pub struct Burst {
    pub ok: u64,
    pub errors: u64,
    /// Responses whose `Cache-Status` says they waited on another's fill.
    pub collapsed: u64,
    pub latency: Histogram<u64>,
    /// From the release to the last response.
    pub wall: Duration,
}

pub async fn burst(client: &HttpClient, uris: Vec<Uri>, expect: Expect) -> Burst {
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    for uri in uris {
        let client = client.clone();
        let mut go = go_rx.clone();
        tasks.spawn(async move {
            let _ = go.wait_for(|go| *go).await;
            let sent = Instant::now();
            let outcome = send(&client, &uri, expect).await;
            (outcome, Instant::now() - sent)
        });
    }
    // Let every task reach the gate before it opens.
    tokio::task::yield_now().await;
    let released = Instant::now();
    go_tx.send_replace(true);
    let mut result = Burst {
        ok: 0,
        errors: 0,
        collapsed: 0,
        latency: histogram(),
        wall: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let (outcome, took) = joined.expect("a burst task panicked");
        if outcome.ok {
            result.ok += 1;
            result.latency.saturating_record(nanos(took));
        } else {
            result.errors += 1;
        }
        if outcome.collapsed {
            result.collapsed += 1;
        }
    }
    result.wall = released.elapsed();
    result
}

/// Requests sent one at a time, with `pause` after each (so that work a
/// contender does after its response, such as a cache fill, does not
/// overlap the next request).
#[derive(Debug)]
pub struct Sequential {
    pub errors: u64,
    pub latency: Histogram<u64>,
}

pub async fn sequential(
    client: &HttpClient,
    uris: impl IntoIterator<Item = Uri>,
    expect: Expect,
    pause: Duration,
) -> Sequential {
    let mut result = Sequential {
        errors: 0,
        latency: histogram(),
    };
    for uri in uris {
        let sent = Instant::now();
        let outcome = send(client, &uri, expect).await;
        let took = sent.elapsed();
        if outcome.ok {
            result.latency.saturating_record(nanos(took));
        } else {
            result.errors += 1;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    result
}

/// Sends every URI once, `width` at a time; returns how many failed.
pub async fn fetch_all(client: &HttpClient, uris: &[Uri], width: usize) -> u64 {
    let mut failed = 0;
    for chunk in uris.chunks(width.max(1)) {
        let mut tasks = JoinSet::new();
        for uri in chunk {
            let client = client.clone();
            let uri = uri.clone();
            let expect = Expect {
                body_len: None,
                hit_header: false,
            };
            tasks.spawn(async move { send(&client, &uri, expect).await.ok });
        }
        while let Some(ok) = tasks.join_next().await {
            if !ok.unwrap_or(false) {
                failed += 1;
            }
        }
    }
    failed
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_first_keys() {
        let zipf = Zipf::new(1000, 0.99);
        assert!(
            zipf.share(0) > 0.1 && zipf.share(0) < 0.2,
            "{}",
            zipf.share(0)
        );
        assert!(zipf.share(0) > 2.0 * zipf.share(1) * 0.95);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        let top = f64::from(counts[0]) / 100_000.0;
        assert!((top - zipf.share(0)).abs() < 0.01, "{top}");
        assert!(counts[999] < counts[0] / 100);
    }

    #[test]
    fn hot_and_uniform_mixes() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert!((0..100).all(|_| Mix::Hot.pick(&mut rng, 1000) == 0));
        let picks: std::collections::HashSet<usize> = (0..10_000)
            .map(|_| Mix::Uniform.pick(&mut rng, 1000))
            .collect();
        assert!(picks.len() > 990 && picks.iter().all(|&k| k < 1000));
    }
}
