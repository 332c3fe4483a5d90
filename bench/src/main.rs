//! Side-by-side HTTP benchmarks of tower-cache-aside (issue #7).
//!
//! ```text
//! cargo run --release -p bench -- all
//! ```
//!
//! Starts its own `redis-server` on a free loopback port (never 6379), six
//! contenders of one axum app on loopback listeners (see `servers.rs`),
//! drives them with a closed-loop load generator (`load.rs`), prints
//! Markdown tables, writes `target/bench/results.json` and
//! `target/bench/hits.svg`, and stops everything it started.
//!
//! Threads: the six servers share one single-threaded Tokio runtime on a
//! thread of their own; the load generator (and the orchestration) runs
//! on a single-threaded runtime on the main thread; `redis-server` is a
//! separate process. On 2 cores that is one core's worth for the servers
//! and one for the client, with Redis competing with both; every
//! contender is measured under the same arrangement, and the report gives
//! each thread's CPU time per request, which does not depend on who was
//! the bottleneck.
//!
//! Every figure is taken R times (default 3), alternating the contenders
//! in a rotating order within each repeat, and reported as
//! min / median / max over the repeats. A hit window during which other
//! processes took more than a quarter of a core is measured again (within
//! a budget that bounds the run's time), and the report says how much CPU
//! other processes used.
//!
//! Phases:
//!
//! - hits: for each scenario (body, key mix, concurrency), the caches are
//!   filled, then every contender gets a closed-loop window per repeat;
//! - miss: requests one at a time to new keys (origin without delay), and
//!   a `MONITOR` pass on span-recording copies of the Redis contenders that
//!   counts which Redis commands a response waited for;
//! - stampede: one burst of N requests on one cold key per contender and
//!   repeat, over connections opened beforehand.

#[path = "../../tests/support/redis_server.rs"]
mod redis_server;

mod common;
mod cpu;
mod load;
mod report;
mod servers;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client as FredClient;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::CustomCommand;
use futures_util::StreamExt;
use hyper::Uri;

use load::{Expect, HttpClient, Mix, Timing, Zipf};
use redis_server::RedisServer;
use report::{
    Commands, HitRep, HitResult, MissRep, MissResult, MixKind, Report, RoundTrips, Row, Scenario,
    Settings, StampedeRep, StampedeResult,
};
use servers::{Bodies, Contender, ServerRuntime, Servers, Size, KEYS, SMALL_BYTES};

const USAGE: &str = "\
usage: cargo run --release -p bench -- [all|hits|miss|stampede] [options]

  all         hits, miss cost and cold stampede (default)
  hits        hit throughput and latency of the six contenders
  miss        added latency of a miss over the origin alone
  stampede    origin calls and latency of a burst on one cold key

