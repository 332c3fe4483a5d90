//! Micro-benchmarks of the per-request CPU work (issue #7), with
//! allocations counted:
//!
//! - key derivation: `/users/42`; a path with 6 query parameters out of
//!   order; a 300-byte path full of percent escapes (all with a `Host`);
//! - entry encode and decode: a 200 B body with 4 headers and a 16 KiB body
//!   with 12 headers; and the decode of a hit that reuses the entry's kept
//!   head (`entry_decode_kept_head`);
//! - `request_bypass` on a plain GET and on one with `Authorization`;
//! - `storable` on a 200 with `cache-control: public, max-age=60`, and on
//!   the same with a `Set-Cookie`.
//!
//! ```text
//! cargo bench --bench micro                  # full Criterion run
//! cargo bench --bench micro -- --quick       # a few seconds
//! ```
//!
//! Each routine first runs 10,000 times outside Criterion under a counting
//! global allocator (`stats_alloc`); allocations per call are the
//! allocations plus reallocations of those calls divided by 10,000. At the
//! end a Markdown table gives, per routine, Criterion's median time of this
//! run (from its `new/estimates.json`) and the allocations per call; it is
//! also written to `allocations.md` in Criterion's output directory
//! (`$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else
//! `target/criterion`).
//!
//! Under `cargo test --benches` (no `--bench` flag) Criterion runs each
//! routine once as a test; the allocation counts are still taken and
//! printed, but no file is written.

use std::alloc::System;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tower_cache_aside::bench_api::{decode_entry, encode_entry, HeadDecoder, KeyDeriver, Policy};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Calls per routine for the allocation count.
const COUNTED_CALLS: u32 = 10_000;

/// One line of the final table.
struct Row {
    group: &'static str,
    name: &'static str,
    allocations_per_call: f64,
}

fn allocation_events() -> usize {
    let stats = GLOBAL.stats();
    stats.allocations + stats.reallocations
}

/// Counts the routine's allocations per call, then hands it to Criterion.
fn bench<R>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rows: &mut Vec<Row>,
    (group_name, name): (&'static str, &'static str),
    mut routine: impl FnMut() -> R,
) {
    // One call first, so that one-time work (lazy statics) is not counted.
    black_box(routine());
    let before = allocation_events();
    for _ in 0..COUNTED_CALLS {
        black_box(routine());
    }
    let events = allocation_events() - before;
    rows.push(Row {
        group: group_name,
        name,
        allocations_per_call: events as f64 / f64::from(COUNTED_CALLS),
    });
    group.bench_function(name, |b| b.iter(&mut routine));
}

