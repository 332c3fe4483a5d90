//! Real entries, recorded once per process by running a miss through the
//! layer over a capturing store, are mutated by the fuzz input (byte and
//! integer overwrites at chosen offsets, inserts, removals, truncation,
//! splices) and served to a GET and a HEAD of the key they were stored
//! under, so that decoding gets past the fingerprint into the headers,
//! body and trailers (see the harness in `src/lib.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_cache_aside_fuzz::{run, MutationInput};

fuzz_target!(|input: MutationInput| {
    run(&input.scenario());
});
