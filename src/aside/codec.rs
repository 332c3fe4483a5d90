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
/// smaller and faster than JSON, but not self-describing. A value read as
/// another type is a miss when its bytes do not decode as that type, or
/// leave bytes over; a type whose encoding happens to be the same (a `u32`
/// read as a `u64`) cannot be told apart. Give each type its own key.
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
        match postcard::take_from_bytes(bytes) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(Error::Codec(format!(
                "{} bytes left over: not a value of this type",
                rest.len()
            ))),
            Err(e) => Err(Error::Codec(e.to_string())),
        }
    }
}
