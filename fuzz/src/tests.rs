//! The harness checked on stable Rust, without libFuzzer: the recorded
//! bases are served as they are, truncated, aged into their stale windows,
//! and mutated by a seeded pseudo-random loop (`FUZZ_ITERATIONS`, default
//! 2000) that runs the `decode_entry_mutated` code path.

use super::*;
use arbitrary::{Arbitrary, Unstructured};

/// Offsets in the entry layout: magic 3, version 1, flags 1, status 2.
const STORED_AT: usize = 7;
const TTL: usize = 15;

fn user_scenario(value: Bytes) -> Scenario {
    Scenario {
        value,
        target: USER,
        if_none_match: false,
        origin_status: StatusCode::OK,
        grace: false,
    }
}

fn statuses(outcomes: &[Outcome]) -> Vec<&str> {
    outcomes.iter().map(|o| o.cache_status.as_str()).collect()
}

#[test]
fn every_base_decodes_and_is_served_fresh() {
    for (i, base) in bases().iter().enumerate() {
        let entry = reference::decode(base).unwrap_or_else(|| panic!("base {i} rejected"));
        assert_eq!(entry.fingerprint, USER.fingerprint, "base {i}");
        let outcomes = try_run(&user_scenario(base.clone())).unwrap();
        for outcome in &outcomes {
            assert!(
                outcome
                    .cache_status
                    .starts_with("tower-cache-aside; hit; ttl="),
                "{outcomes:?}"
            );
            assert_eq!(outcome.status, entry.status);
        }
    }
    // The trailers and the obs-text value survive the round trip.
    let with_trailers = reference::decode(&bases()[1]).unwrap();
    assert_eq!(with_trailers.trailers.unwrap()["grpc-status"], "0");
}

#[test]
fn a_matching_etag_gets_a_304() {
    let mut scenario = user_scenario(bases()[0].clone());
    scenario.if_none_match = true;
    let outcomes = try_run(&scenario).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == StatusCode::NOT_MODIFIED),
        "{outcomes:?}"
    );
}

#[test]
fn every_truncation_is_a_bad_entry() {
    for base in bases() {
        for len in 0..base.len() {
            let outcomes = try_run(&user_scenario(base.slice(..len))).unwrap();
            assert!(
                statuses(&outcomes)
                    .iter()
                    .all(|s| s.ends_with("detail=bad-entry")),
                "{len}: {outcomes:?}"
            );
        }
    }
}

#[test]
fn another_keys_entry_is_a_plain_miss() {
    // Recorded under `GET /`, served to `GET /users/7?...`.
    let root = record_base(0, ROOT);
    let outcomes = try_run(&user_scenario(root.clone())).unwrap();
    assert_eq!(statuses(&outcomes), ["tower-cache-aside; fwd=miss"; 2]);
    // And under its own key, the raw target serves it.
    let outcomes = try_run(&Scenario::raw(&root)).unwrap();
    assert!(
        statuses(&outcomes).iter().all(|s| s.contains("; hit;")),
        "{outcomes:?}"
    );
}

/// Base 0 with `stored_at` moved so that it expired `ago` before now.
fn expired(ago: Duration) -> Bytes {
    let mut value = bases()[0].to_vec();
    let ttl = u64::from_be_bytes(value[TTL..TTL + 8].try_into().unwrap());
    let stored_at = now_ms() - duration_ms(ago) - ttl;
    value[STORED_AT..STORED_AT + 8].copy_from_slice(&stored_at.to_be_bytes());
    Bytes::from(value)
}