fn get(target: &str, extra: Option<(header::HeaderName, &'static str)>) -> Request<()> {
    let mut req = Request::get(target).header(header::HOST, "api.example.com");
    if let Some((name, value)) = extra {
        req = req.header(name, value);
    }
    req.body(()).expect("a valid request")
}

/// A 300-byte path of percent-encoded UTF-8 and spaces, as a browser sends
/// non-ASCII file names.
fn long_escaped_path() -> String {
    let mut path = String::from("/files/");
    while path.len() < 280 {
        path.push_str("r%C3%A9sum%C3%A9%20final/");
    }
    while path.len() < 300 {
        path.push('x');
    }
    path.truncate(300);
    path
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

const SMALL_HEADERS: [(&str, &str); 4] = [
    ("content-type", "application/json"),
    ("content-length", "200"),
    ("date", "Tue, 14 Apr 2026 10:00:00 GMT"),
    ("etag", "\"5f2b-1a2b3c4d\""),
];

const LARGE_HEADERS: [(&str, &str); 12] = [
    ("content-type", "application/json; charset=utf-8"),
    ("content-length", "16384"),
    ("date", "Tue, 14 Apr 2026 10:00:00 GMT"),
    ("etag", "W/\"4000-9f86d081884c7d65\""),
    ("last-modified", "Mon, 13 Apr 2026 08:30:00 GMT"),
    ("cache-control", "public, max-age=60"),
    ("content-language", "en"),
    ("server", "example/1.4"),
    ("x-request-id", "6f1c2d3e-4b5a-4c7d-9e8f-0a1b2c3d4e5f"),
    ("x-content-type-options", "nosniff"),
    ("strict-transport-security", "max-age=63072000"),
    ("access-control-allow-origin", "*"),
];

const TYPICAL_RESPONSE: [(&str, &str); 5] = [
    ("content-type", "application/json"),
    ("content-length", "200"),
    ("cache-control", "public, max-age=60"),
    ("date", "Tue, 14 Apr 2026 10:00:00 GMT"),
    ("etag", "\"5f2b-1a2b3c4d\""),
];

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let mut rows = Vec::new();

    let deriver = KeyDeriver::new();
    let mut group = c.benchmark_group("key_derive");
    let escaped = long_escaped_path();
    assert_eq!(escaped.len(), 300);
    for (name, req) in [
        ("users_42", get("/users/42", None)),
        (
            "query_6_unsorted",
            get(
                "/search?q=rust&sort=desc&page=2&lang=en&limit=20&filter=open",
                None,
            ),
        ),
        ("path_300b_escaped", get(&escaped, None)),
    ] {
        bench(&mut group, &mut rows, ("key_derive", name), || {
            deriver.derive(black_box(&req))
        });
    }
    group.finish();

    let fingerprint = b"/items/42\0api.example.com\0";
    let cases = [
        (
            "200B_4_headers",
            headers(&SMALL_HEADERS),
            Bytes::from(vec![b'x'; 200]),
        ),
        (
            "16KiB_12_headers",
            headers(&LARGE_HEADERS),
            Bytes::from(vec![b'x'; 16 * 1024]),
        ),
    ];
    let mut group = c.benchmark_group("entry_encode");
    for (name, headers, body) in &cases {
        let body = std::slice::from_ref(body);
        bench(&mut group, &mut rows, ("entry_encode", name), || {
            encode_entry(StatusCode::OK, black_box(headers), body, fingerprint)
        });
    }
    group.finish();
    let encoded: Vec<(&'static str, Bytes)> = cases
        .iter()
        .map(|(name, headers, body)| {
            let encoded = encode_entry(
                StatusCode::OK,
                headers,
                std::slice::from_ref(body),
                fingerprint,
            );
            let Some(encoded) = encoded else {
                panic!("{name}: the entry does not encode");
            };
            assert!(decode_entry(encoded.clone()), "{name}: does not decode");
            (*name, encoded)
        })
        .collect();
    let mut group = c.benchmark_group("entry_decode");
    for (name, encoded) in &encoded {
        // Cloning `Bytes` bumps a reference count; it does not allocate.
        bench(&mut group, &mut rows, ("entry_decode", name), || {
            decode_entry(black_box(encoded.clone()))
        });
    }
    group.finish();
    // The same values read again by a hit, through the layer's table of
    // decoded heads: every call after the first reuses the kept head.
    let mut group = c.benchmark_group("entry_decode_kept_head");
    for (name, encoded) in &encoded {
        let heads = HeadDecoder::new();
        bench(
            &mut group,
            &mut rows,
            ("entry_decode_kept_head", name),
            || heads.decode(1, black_box(encoded.clone())),
        );
    }
    group.finish();

    let policy = Policy::new();
    let mut group = c.benchmark_group("request_bypass");
    for (name, req, expected) in [
        ("plain_get", get("/users/42", None), None),
        (
            "authorization",
            get(
                "/users/42",
                Some((header::AUTHORIZATION, "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")),
            ),
            Some("authorization"),
        ),
    ] {
        assert_eq!(policy.request_bypass(&req), expected, "{name}");
        bench(&mut group, &mut rows, ("request_bypass", name), || {
            policy.request_bypass(black_box(&req))
        });
    }
    group.finish();

    let mut with_cookie = headers(&TYPICAL_RESPONSE);
    with_cookie.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("session=abc123; Path=/; HttpOnly"),
    );
    let mut group = c.benchmark_group("storable");
    for (name, response, stored) in [
        ("public_max_age_60", headers(&TYPICAL_RESPONSE), true),
        ("set_cookie", with_cookie, false),
    ] {
        assert_eq!(
            policy.storable(StatusCode::OK, &response).is_some(),
            stored,
            "{name}"
        );
        bench(&mut group, &mut rows, ("storable", name), || {
            policy.storable(StatusCode::OK, black_box(&response))
        });
    }
    group.finish();

    c.final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let benched = std::env::args().any(|arg| arg == "--bench");
    report(&rows, started, benched);
}

/// Criterion's output directory, found the way Criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("criterion")
}

/// Criterion's median estimate of this run, in nanoseconds; `None` for a
/// routine it did not measure in this process (filtered out, test mode).
fn median_ns(dir: &std::path::Path, row: &Row, since: SystemTime) -> Option<f64> {
    let path = dir
        .join(row.group)
        .join(row.name)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn format_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else {
        format!("{:.2} µs", ns / 1_000.0)
    }
}

fn format_count(per_call: f64) -> String {
    if per_call.fract() == 0.0 {
        format!("{per_call:.0}")
    } else {
        format!("{per_call:.2}")
    }
}

fn report(rows: &[Row], started: SystemTime, write: bool) {
    let dir = criterion_dir();
    let mut table =
        String::from("| routine | median time | allocations/call |\n| --- | ---: | ---: |\n");
    for row in rows {
        let time = median_ns(&dir, row, started).map_or_else(|| "–".to_owned(), format_time);
        let _ = writeln!(
            table,
            "| {}/{} | {} | {} |",
            row.group,
            row.name,
            time,
            format_count(row.allocations_per_call)
        );
    }
    println!("\n{table}");
    if !write {
        return;
    }
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("allocations.md"), &table));
    match written {
        Ok(()) => println!("written to {}", dir.join("allocations.md").display()),
        Err(error) => eprintln!("could not write {}: {error}", dir.display()),
    }
}