options:
  --repeats N             repeats of every figure (default 3)
  --window S              measured seconds per hit window (default 2)
  --warmup S              warm-up seconds before each hit window (default 0.5)
  --concurrency N[,N..]   concurrent requests of the hit scenarios (default 32)
  --runtime R             the servers' runtime in the hit scenarios: st (single-
                          threaded), mt (multi-threaded, a worker per core, as
                          #[tokio::main] builds) or both (default); miss and
                          stampede run on st
  --full                  every body x key mix (6 hit scenarios per concurrency)
                          instead of the default 4
  --contenders ID[,ID..]  hit windows for these contenders only (static,
                          hand-written, tca-redis, tca-memory, tower-http-cache,
                          origin; default all): fewer contenders alternate in
                          shorter cycles, so their paired ratios are tighter
  --miss-requests N       sequential misses per contender and repeat (default 200)
  --stampede-requests N   requests in the cold burst (default 500)
  --retry-budget N        hit windows that other processes disturbed (> 0.25 of a
                          core) and may be measured again (default 24)
  --quick                 a smoke run: 1 repeat, 0.3 s windows, small bursts
  --out DIR               where results.json and hits.svg go (default target/bench)
";

#[derive(Debug, Clone)]
struct Args {
    hits: bool,
    miss: bool,
    stampede: bool,
    repeats: usize,
    window: Duration,
    warmup: Duration,
    concurrency: Vec<usize>,
    runtimes: Vec<ServerRuntime>,
    full: bool,
    miss_requests: usize,
    stampede_requests: usize,
    out: PathBuf,
    retry_budget: usize,
    contenders: Vec<Contender>,
    raw: Vec<String>,
}

impl Args {
    fn parse(raw: Vec<String>) -> Result<Option<Args>, String> {
        let mut args = Args {
            hits: true,
            miss: true,
            stampede: true,
            repeats: 3,
            window: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            concurrency: vec![32],
            runtimes: vec![ServerRuntime::CurrentThread, ServerRuntime::multi()],
            full: false,
            miss_requests: 200,
            stampede_requests: 500,
            out: default_out(),
            retry_budget: RETRY_BUDGET,
            contenders: Contender::ALL.to_vec(),
            raw: raw.clone(),
        };
        let mut it = raw.into_iter();
        let mut command_seen = false;
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "all" | "hits" | "miss" | "stampede" if !command_seen => {
                    command_seen = true;
                    args.hits = matches!(arg.as_str(), "all" | "hits");
                    args.miss = matches!(arg.as_str(), "all" | "miss");
                    args.stampede = matches!(arg.as_str(), "all" | "stampede");
                }
                "--repeats" => args.repeats = positive(&value("--repeats")?)?,
                "--window" => args.window = seconds(&value("--window")?)?,
                "--warmup" => args.warmup = seconds(&value("--warmup")?)?,
                "--concurrency" => {
                    args.concurrency = value("--concurrency")?
                        .split(',')
                        .map(positive)
                        .collect::<Result<_, _>>()?;
                }
                "--runtime" => {
                    args.runtimes = match value("--runtime")?.as_str() {
                        "st" => vec![ServerRuntime::CurrentThread],
                        "mt" => vec![ServerRuntime::multi()],
                        "both" => vec![ServerRuntime::CurrentThread, ServerRuntime::multi()],
                        other => return Err(format!("--runtime: st, mt or both, not {other:?}")),
                    };
                }
                "--full" => args.full = true,
                "--contenders" => {
                    let wanted = value("--contenders")?;
                    let mut contenders = Vec::new();
                    for id in wanted.split(',') {
                        let contender = Contender::ALL
                            .into_iter()
                            .find(|c| c.id() == id)
                            .ok_or(format!("no contender is called {id:?}"))?;
                        if !contenders.contains(&contender) {
                            contenders.push(contender);
                        }
                    }
                    // Kept in their base order, whatever the order given.
                    args.contenders = Contender::ALL
                        .into_iter()
                        .filter(|c| contenders.contains(c))
                        .collect();
                }
                "--miss-requests" => args.miss_requests = positive(&value("--miss-requests")?)?,
                "--stampede-requests" => {
                    args.stampede_requests = positive(&value("--stampede-requests")?)?;
                }
                "--quick" => {
                    args.repeats = 1;
                    args.window = Duration::from_millis(300);
                    args.warmup = Duration::from_millis(100);
                    args.miss_requests = 20;
                    args.stampede_requests = 50;
                }
                "--out" => args.out = PathBuf::from(value("--out")?),
                "--retry-budget" => {
                    args.retry_budget = value("--retry-budget")?
                        .parse()
                        .map_err(|_| "--retry-budget needs a number".to_owned())?;
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(args))
    }

    fn scenarios(&self) -> Vec<Scenario> {
        let combos: Vec<(Size, MixKind)> = if self.full {
            [Size::Small, Size::Large]
                .into_iter()
                .flat_map(|size| {
                    [MixKind::Hot, MixKind::Uniform, MixKind::Zipf].map(|mix| (size, mix))
                })
                .collect()
        } else {
            vec![
                (Size::Small, MixKind::Hot),
                (Size::Small, MixKind::Uniform),
                (Size::Small, MixKind::Zipf),
                (Size::Large, MixKind::Hot),
            ]
        };
        let combos = &combos;
        self.concurrency
            .iter()
            .flat_map(|&concurrency| {
                combos.iter().flat_map(move |&(size, mix)| {
                    self.runtimes.iter().map(move |&runtime| Scenario {
                        size,
                        mix,
                        concurrency,
                        runtime,
                    })
                })
            })
            .collect()
    }

    fn command(&self) -> String {
        let mut command = "cargo run --release -p bench --".to_owned();
        if self.raw.is_empty() {
            command.push_str(" all");
        }
        for arg in &self.raw {
            command.push(' ');
            command.push_str(arg);
        }
        command
    }
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive integer, got {text:?}")),
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s < 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("expected seconds, got {text:?}")),
    }
}