#[test]
fn stale_windows_are_honoured() {
    let run_with = |ago: u64, grace: bool, origin_fails: bool| {
        let mut scenario = user_scenario(expired(Duration::from_secs(ago)));
        scenario.grace = grace;
        if origin_fails {
            scenario.origin_status = StatusCode::SERVICE_UNAVAILABLE;
        }
        try_run(&scenario).unwrap()
    };
    // Without grace, anything expired is a miss.
    assert_eq!(
        statuses(&run_with(10, false, false)),
        ["tower-cache-aside; fwd=miss"; 2]
    );
    // Within stale-while-revalidate: served stale, both methods.
    let outcomes = run_with(10, true, false);
    assert!(
        statuses(&outcomes)
            .iter()
            .all(|s| s.starts_with("tower-cache-aside; hit; fwd=stale; ttl=-1")),
        "{outcomes:?}"
    );
    // Within stale-if-error only: the origin answers; when it fails, GET
    // gets the stale entry and HEAD the failure.
    let outcomes = run_with(60, true, false);
    assert_eq!(outcomes[0].status, StatusCode::OK);
    assert_eq!(
        outcomes[0].cache_status,
        "tower-cache-aside; fwd=miss; stored"
    );
    let outcomes = run_with(60, true, true);
    assert_eq!(outcomes[0].status, StatusCode::OK, "{outcomes:?}");
    assert!(outcomes[0].cache_status.ends_with("detail=stale-if-error"));
    assert_eq!(outcomes[1].status, StatusCode::SERVICE_UNAVAILABLE);
    // Past both windows: a miss.
    assert_eq!(
        run_with(600, true, true)[0].status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn raw_inputs_never_break_the_layer() {
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        b"TCA".to_vec(),
        b"TCA\x01".to_vec(),
        b"{\"json\": true}".to_vec(),
        vec![0xff; 64],
    ];
    let root = record_base(1, ROOT).to_vec();
    inputs.extend((0..root.len()).map(|len| root[..len].to_vec()));
    inputs.push(root);
    for input in inputs {
        try_run(&Scenario::raw(&input)).unwrap();
    }
}

/// splitmix64: a seeded stream of bytes for the stable mutation loop.
fn random_bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn seeded_mutations_never_break_the_layer() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let mut seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x7ca_5eed);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..iterations {
        let len = 8 + (i % 56);
        let bytes = random_bytes(&mut seed, len);
        let Ok(input) = MutationInput::arbitrary(&mut Unstructured::new(&bytes)) else {
            continue;
        };
        let scenario = input.scenario();
        let outcomes = try_run(&scenario)
            .unwrap_or_else(|problem| panic!("iteration {i}: {problem}\ninput: {input:?}"));
        for outcome in outcomes {
            let kind = outcome
                .cache_status
                .split("; ttl=")
                .next()
                .unwrap_or_default()
                .to_owned();
            *kinds.entry(kind).or_default() += 1;
        }
    }
    println!("{iterations} mutated entries, outcomes: {kinds:#?}");
}

/// An entry holding as many distinct header names as an `http::HeaderMap`
/// takes: the decoder refuses more than 1024 fields, so it is a bad entry,
/// answered by the origin, never a panic.
#[test]
fn an_entry_with_a_full_header_map_is_a_miss_not_a_panic() {
    let mut names = Vec::new();
    let mut map = HeaderMap::new();
    loop {
        let name = HeaderName::from_bytes(format!("h{}", names.len()).as_bytes()).unwrap();
        if map
            .try_append(name.clone(), HeaderValue::from_static(""))
            .is_err()
        {
            break;
        }
        names.push(name);
    }
    let mut value = Vec::new();
    value.extend_from_slice(b"TCA\x01\x00");
    value.extend_from_slice(&200u16.to_be_bytes());
    value.extend_from_slice(&now_ms().to_be_bytes());
    value.extend_from_slice(&3_600_000u64.to_be_bytes());
    value.extend_from_slice(&(USER.fingerprint.len() as u32).to_be_bytes());
    value.extend_from_slice(USER.fingerprint);
    value.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for name in &names {
        value.extend_from_slice(&(name.as_str().len() as u16).to_be_bytes());
        value.extend_from_slice(name.as_str().as_bytes());
        value.extend_from_slice(&0u32.to_be_bytes());
    }
    value.extend_from_slice(&1u32.to_be_bytes());
    value.push(b'x');
    value.push(0);
    assert!(names.len() > 1024, "{} header names", names.len());
    assert!(reference::decode(&value).is_none());
    run(&user_scenario(Bytes::from(value)));
}

/// Writes valid entries for `GET /` (the `decode_entry` target's key) to
/// `seeds/decode_entry/`, as a starting corpus:
/// `cargo test -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand to refresh the seeds"]
fn write_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/decode_entry");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..BASE_COUNT {
        std::fs::write(dir.join(format!("base-{i}")), record_base(i, ROOT)).unwrap();
    }
}

/// What the layer did with each input of a corpus, by `Cache-Status`:
/// `FUZZ_CORPUS=corpus/decode_entry cargo test --release -- --ignored
/// corpus_outcomes --nocapture` (`FUZZ_MUTATED=1` for a
/// `decode_entry_mutated` corpus).
#[test]
#[ignore = "reads a corpus named by FUZZ_CORPUS"]
fn corpus_outcomes() {
    let dir = std::env::var("FUZZ_CORPUS").expect("FUZZ_CORPUS");
    let mutated = std::env::var_os("FUZZ_MUTATED").is_some();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(file.unwrap().path()).unwrap();
        let scenario = if mutated {
            let Ok(input) = MutationInput::arbitrary_take_rest(Unstructured::new(&data)) else {
                continue;
            };
            input.scenario()
        } else {
            Scenario::raw(&data)
        };
        inputs += 1;
        for outcome in try_run(&scenario).unwrap() {
            let kind = outcome
                .cache_status
                .split("; ttl=")
                .next()
                .unwrap_or_default()
                .to_owned();
            *kinds
                .entry(format!("{} {kind}", outcome.method))
                .or_default() += 1;
        }
    }
    println!("{inputs} inputs: {kinds:#?}");
}
