//! The fuzz input is the value the store holds for every key: the layer
//! decodes it on a GET and a HEAD of `/` (see the harness in `src/lib.rs`
//! for the properties checked). Random bytes mostly fail to decode or carry
//! another key's material; a valid entry for `/` has the fingerprint
//! `/\0\0`. Seeds of valid entries: `fuzz/seeds/decode_entry/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_cache_aside_fuzz::{run, Scenario};

fuzz_target!(|data: &[u8]| {
    run(&Scenario::raw(data));
});
