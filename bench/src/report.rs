//! Results: min / median / max over the repeats, the Markdown tables, the
//! JSON document and the SVG chart of hit throughput.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cpu::PerRequest;
use crate::servers::{Contender, ServerRuntime, Size};

/// Min, median and max of the repeats.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 0 {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Stat {
            min: v[0],
            median,
            max: v[v.len() - 1],
        })
    }

    fn json(self, digits: i32) -> Value {
        json!({
            "min": round(self.min, digits),
            "median": round(self.median, digits),
            "max": round(self.max, digits),
        })
    }
}

fn stat_of<T>(reps: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<Stat> {
    let values: Vec<f64> = reps.iter().filter_map(f).collect();
    if values.len() < reps.len() {
        return None;
    }
    Stat::of(&values)
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// How the keys of a hit scenario are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixKind {
    Hot,
    Uniform,
    Zipf,
}

impl MixKind {
    pub fn id(self) -> &'static str {
        match self {
            MixKind::Hot => "hot",
            MixKind::Uniform => "uniform-1000",
            MixKind::Zipf => "zipf-1000",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            MixKind::Hot => "one hot key",
            MixKind::Uniform => "1000 keys, uniform",
            MixKind::Zipf => "1000 keys, Zipf s=0.99",
        }
    }
}

/// One hit scenario: body, keys, concurrency.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub size: Size,
    pub mix: MixKind,
    pub concurrency: usize,
    /// The runtime the servers ran on.
    pub runtime: ServerRuntime,
}

impl Scenario {
    pub fn id(&self) -> String {
        format!(
            "{}-{}-c{}-{}",
            body_id(self.size),
            self.mix.id(),
            self.concurrency,
            self.runtime.id()
        )
    }

    pub fn label(&self) -> String {
        format!(
            "{} body, {}, {} concurrent, {}",
            body_label(self.size),
            self.mix.label(),
            self.concurrency,
            self.runtime.label()
        )
    }
}

fn body_id(size: Size) -> &'static str {
    match size {
        Size::Small => "200B",
        Size::Large => "16KiB",
    }
}

fn body_label(size: Size) -> &'static str {
    match size {
        Size::Small => "~200 B JSON",
        Size::Large => "16 KiB JSON",
    }
}

/// One closed-loop window of one contender.
#[derive(Debug, Clone, Copy)]
pub struct HitRep {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub errors: u64,
    pub non_hits: u64,
    pub origin_calls: u64,
    pub cpu: PerRequest,
}

#[derive(Debug, Clone)]
pub struct Row<R> {
    pub contender: Contender,
    pub reps: Vec<R>,
}

#[derive(Debug, Clone)]
pub struct HitResult {
    pub scenario: Scenario,
    pub rows: Vec<Row<HitRep>>,
}

impl HitResult {
    fn row(&self, contender: Contender) -> Option<&Row<HitRep>> {
        self.rows.iter().find(|r| r.contender == contender)
    }

    fn median(&self, contender: Contender, f: impl Fn(&HitRep) -> Option<f64>) -> Option<f64> {
        Some(stat_of(&self.row(contender)?.reps, f)?.median)
    }

    /// `f` of `contender` over `f` of `reference` within each repeat (the
    /// two windows closest in time), then min / median / max of those
    /// ratios: slow drifts of the machine's speed cancel out of each one.
    fn paired(
        &self,
        contender: Contender,
        reference: Contender,
        f: impl Fn(&HitRep) -> f64,
    ) -> Option<Stat> {
        let (a, b) = (self.row(contender)?, self.row(reference)?);
        let ratios: Vec<f64> = a
            .reps
            .iter()
            .zip(&b.reps)
            .filter(|(_, b)| f(b) > 0.0)
            .map(|(a, b)| f(a) / f(b))
            .collect();
        Stat::of(&ratios)
    }
}

/// Sequential requests of one contender in one repeat (miss cost).
#[derive(Debug, Clone, Copy)]
pub struct MissRep {
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub errors: u64,
    pub origin_calls: u64,
}

/// Redis commands per request seen by `MONITOR`, by command name.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    /// Sent by the app while the request was being answered (before its
    /// response body ended): the response waited for them.
    pub on_path: BTreeMap<String, f64>,
    /// Sent by the app after the response had ended (a background fill).
    pub after: BTreeMap<String, f64>,
    /// Run inside Lua scripts.
    pub script: BTreeMap<String, f64>,
}

