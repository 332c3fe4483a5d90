//! How the typed [`Cache`](crate::Cache) turns values into bytes.
//!
//! A stored value names the codec that wrote it. A value written by another
//! codec is a miss (and is replaced), never a wrong value: two services that
//! share a Redis but not a codec cannot misread each other.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// A serde format for cached values.
pub trait Codec: Send + Sync + 'static {
    /// Identifies the codec in every value it writes. Each codec has its
    /// own; the crate's use 1 ([`Json`]) and 2 (`Postcard`).
    const ID: u8;

    /// Serializes a value.
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error>;

    /// Deserializes a value; bytes that do not decode are an error.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error>;
}

/// JSON through `serde_json`: readable in `redis-cli`, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const ID: u8 = 1;

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(value).map_err(|e| Error::Codec(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Codec(e.to_string()))
    }
}

/// A compact binary format through `postcard` (feature `postcard`):
/// smaller and faster than JSON, not self-describing.
#[cfg(feature = "postcard")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    const ID: u8 = 2;

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(value).map_err(|e| Error::Codec(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        postcard::from_bytes(bytes).map_err(|e| Error::Codec(e.to_string()))
    }
}
