//! How records are laid out as bytes: one format-version byte, then the
//! protobuf encoding. Protobuf keeps old and new fields readable both ways;
//! the version byte is for changes it cannot absorb.

use super::{StoreError, StoreResult};

pub const FORMAT_VERSION: u8 = 1;

pub fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + message.encoded_len());
    bytes.push(FORMAT_VERSION);
    message
        .encode(&mut bytes)
        .expect("a Vec grows as needed, so encoding cannot run out of space");
    bytes
}

pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> StoreResult<M> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => M::decode(body).map_err(|e| StoreError::Corrupt {
            what: e.to_string(),
            cause: Some(e.into()),
        }),
        Some((version, _)) => Err(StoreError::corrupt(format!(
            "record format version {version} is not supported (expected {FORMAT_VERSION})"
        ))),
        None => Err(StoreError::corrupt("empty record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let value = prost_types::Duration {
            seconds: 7,
            nanos: 0,
        };
        let bytes = encode(&value);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<prost_types::Duration>(&bytes).unwrap(), value);
        let mut future = bytes.clone();
        future[0] = FORMAT_VERSION + 1;
        assert!(decode::<prost_types::Duration>(&future).is_err());
    }
}
