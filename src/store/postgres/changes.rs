//! The change log's rows: one per committed job, holding every key it wrote
//! (or deleted), so that other replicas can apply exactly that commit.
//!
//! Layout: a format byte (1), then per key: the key's length (u32, big
//! endian) and bytes, a tag (0 deleted, 1 written) and for a written key the
//! value's length (u32) and bytes.

use crate::store::{StoreError, StoreResult};

const FORMAT: u8 = 1;

/// A key written (Some) or deleted (None).
use crate::store::batch::KeyWrite;

pub fn encode(writes: &[KeyWrite]) -> Vec<u8> {
    let size = writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum::<usize>();
    let mut out = Vec::with_capacity(1 + size);
    out.push(FORMAT);
    for (key, value) in writes {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
    }
    out
}

pub fn decode(bytes: &[u8]) -> StoreResult<Vec<KeyWrite>> {
    let (&format, rest) = bytes.split_first().ok_or_else(corrupt)?;
    if format != FORMAT {
        return Err(StoreError::corrupt(format!(
            "change log format {format} is not supported (expected {FORMAT})"
        )));
    }
    let mut reader = Reader(rest);
    let mut writes = Vec::new();
    while !reader.0.is_empty() {
        let key = reader.sized()?.to_vec();
        let value = match reader.take(1)?[0] {
            0 => None,
            1 => Some(reader.sized()?.to_vec()),
            _ => return Err(corrupt()),
        };
        writes.push((key, value));
    }
    Ok(writes)
}

fn corrupt() -> StoreError {
    StoreError::corrupt("a change log entry is malformed")
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> StoreResult<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// A length (u32, big endian) and that many bytes.
    fn sized(&mut self) -> StoreResult<&'a [u8]> {
        let length = u32::from_be_bytes(self.take(4)?.try_into().expect("four bytes"));
        self.take(length as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let writes = vec![
            (b"r\0user\0a".to_vec(), Some(vec![1, 2, 3])),
            (b"i\0x".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
        ];
        let bytes = encode(&writes);
        assert_eq!(decode(&bytes).unwrap(), writes);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<KeyWrite>::new());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[2]).is_err());
    }
}