fn listing(counts: &BTreeMap<String, f64>) -> String {
    counts
        .iter()
        .map(|(name, n)| format!("{name} ×{}", trim(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Commands {
    pub fn on_path_total(&self) -> f64 {
        self.on_path.values().sum()
    }

    fn summary(&self) -> String {
        if self.on_path.is_empty() && self.after.is_empty() {
            return "none".into();
        }
        let mut out = listing(&self.on_path);
        if !self.after.is_empty() {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "then {} after the response", listing(&self.after));
        }
        if !self.script.is_empty() {
            let total: f64 = self.script.values().sum();
            if self.script.len() <= 4 {
                let _ = write!(out, " (scripts run {})", listing(&self.script));
            } else {
                let _ = write!(out, " (scripts run {} commands)", trim(total));
            }
        }
        out
    }

    fn json(&self) -> Value {
        json!({
            "before_response": self.on_path,
            "after_response": self.after,
            "in_scripts": self.script,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RoundTrips {
    pub contender: Contender,
    pub requests: u64,
    pub miss: Commands,
    pub hit: Commands,
}

#[derive(Debug, Clone, Default)]
pub struct MissResult {
    pub requests: usize,
    pub rows: Vec<Row<MissRep>>,
    pub round_trips: Vec<RoundTrips>,
}

impl MissResult {
    fn row(&self, contender: Contender) -> Option<&Row<MissRep>> {
        self.rows.iter().find(|r| r.contender == contender)
    }

    /// Per repeat: this contender's p50 minus the reference's p50.
    fn added(&self, contender: Contender, reference: Contender) -> Option<Stat> {
        let row = self.row(contender)?;
        let base = self.row(reference)?;
        let values: Vec<f64> = row
            .reps
            .iter()
            .zip(&base.reps)
            .map(|(a, b)| a.p50_us - b.p50_us)
            .collect();
        Stat::of(&values)
    }

    /// One Redis round trip inside a handler: hand-written p50 minus
    /// static p50, per repeat.
    fn round_trip_us(&self) -> Option<Stat> {
        self.added(Contender::HandWritten, Contender::Static)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StampedeRep {
    pub requests: u64,
    pub errors: u64,
    pub origin_calls: u64,
    pub collapsed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct StampedeResult {
    pub requests: usize,
    pub rows: Vec<Row<StampedeRep>>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub repeats: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    pub miss_requests: usize,
    pub stampede_requests: usize,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub command: String,
    pub machine: String,
    pub redis_version: String,
    pub settings: Settings,
    pub hits: Vec<HitResult>,
    pub miss: Option<MissResult>,
    pub stampede: Option<StampedeResult>,
    /// Hit windows measured again because other processes disturbed them.
    pub retried_windows: usize,
    pub took_s: f64,
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A number with few digits: 3 significant, no more than 1 decimal.
fn num(x: f64) -> String {
    if x >= 100.0 {
        thousands(x)
    } else if x >= 10.0 {
        format!("{x:.1}").trim_end_matches(".0").to_owned()
    } else {
        format!("{x:.2}")
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn spread(stat: Option<Stat>, fmt: impl Fn(f64) -> String) -> String {
    match stat {
        Some(s) => format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max)),
        None => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{a:.2}", a = a / b),
        _ => "–".into(),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        if !self.hits.is_empty() {
            self.hits_markdown(&mut out);
        }
        if let Some(miss) = &self.miss {
            self.miss_markdown(&mut out, miss);
        }
        if let Some(stampede) = &self.stampede {
            self.stampede_markdown(&mut out, stampede);
        }
        if let Some(foreign) = self.foreign_load() {
            let _ = writeln!(
                out,
                "Other processes on the machine used {:.2} cores at most during a kept hit window (median {:.2}){}; {} disturbed windows were measured again.\n",
                foreign.max,
                foreign.median,
                if foreign.max > 0.25 {
                    ": some figures are disturbed, run again on a quiet machine"
                } else {
                    ""
                },
                self.retried_windows
            );
        }
        let s = &self.settings;
        let _ = writeln!(
            out,
            "{} repeats per figure, contenders alternated in rotating order; hit windows of {} s after {} s of warm-up. \
             redis-server {} on loopback; {}. Whole run: {:.0} s.",
            s.repeats, s.window_s, s.warmup_s, self.redis_version, self.machine, self.took_s
        );
        out
    }

    /// CPU used by other processes during the hit windows, in cores.
    pub fn foreign_load(&self) -> Option<Stat> {
        let values: Vec<f64> = self
            .hits
            .iter()
            .flat_map(|h| h.rows.iter())
            // The origin's figures do not depend on CPU.
            .filter(|r| r.contender != Contender::Origin)
            .flat_map(|r| r.reps.iter())
            .filter_map(|r| r.cpu.foreign_cores)
            .collect();
        Stat::of(&values)
    }

    fn hits_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Hits: requests/s and latency, median (min–max) over the repeats. \"÷\" columns are ratios of medians; \"paired\" columns take the ratio within each repeat first (the two windows closest in time), then give the median (min–max) of those.\n"
        );
        let _ = writeln!(
            out,
            "| scenario | contender | req/s | ÷ hand-written | paired ÷ hand-written | ÷ static | p50 µs | p99 µs | p99 ÷ hand-written | paired p99 ÷ hand-written | server CPU µs/req | Redis CPU µs/req |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for hit in &self.hits {
            let hw_rps = hit.median(Contender::HandWritten, |r| Some(r.rps));
            let static_rps = hit.median(Contender::Static, |r| Some(r.rps));
            let hw_p99 = hit.median(Contender::HandWritten, |r| Some(r.p99_us));
            for (i, row) in hit.rows.iter().enumerate() {
                let rps = stat_of(&row.reps, |r| Some(r.rps));
                let p50 = stat_of(&row.reps, |r| Some(r.p50_us));
                let p99 = stat_of(&row.reps, |r| Some(r.p99_us));
                let server = stat_of(&row.reps, |r| r.cpu.server_us);
                let redis = stat_of(&row.reps, |r| r.cpu.redis_us);
                let scenario = if i == 0 {
                    hit.scenario.label()
                } else {
                    String::new()
                };
                let redis = if row.contender.uses_redis() {
                    redis.map_or("–".into(), |s| num(s.median))
                } else {
                    "–".into()
                };
                let paired = |f: fn(&HitRep) -> f64| {
                    if row.contender == Contender::HandWritten {
                        return "–".to_owned();
                    }
                    spread(hit.paired(row.contender, Contender::HandWritten, f), |x| {
                        format!("{x:.2}")
                    })
                };
                let _ = writeln!(
                    out,
                    "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.contender.label(),
                    spread(rps, thousands),
                    ratio(rps.map(|s| s.median), hw_rps),
                    paired(|r| r.rps),
                    ratio(rps.map(|s| s.median), static_rps),
                    p50.map_or("–".into(), |s| num(s.median)),
                    spread(p99, num),
                    ratio(p99.map(|s| s.median), hw_p99),
                    paired(|r| r.p99_us),
                    server.map_or("–".into(), |s| num(s.median)),
                    redis,
                );
            }
        }
        let problems: Vec<String> = self
            .hits
            .iter()
            .flat_map(|hit| {
                hit.rows.iter().filter_map(move |row| {
                    let errors: u64 = row.reps.iter().map(|r| r.errors).sum();
                    let non_hits: u64 = row.reps.iter().map(|r| r.non_hits).sum();
                    let origin: u64 = row.reps.iter().map(|r| r.origin_calls).sum();
                    let origin = if row.contender.is_cache() { origin } else { 0 };
                    (errors + non_hits + origin > 0).then(|| {
                        format!(
                            "{} / {}: {errors} errors, {non_hits} non-hits, {origin} origin calls",
                            hit.scenario.id(),
                            row.contender.id()
                        )
                    })
                })
            })
            .collect();
        if problems.is_empty() {
            let _ = writeln!(
                out,
                "\nEvery measured request succeeded with the expected body; every cache answer was a hit (no origin call during the windows).\n"
            );
        } else {
            let _ = writeln!(out, "\nProblems: {}\n", problems.join("; "));
        }
    }

    fn miss_markdown(&self, out: &mut String, miss: &MissResult) {
        let rtt = miss.round_trip_us();
        let _ = writeln!(
            out,
            "Miss cost: {} sequential requests per contender and repeat, each to a new key, origin without its simulated delay; µs, median (min–max) over the repeats.\n",
            miss.requests
        );
        let _ = writeln!(
            out,
            "| contender | p50 µs | p99 µs | p50 added over the origin alone, µs | Redis round trips before the response | Redis commands per miss | per hit |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | --- | --- |");
        for contender in [
            Contender::Origin,
            Contender::TcaRedis,
            Contender::TcaMemory,
            Contender::ThcRedis,
        ] {
            let Some(row) = miss.row(contender) else {
                continue;
            };
            let p50 = stat_of(&row.reps, |r| Some(r.p50_us));
            let p99 = stat_of(&row.reps, |r| Some(r.p99_us));
            let added = miss.added(contender, Contender::Origin);
            let commands = miss.round_trips.iter().find(|t| t.contender == contender);
            let trips = match (contender, commands) {
                (Contender::Origin | Contender::TcaMemory, _) => "0".to_owned(),
                (_, Some(c)) => trim(c.miss.on_path_total()),
                (_, None) => "–".into(),
            };
            let label = if contender == Contender::Origin {
                "origin alone (no delay)"
            } else {
                contender.label()
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {trips} | {} | {} |",
                spread(p50, num),
                spread(p99, num),
                if contender == Contender::Origin {
                    "0 (reference)".into()
                } else {
                    spread(added, num)
                },
                commands.map_or("–".into(), |c| c.miss.summary()),
                commands.map_or("–".into(), |c| c.hit.summary()),
            );
        }
        let hw = miss
            .round_trips
            .iter()
            .find(|t| t.contender == Contender::HandWritten);
        let _ = writeln!(
            out,
            "\nFor scale, one Redis round trip in a handler at 1 request at a time (hand-written fred GET minus static, p50): {} µs{}. \
             Round trips are counted with MONITOR on copies of the contenders that timestamp each response's end.\n",
            spread(rtt, num),
            hw.map_or(String::new(), |c| format!(
                " (it sends {} per request)",
                c.hit.summary()
            )),
        );
    }

    fn stampede_markdown(&self, out: &mut String, stampede: &StampedeResult) {
        let _ = writeln!(
            out,
            "Cold stampede: {} concurrent requests for one cold key (origin 100 ms), connections opened beforehand; median (min–max) over the repeats.\n",
            stampede.requests
        );
        let _ = writeln!(
            out,
            "| contender | origin calls | answered after waiting for the fill | p50 ms | p99 ms | max ms | errors |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for row in &stampede.rows {
            let calls = stat_of(&row.reps, |r| Some(r.origin_calls as f64));
            let collapsed = stat_of(&row.reps, |r| Some(r.collapsed as f64));
            let p50 = stat_of(&row.reps, |r| Some(r.p50_ms));
            let p99 = stat_of(&row.reps, |r| Some(r.p99_ms));
            let max = stat_of(&row.reps, |r| Some(r.max_ms));
            let errors: u64 = row.reps.iter().map(|r| r.errors).sum();
            let count = |x: f64| format!("{x:.0}");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {errors} |",
                row.contender.label(),
                spread(calls, count),
                if row.contender.has_cache_status() {
                    spread(collapsed, count)
                } else {
                    "–".into()
                },
                spread(p50, num),
                spread(p99, num),
                spread(max, num),
            );
        }
        let _ = writeln!(out);
    }

    pub fn json(&self) -> Value {
        let hits: Vec<Value> = self
            .hits
            .iter()
            .map(|hit| {
                let hw_rps = hit.median(Contender::HandWritten, |r| Some(r.rps));
                let static_rps = hit.median(Contender::Static, |r| Some(r.rps));
                let hw_p99 = hit.median(Contender::HandWritten, |r| Some(r.p99_us));
                let rows: Vec<Value> = hit
                    .rows
                    .iter()
                    .map(|row| {
                        let rps = stat_of(&row.reps, |r| Some(r.rps));
                        let p99 = stat_of(&row.reps, |r| Some(r.p99_us));
                        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
                            (Some(a), Some(b)) if b > 0.0 => json!(round(a / b, 3)),
                            _ => Value::Null,
                        };
                        let opt = |s: Option<Stat>, d| s.map_or(Value::Null, |s| s.json(d));
                        json!({
                            "contender": row.contender.id(),
                            "label": row.contender.label(),
                            "rps": opt(rps, 0),
                            "p50_us": opt(stat_of(&row.reps, |r| Some(r.p50_us)), 1),
                            "p99_us": opt(p99, 1),
                            "server_cpu_us_per_request": opt(stat_of(&row.reps, |r| r.cpu.server_us), 2),
                            "client_cpu_us_per_request": opt(stat_of(&row.reps, |r| r.cpu.client_us), 2),
                            "redis_cpu_us_per_request": opt(stat_of(&row.reps, |r| r.cpu.redis_us), 2),
                            "server_thread_busy": opt(stat_of(&row.reps, |r| r.cpu.server_busy), 3),
                            "client_thread_busy": opt(stat_of(&row.reps, |r| r.cpu.client_busy), 3),
                            "other_processes_cores": opt(stat_of(&row.reps, |r| r.cpu.foreign_cores), 2),
                            "rps_median_over_hand_written": div(rps.map(|s| s.median), hw_rps),
                            "rps_median_over_static": div(rps.map(|s| s.median), static_rps),
                            "p99_median_over_hand_written": div(p99.map(|s| s.median), hw_p99),
                            "rps_over_hand_written_paired": opt(hit.paired(row.contender, Contender::HandWritten, |r| r.rps), 3),
                            "p99_over_hand_written_paired": opt(hit.paired(row.contender, Contender::HandWritten, |r| r.p99_us), 3),
                            "reps": row.reps.iter().map(|r| json!({
                                "rps": round(r.rps, 0),
                                "p50_us": round(r.p50_us, 1),
                                "p99_us": round(r.p99_us, 1),
                                "requests": r.requests,
                                "errors": r.errors,
                                "non_hits": r.non_hits,
                                "origin_calls": r.origin_calls,
                                "server_cpu_us_per_request": r.cpu.server_us.map(|x| round(x, 2)),
                                "redis_cpu_us_per_request": r.cpu.redis_us.map(|x| round(x, 2)),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({
                    "scenario": hit.scenario.id(),
                    "label": hit.scenario.label(),
                    "body_bytes": hit.scenario.size.bytes(),
                    "keys": hit.scenario.mix.id(),
                    "concurrency": hit.scenario.concurrency,
                    "runtime": hit.scenario.runtime.id(),
                    "contenders": rows,
                })
            })
            .collect();
        let miss = self.miss.as_ref().map(|miss| {
            let rows: Vec<Value> = miss
                .rows
                .iter()
                .map(|row| {
                    let trips = miss
                        .round_trips
                        .iter()
                        .find(|t| t.contender == row.contender);
                    json!({
                        "contender": row.contender.id(),
                        "p50_us": stat_of(&row.reps, |r| Some(r.p50_us)).map(|s| s.json(1)),
                        "p99_us": stat_of(&row.reps, |r| Some(r.p99_us)).map(|s| s.json(1)),
                        "p50_added_over_origin_us": miss.added(row.contender, Contender::Origin).map(|s| s.json(1)),
                        "redis_commands_per_miss": trips.map(|t| t.miss.json()),
                        "redis_commands_per_hit": trips.map(|t| t.hit.json()),
                        "monitored_requests": trips.map(|t| t.requests),
                        "reps": row.reps.iter().map(|r| json!({
                            "p50_us": round(r.p50_us, 1),
                            "p99_us": round(r.p99_us, 1),
                            "requests": r.requests,
                            "errors": r.errors,
                            "origin_calls": r.origin_calls,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "requests_per_rep": miss.requests,
                "origin_delay_ms": 0,
                "redis_round_trip_in_handler_us": miss.round_trip_us().map(|s| s.json(1)),
                "contenders": rows,
            })
        });
        let stampede = self.stampede.as_ref().map(|st| {
            let rows: Vec<Value> = st
                .rows
                .iter()
                .map(|row| {
                    json!({
                        "contender": row.contender.id(),
                        "origin_calls": stat_of(&row.reps, |r| Some(r.origin_calls as f64)).map(|s| s.json(0)),
                        "p50_ms": stat_of(&row.reps, |r| Some(r.p50_ms)).map(|s| s.json(2)),
                        "p99_ms": stat_of(&row.reps, |r| Some(r.p99_ms)).map(|s| s.json(2)),
                        "max_ms": stat_of(&row.reps, |r| Some(r.max_ms)).map(|s| s.json(2)),
                        "reps": row.reps.iter().map(|r| json!({
                            "requests": r.requests,
                            "errors": r.errors,
                            "origin_calls": r.origin_calls,
                            "collapsed": r.collapsed,
                            "p50_ms": round(r.p50_ms, 2),
                            "p99_ms": round(r.p99_ms, 2),
                            "max_ms": round(r.max_ms, 2),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "requests": st.requests,
                "origin_delay_ms": 100,
                "contenders": rows,
            })
        });
        let s = &self.settings;
        json!({
            "command": self.command,
            "machine": self.machine,
            "redis_version": self.redis_version,
            "settings": {
                "repeats": s.repeats,
                "warmup_s": s.warmup_s,
                "window_s": s.window_s,
                "miss_requests": s.miss_requests,
                "stampede_requests": s.stampede_requests,
                "cache_ttl_s": crate::servers::CACHE_TTL.as_secs(),
                "origin_delay_ms": crate::servers::ORIGIN_DELAY.as_millis() as u64,
            },
            "took_s": round(self.took_s, 1),
            "retried_windows": self.retried_windows,
            "other_processes_cores_during_hit_windows": self.foreign_load().map(|s| s.json(2)),
            "hits": hits,
            "miss": miss,
            "stampede": stampede,
        })
    }

    /// A horizontal bar chart of hit throughput: one group per scenario,
    /// one bar per contender (median), whiskers from min to max.
    pub fn hits_svg(&self) -> String {
        const WIDTH: f64 = 920.0;
        const LEFT: f64 = 250.0;
        const RIGHT: f64 = 110.0;
        const BAR: f64 = 16.0;
        const GAP: f64 = 5.0;
        const GROUP_TITLE: f64 = 26.0;
        const GROUP_GAP: f64 = 16.0;
        const TOP: f64 = 56.0;
        let plot = WIDTH - LEFT - RIGHT;
        let max = self
            .hits
            .iter()
            .flat_map(|h| h.rows.iter())
            .filter_map(|row| stat_of(&row.reps, |r| Some(r.rps)).map(|s| s.max))
            .fold(1.0f64, f64::max);
        let scale = nice_ceiling(max);
        let group_height = |h: &HitResult| GROUP_TITLE + h.rows.len() as f64 * (BAR + GAP);
        let height = TOP
            + self
                .hits
                .iter()
                .map(|h| group_height(h) + GROUP_GAP)
                .sum::<f64>()
            + 40.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"##
        );
        let _ = writeln!(
            svg,
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="12" y="22" font-size="15" font-weight="bold">Cache hits: requests per second (median of {} repeat{}; whiskers: min–max)</text>"##,
            self.settings.repeats,
            if self.settings.repeats == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            svg,
            r##"<text x="12" y="40" fill="#555">{}; redis-server {} on loopback; server and load generator on one thread each</text>"##,
            escape(&self.machine),
            escape(&self.redis_version)
        );
        let x_of = |v: f64| LEFT + plot * (v / scale).clamp(0.0, 1.0);
        // Grid and axis first, with ticks at fifths of the scale, so that
        // the bars are drawn over them.
        let axis_y = height - 40.0;
        for i in 0..=5 {
            let v = scale * f64::from(i) / 5.0;
            let x = x_of(v);
            let _ = writeln!(
                svg,
                r##"<path d="M{x:.1} {TOP:.1}V{axis_y:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                axis_y + 16.0,
                thousands(v)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="M{LEFT} {axis_y:.1}H{:.1}" stroke="#888"/>"##,
            LEFT + plot
        );
        let mut y = TOP;
        for hit in &self.hits {
            let _ = writeln!(
                svg,
                r##"<text x="12" y="{:.1}" font-weight="bold">{}</text>"##,
                y + 17.0,
                escape(&hit.scenario.label())
            );
            y += GROUP_TITLE;
            for row in &hit.rows {
                let Some(rps) = stat_of(&row.reps, |r| Some(r.rps)) else {
                    continue;
                };
                let color = color(row.contender);
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                    LEFT - 8.0,
                    y + BAR - 4.0,
                    escape(row.contender.label())
                );
                let _ = writeln!(
                    svg,
                    r##"<rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{BAR}" fill="{color}"/>"##,
                    (x_of(rps.median) - LEFT).max(1.0)
                );
                let (x0, x1, mid) = (x_of(rps.min), x_of(rps.max), y + BAR / 2.0);
                let _ = writeln!(
                    svg,
                    r##"<path d="M{x0:.1} {mid:.1}H{x1:.1}M{x0:.1} {:.1}V{:.1}M{x1:.1} {:.1}V{:.1}" stroke="#222" stroke-width="1.2" fill="none"/>"##,
                    mid - 4.0,
                    mid + 4.0,
                    mid - 4.0,
                    mid + 4.0
                );
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}">{}</text>"##,
                    x1.max(x_of(rps.median)) + 6.0,
                    y + BAR - 4.0,
                    thousands(rps.median)
                );
                y += BAR + GAP;
            }
            y += GROUP_GAP;
        }
        let _ = writeln!(svg, "</svg>");
        svg
    }
}

/// 1, 2 or 5 times a power of ten, at least `x`.
fn nice_ceiling(x: f64) -> f64 {
    let power = 10f64.powf(x.log10().floor());
    for step in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * power >= x {
            return step * power;
        }
    }
    10.0 * power
}

fn color(contender: Contender) -> &'static str {
    match contender {
        Contender::Static => "#9e9e9e",
        Contender::HandWritten => "#5b8def",
        Contender::TcaRedis => "#e4572e",
        Contender::TcaMemory => "#f3a712",
        Contender::ThcRedis => "#29a36a",
        Contender::Origin => "#6c4f9e",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(20.0), "20");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(nice_ceiling(43_000.0), 50_000.0);
        assert_eq!(nice_ceiling(52_000.0), 60_000.0);
        assert_eq!(nice_ceiling(20_000.0), 20_000.0);
    }

    #[test]
    fn paired_ratios_are_taken_within_each_repeat() {
        let rep = |rps: f64| HitRep {
            rps,
            p50_us: 100.0,
            p99_us: rps / 10.0,
            requests: 2000,
            errors: 0,
            non_hits: 0,
            origin_calls: 0,
            cpu: PerRequest::default(),
        };
        // The machine slows down by half between repeats: the ratio of
        // medians mixes repeats, the paired ratios do not.
        let hit = HitResult {
            scenario: Scenario {
                size: Size::Small,
                mix: MixKind::Hot,
                concurrency: 1,
                runtime: ServerRuntime::CurrentThread,
            },
            rows: vec![
                Row {
                    contender: Contender::HandWritten,
                    reps: vec![rep(100.0), rep(50.0), rep(25.0)],
                },
                Row {
                    contender: Contender::TcaRedis,
                    reps: vec![rep(90.0), rep(45.0), rep(25.0)],
                },
            ],
        };
        let paired = hit
            .paired(Contender::TcaRedis, Contender::HandWritten, |r| r.rps)
            .unwrap();
        assert_eq!((paired.min, paired.median, paired.max), (0.9, 0.9, 1.0));
        assert!(hit
            .paired(Contender::Static, Contender::HandWritten, |r| r.rps)
            .is_none());
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let rep = HitRep {
            rps: 1000.0,
            p50_us: 100.0,
            p99_us: 300.0,
            requests: 2000,
            errors: 0,
            non_hits: 0,
            origin_calls: 0,
            cpu: PerRequest::default(),
        };
        let report = Report {
            command: "test".into(),
            machine: "a <test> machine".into(),
            redis_version: "7".into(),
            settings: Settings {
                repeats: 1,
                warmup_s: 0.1,
                window_s: 0.1,
                miss_requests: 1,
                stampede_requests: 1,
            },
            hits: vec![HitResult {
                scenario: Scenario {
                    size: Size::Small,
                    mix: MixKind::Hot,
                    concurrency: 1,
                    runtime: ServerRuntime::CurrentThread,
                },
                rows: Contender::ALL
                    .iter()
                    .map(|&contender| Row {
                        contender,
                        reps: vec![rep],
                    })
                    .collect(),
            }],
            miss: None,
            stampede: None,
            retried_windows: 0,
            took_s: 1.0,
        };
        let svg = report.hits_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt; machine"));
        assert_eq!(svg.matches("<rect").count(), 1 + Contender::ALL.len());
        assert!(report
            .markdown()
            .contains("| ~200 B JSON body, one hot key, 1 concurrent, single-threaded runtime |"));
    }
}