/// `target/bench` of the workspace, or under `CARGO_TARGET_DIR` when set.
fn default_out() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench")
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1).collect()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("{error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    // Stopped on drop, on a panic too.
    let redis = RedisServer::launch();
    let bodies = Arc::new(Bodies::new());
    // The single-threaded servers always (miss and stampede run there),
    // the multi-threaded ones when a hit scenario asks for them.
    let mut kinds = vec![ServerRuntime::CurrentThread];
    for &runtime in &args.runtimes {
        if !kinds.contains(&runtime) {
            kinds.push(runtime);
        }
    }
    let mut all = Vec::new();
    for kind in kinds {
        match Servers::start(&redis.url(), bodies.clone(), kind) {
            Ok(servers) => all.push(servers),
            Err(error) => {
                eprintln!("cannot start the contenders: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client runtime");
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&args, &redis, &all, &bodies, started) => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    // The client's connections close with its runtime; then the servers
    // and redis-server stop.
    drop(runtime);
    for servers in &mut all {
        servers.stop();
    }
    redis.stop();

    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("bench failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    println!("{}", report.markdown());
    if let Err(error) = write_outputs(&args.out, &report) {
        eprintln!("cannot write the results: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn write_outputs(dir: &std::path::Path, report: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(&report.json()).map_err(std::io::Error::other)?;
    let json_path = dir.join("results.json");
    std::fs::write(&json_path, json + "\n")?;
    println!("written to {}", json_path.display());
    if !report.hits.is_empty() {
        let svg_path = dir.join("hits.svg");
        std::fs::write(&svg_path, report.hits_svg())?;
        println!("written to {}", svg_path.display());
    }
    Ok(())
}

/// What every phase needs.
struct Ctx<'a> {
    args: &'a Args,
    /// The servers of every runtime, the single-threaded ones first.
    all: &'a [Servers],
    client: HttpClient,
    /// The bench's own Redis connection (INFO, MONITOR markers, setup).
    control: FredClient,
    redis_url: String,
    client_schedstat: Option<PathBuf>,
    /// Disturbed hit windows that may still be measured again, and how
    /// many were.
    retries_left: Cell<usize>,
    retried: Cell<usize>,
}

/// A hit window during which other processes used more CPU than this is
/// measured again ...
const DISTURBED_CORES: f64 = 0.25;
/// ... at most this many times per run by default (a bound on the run's
/// time: 24 windows of 2.5 s add at most a minute).
const RETRY_BUDGET: usize = 24;

impl Ctx<'_> {
    async fn cpu(&self) -> cpu::Sample {
        self.cpu_of(self.st()).await
    }

    /// The single-threaded servers (the miss and stampede phases).
    fn st(&self) -> &Servers {
        self.on(ServerRuntime::CurrentThread)
    }

    /// The servers of the hit scenarios on `runtime`.
    fn on(&self, runtime: ServerRuntime) -> &Servers {
        self.all
            .iter()
            .find(|s| s.runtime == runtime)
            .unwrap_or(&self.all[0])
    }

    async fn cpu_of(&self, servers: &Servers) -> cpu::Sample {
        let threads = servers
            .schedstat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        cpu::Sample {
            server_ns: cpu::threads_cpu_ns(&threads),
            client_ns: cpu::thread_cpu_ns(self.client_schedstat.as_ref()),
            redis_us: cpu::redis_cpu_us(&self.control).await,
            system_ticks: cpu::system_busy_ticks(),
            process_ticks: cpu::process_ticks(),
        }
    }
}

async fn run(
    args: &Args,
    redis: &RedisServer,
    all: &[Servers],
    bodies: &Bodies,
    started: Instant,
) -> Result<Report, String> {
    let control = common::connect(&redis.url()).await?;
    let redis_version = common::info_field(&control, "server", "redis_version").await;
    // The hand-written contender's prepared keys.
    for chunk in bodies.hand_written_pairs().chunks(500) {
        control
            .mset(chunk.to_vec())
            .await
            .map_err(|e| format!("MSET: {e}"))?;
    }
    let ctx = Ctx {
        args,
        all,
        client: load::client(),
        control,
        redis_url: redis.url(),
        client_schedstat: cpu::thread_schedstat(),
        retries_left: Cell::new(args.retry_budget),
        retried: Cell::new(0),
    };
    let machine = common::machine();
    // Other load on the machine disturbs every figure: say so up front.
    let before = ctx.cpu().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cpu::PerRequest::between(before, ctx.cpu().await, 1, 1.0);
    if let Some(cores) = idle.foreign_cores.filter(|&c| c > 0.2) {
        eprintln!(
            "warning: other processes are using {cores:.2} cores of this machine; the figures will be disturbed"
        );
    }
    eprintln!(
        "bench: redis-server {redis_version} on port {}; {machine}; contenders on {}",
        redis.port(),
        ctx.st()
            .served
            .iter()
            .map(|s| format!("{} {}", s.contender.id(), s.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut report = Report {
        command: args.command(),
        machine,
        redis_version,
        settings: Settings {
            repeats: args.repeats,
            warmup_s: args.warmup.as_secs_f64(),
            window_s: args.window.as_secs_f64(),
            miss_requests: args.miss_requests,
            stampede_requests: args.stampede_requests,
        },
        hits: Vec::new(),
        miss: None,
        stampede: None,
        retried_windows: 0,
        took_s: 0.0,
    };
    if args.hits {
        for scenario in args.scenarios() {
            report.hits.push(hits(&ctx, scenario).await?);
        }
    }
    if args.miss {
        report.miss = Some(miss(&ctx).await?);
    }
    if args.stampede {
        report.stampede = Some(stampede(&ctx).await?);
    }
    report.retried_windows = ctx.retried.get();
    let _ = ctx.control.quit().await;
    report.took_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Fills every cache contender with the scenario's keys, then checks that
/// a second pass calls no origin (the fills are written after the
/// response, so a pass may have to be repeated).
async fn prewarm(
    ctx: &Ctx<'_>,
    servers: &Servers,
    contender: Contender,
    uris: &[Uri],
) -> Result<(), String> {
    let served = servers.get(contender);
    let failed = load::fetch_all(&ctx.client, uris, 100).await;
    if failed > 0 {
        return Err(format!(
            "{}: {failed} prewarm requests failed",
            contender.id()
        ));
    }
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = served.origin_calls();
        load::fetch_all(&ctx.client, uris, 100).await;
        if served.origin_calls() == before {
            return Ok(());
        }
    }
    Err(format!(
        "{}: still calling the origin after 10 prewarm passes",
        contender.id()
    ))
}

async fn hits(ctx: &Ctx<'_>, scenario: Scenario) -> Result<HitResult, String> {
    let args = ctx.args;
    let servers = ctx.on(scenario.runtime);
    let keys = match scenario.mix {
        MixKind::Hot => 1,
        MixKind::Uniform | MixKind::Zipf => KEYS,
    };
    let mix = match scenario.mix {
        MixKind::Hot => Mix::Hot,
        MixKind::Uniform => Mix::Uniform,
        MixKind::Zipf => Mix::Zipf(Arc::new(Zipf::new(KEYS, 0.99))),
    };
    let contenders = &args.contenders;
    let uris: BTreeMap<usize, Arc<Vec<Uri>>> = contenders
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let served = servers.get(c);
            let uris = (0..keys)
                .map(|k| served.url(&format!("/{}/{k}", scenario.size.tag())))
                .collect();
            (i, Arc::new(uris))
        })
        .collect();
    for (i, &contender) in contenders.iter().enumerate() {
        if contender.is_cache() {
            prewarm(ctx, servers, contender, &uris[&i]).await?;
        }
    }
    let timing = Timing {
        concurrency: scenario.concurrency,
        warmup: args.warmup,
        window: args.window,
    };
    let mut rows: Vec<Row<HitRep>> = contenders
        .iter()
        .map(|&contender| Row {
            contender,
            reps: Vec::new(),
        })
        .collect();
    for r in 0..args.repeats {
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        let shift = r % order.len();
        order.rotate_left(shift);
        for i in order {
            let contender = contenders[i];
            let served = servers.get(contender);
            let expect = Expect {
                body_len: Some(scenario.size.bytes()),
                hit_header: contender.has_cache_status(),
            };
            let rep = loop {
                let before = served.origin_calls();
                let (window, [opened, closed]) = load::closed_loop(
                    &ctx.client,
                    uris[&i].clone(),
                    mix.clone(),
                    timing,
                    expect,
                    || ctx.cpu_of(servers),
                )
                .await;
                let rep = HitRep {
                    rps: window.rps(),
                    p50_us: window.latency.value_at_quantile(0.5) as f64 / 1e3,
                    p99_us: window.latency.value_at_quantile(0.99) as f64 / 1e3,
                    requests: window.requests,
                    errors: window.errors,
                    non_hits: window.non_hits,
                    origin_calls: served.origin_calls() - before,
                    cpu: cpu::PerRequest::between(
                        opened,
                        closed,
                        window.requests,
                        timing.window.as_secs_f64(),
                    ),
                };
                eprintln!(
                    "hits {} rep {}/{} {:<17} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>8.1} µs  server {:>5.1} µs/req (busy {:>3.0}%)  client busy {:>3.0}%  other processes {:.2} cores{}",
                    scenario.id(),
                    r + 1,
                    args.repeats,
                    contender.id(),
                    rep.rps,
                    rep.p50_us,
                    rep.p99_us,
                    rep.cpu.server_us.unwrap_or(f64::NAN),
                    rep.cpu.server_busy.unwrap_or(f64::NAN) * 100.0,
                    rep.cpu.client_busy.unwrap_or(f64::NAN) * 100.0,
                    rep.cpu.foreign_cores.unwrap_or(f64::NAN),
                    if rep.errors + rep.non_hits > 0 {
                        format!("  ({} errors, {} non-hits)", rep.errors, rep.non_hits)
                    } else {
                        String::new()
                    }
                );
                // Another process took CPU from the window: measure it
                // again, within the run's budget. The origin's figure
                // does not depend on CPU.
                let disturbed = rep.cpu.foreign_cores.is_some_and(|c| c > DISTURBED_CORES);
                if disturbed && contender != Contender::Origin && ctx.retries_left.get() > 0 {
                    ctx.retries_left.set(ctx.retries_left.get() - 1);
                    ctx.retried.set(ctx.retried.get() + 1);
                    eprintln!("  disturbed by other processes: measured again");
                    continue;
                }
                break rep;
            };
            rows[i].reps.push(rep);
        }
    }
    Ok(HitResult { scenario, rows })
}

/// The contenders of the miss cost, in their base order: the origin alone
/// is the reference; static and hand-written give one Redis round trip.
const MISS_CONTENDERS: [Contender; 6] = [
    Contender::Origin,
    Contender::TcaRedis,
    Contender::TcaMemory,
    Contender::ThcRedis,
    Contender::Static,
    Contender::HandWritten,
];

/// After each sequential request: time for a fill written after the
/// response to land before the next request.
const MISS_PAUSE: Duration = Duration::from_millis(1);

fn miss_uris(served: &servers::Served, tag: &str, n: usize) -> Vec<Uri> {
    match served.contender {
        // Static and hand-written have no miss: the same prepared key.
        Contender::Static | Contender::HandWritten => vec![served.url("/s/0"); n],
        _ => (0..n)
            .map(|i| served.url(&format!("/z/{tag}-{i}")))
            .collect(),
    }
}

async fn miss(ctx: &Ctx<'_>) -> Result<MissResult, String> {
    let args = ctx.args;
    let n = args.miss_requests;
    let expect = Expect {
        body_len: Some(SMALL_BYTES),
        hit_header: false,
    };
    let mut result = MissResult {
        requests: n,
        rows: MISS_CONTENDERS
            .iter()
            .map(|&contender| Row {
                contender,
                reps: Vec::new(),
            })
            .collect(),
        round_trips: Vec::new(),
    };
    // Untimed: connections open, scripts loaded.
    for &contender in &MISS_CONTENDERS {
        let served = ctx.st().get(contender);
        load::sequential(
            &ctx.client,
            miss_uris(served, "warm", 10),
            expect,
            MISS_PAUSE,
        )
        .await;
    }
    for r in 0..args.repeats {
        let mut order: Vec<usize> = (0..MISS_CONTENDERS.len()).collect();
        let shift = r % order.len();
        order.rotate_left(shift);
        for i in order {
            let contender = MISS_CONTENDERS[i];
            let served = ctx.st().get(contender);
            let before = served.origin_calls();
            let seq = load::sequential(
                &ctx.client,
                miss_uris(served, &format!("m{r}"), n),
                expect,
                MISS_PAUSE,
            )
            .await;
            let rep = MissRep {
                p50_us: seq.latency.value_at_quantile(0.5) as f64 / 1e3,
                p99_us: seq.latency.value_at_quantile(0.99) as f64 / 1e3,
                requests: seq.latency.len(),
                errors: seq.errors,
                origin_calls: served.origin_calls() - before,
            };
            eprintln!(
                "miss rep {}/{} {:<17} p50 {:>7.1} µs  p99 {:>7.1} µs  origin calls {}{}",
                r + 1,
                args.repeats,
                contender.id(),
                rep.p50_us,
                rep.p99_us,
                rep.origin_calls,
                if rep.errors > 0 {
                    format!("  ({} errors)", rep.errors)
                } else {
                    String::new()
                }
            );
            result.rows[i].reps.push(rep);
        }
    }
    result.round_trips = round_trips(ctx).await?;
    Ok(result)
}

/// Requests per contender in the `MONITOR` pass.
const MONITORED: usize = 20;

/// The commands one phase of the `MONITOR` pass saw, with their
/// timestamps, and the spans of its requests.
#[derive(Default)]
struct Phase {
    commands: Vec<fred::monitor::MonitorCommand>,
    spans: Vec<(f64, f64)>,
}

impl Phase {
    /// Commands per request: sent by the app while a request was being
    /// answered (its response waited for them), after, or inside scripts.
    fn classify(&self, requests: usize) -> Commands {
        let mut commands = Commands::default();
        for command in &self.commands {
            let name = command.command.to_ascii_uppercase();
            let counts = if command.client == "lua" {
                &mut commands.script
            } else if self
                .spans
                .iter()
                .any(|&(start, end)| (start..=end).contains(&command.timestamp))
            {
                &mut commands.on_path
            } else {
                &mut commands.after
            };
            *counts.entry(name).or_default() += 1.0;
        }
        let per_request = |counts: &mut BTreeMap<String, f64>| {
            for n in counts.values_mut() {
                *n = (*n / requests as f64 * 100.0).round() / 100.0;
            }
        };
        per_request(&mut commands.on_path);
        per_request(&mut commands.after);
        per_request(&mut commands.script);
        commands
    }
}

/// Counts the Redis commands of a miss and of a hit of each Redis
/// contender with `MONITOR`, in a pass of its own (MONITOR slows Redis) on
/// the contenders' probe copies, which record when each request arrived
/// and when its response body ended: a command whose `MONITOR` timestamp
/// (same clock) falls in a request's span was waited for by its response.
/// `MONITORED` sequential misses on new keys, then the same keys again
/// (hits); each phase is closed by an `ECHO` marker.
async fn round_trips(ctx: &Ctx<'_>) -> Result<Vec<RoundTrips>, String> {
    let config =
        fred::types::config::Config::from_url(&ctx.redis_url).map_err(|e| e.to_string())?;
    let mut stream = Box::pin(
        fred::monitor::run(config)
            .await
            .map_err(|e| format!("MONITOR: {e}"))?,
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        while let Some(command) = stream.next().await {
            if tx.send(command).is_err() {
                return;
            }
        }
    });
    let expect = Expect {
        body_len: Some(SMALL_BYTES),
        hit_header: false,
    };
    let contenders = [
        Contender::HandWritten,
        Contender::TcaRedis,
        Contender::ThcRedis,
    ];
    // MONITOR has to be in place before the first counted command.
    marker(&ctx.control, "start").await?;
    let mut spans: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for contender in contenders {
        let probe = ctx
            .st()
            .probe(contender)
            .ok_or_else(|| format!("no probe copy of {}", contender.id()))?;
        let uris: Vec<Uri> = match contender {
            Contender::HandWritten => vec![probe.url("/s/0"); MONITORED],
            _ => (0..MONITORED)
                .map(|i| probe.url(&format!("/z/rt-{i}")))
                .collect(),
        };
        probe.spans.take();
        for phase in ["miss", "hit"] {
            let seq =
                load::sequential(&ctx.client, uris.clone(), expect, Duration::from_millis(2)).await;
            if seq.errors > 0 {
                return Err(format!(
                    "{}: {} errors in the MONITOR pass",
                    contender.id(),
                    seq.errors
                ));
            }
            let mark = format!("{}:{phase}", contender.id());
            marker(&ctx.control, &mark).await?;
            spans.insert(mark, probe.spans.take());
        }
    }
    let mut phases: BTreeMap<String, Phase> = BTreeMap::new();
    let mut current = Phase::default();
    let mut started = false;
    let last = format!("{}:hit", Contender::ThcRedis.id());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let command = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| "MONITOR: the markers did not come back in 10 s".to_owned())?
            .ok_or("MONITOR stream ended")?;
        let name = command.command.to_ascii_uppercase();
        if name == "ECHO" {
            let Some(mark) = command
                .args
                .first()
                .and_then(|a| a.as_str())
                .and_then(|a| a.strip_prefix("bench-mark:").map(str::to_owned))
            else {
                continue;
            };
            if mark == "start" {
                started = true;
                current = Phase::default();
                continue;
            }
            current.spans = spans.remove(&mark).unwrap_or_default();
            phases.insert(mark.clone(), std::mem::take(&mut current));
            if mark == last {
                break;
            }
            continue;
        }
        if started && !matches!(name.as_str(), "INFO" | "PING" | "CLIENT" | "MONITOR") {
            current.commands.push(command);
        }
    }
    collector.abort();
    let mut phase = |contender: Contender, name: &str| {
        phases
            .remove(&format!("{}:{name}", contender.id()))
            .unwrap_or_default()
            .classify(MONITORED)
    };
    Ok(contenders
        .iter()
        .map(|&contender| RoundTrips {
            contender,
            requests: MONITORED as u64,
            miss: phase(contender, "miss"),
            hit: phase(contender, "hit"),
        })
        .collect())
}

async fn marker(control: &FredClient, mark: &str) -> Result<(), String> {
    control
        .custom::<String, _>(
            CustomCommand::new_static("ECHO", None, false),
            vec![format!("bench-mark:{mark}")],
        )
        .await
        .map(drop)
        .map_err(|e| format!("ECHO: {e}"))
}

const STAMPEDE_CONTENDERS: [Contender; 4] = [
    Contender::TcaRedis,
    Contender::TcaMemory,
    Contender::ThcRedis,
    Contender::Origin,
];

async fn stampede(ctx: &Ctx<'_>) -> Result<StampedeResult, String> {
    let args = ctx.args;
    let n = args.stampede_requests;
    let mut result = StampedeResult {
        requests: n,
        rows: STAMPEDE_CONTENDERS
            .iter()
            .map(|&contender| Row {
                contender,
                reps: Vec::new(),
            })
            .collect(),
    };
    let expect = Expect {
        body_len: Some(SMALL_BYTES),
        hit_header: false,
    };
    for r in 0..args.repeats {
        let mut order: Vec<usize> = (0..STAMPEDE_CONTENDERS.len()).collect();
        let shift = r % order.len();
        order.rotate_left(shift);
        for i in order {
            let contender = STAMPEDE_CONTENDERS[i];
            let served = ctx.st().get(contender);
            // n keep-alive connections, so the burst measures no connect:
            // n concurrent 50 ms requests cannot share one.
            let warm: Vec<Uri> = (0..n)
                .map(|k| served.url(&format!("/warm?r={r}&k={k}")))
                .collect();
            let failed = load::fetch_all(&ctx.client, &warm, n).await;
            if failed > 0 {
                return Err(format!(
                    "{}: {failed} of {n} connection warm-up requests failed",
                    contender.id()
                ));
            }
            let before = served.origin_calls();
            let cold = served.url(&format!("/s/cold-{r}"));
            let burst = load::burst(&ctx.client, vec![cold; n], expect).await;
            let ms = |q: f64| burst.latency.value_at_quantile(q) as f64 / 1e6;
            let rep = StampedeRep {
                requests: n as u64,
                errors: burst.errors,
                origin_calls: served.origin_calls() - before,
                collapsed: burst.collapsed,
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                max_ms: burst.latency.max() as f64 / 1e6,
            };
            eprintln!(
                "stampede rep {}/{} {:<17} origin calls {:>4}  collapsed {:>4}  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  errors {}",
                r + 1,
                args.repeats,
                contender.id(),
                rep.origin_calls,
                rep.collapsed,
                rep.p50_ms,
                rep.p99_ms,
                rep.max_ms,
                rep.errors
            );
            result.rows[i].reps.push(rep);
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::parse(args.iter().map(|s| s.to_string()).collect())
            .expect("valid arguments")
            .expect("not --help")
    }

    #[test]
    fn default_run_is_all_with_four_scenarios_on_each_runtime() {
        let args = parse(&[]);
        assert!(args.hits && args.miss && args.stampede);
        assert_eq!(args.scenarios().len(), 8);
        assert_eq!(parse(&["--runtime", "st"]).scenarios().len(), 4);
        assert!(Args::parse(vec!["--runtime".into(), "x".into()]).is_err());
        assert_eq!(args.command(), "cargo run --release -p bench -- all");
        let args = parse(&["hits", "--full", "--concurrency", "1,32", "--runtime", "mt"]);
        assert!(args.hits && !args.miss && !args.stampede);
        assert_eq!(args.scenarios().len(), 12);
        assert!(Args::parse(vec!["--repeats".into(), "0".into()]).is_err());
        assert!(Args::parse(vec!["--bogus".into()]).is_err());
    }

    #[test]
    fn contenders_are_chosen_by_id_and_kept_in_base_order() {
        assert_eq!(parse(&[]).contenders, Contender::ALL.to_vec());
        let args = parse(&["hits", "--contenders", "tca-redis,hand-written,tca-redis"]);
        assert_eq!(
            args.contenders,
            vec![Contender::HandWritten, Contender::TcaRedis]
        );
        assert!(Args::parse(vec!["--contenders".into(), "varnish".into()]).is_err());
    }
}
