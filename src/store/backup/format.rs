//! The backup file: self-describing, versioned, checked end to end.
//!
//! ```text
//! header   magic "ENTLBKUP", format version (u16)
//! records  tag 1 (put): key length (u32), key, value length (u32), value
//!          tag 2 (delete): key length (u32), key
//! end      tag 0, revision (u64), audit head length (u16), audit head,
//!          record count (u64), SHA-256 of every byte before it
//! ```
//!
//! All integers are big-endian. Records apply in order to an empty store:
//! a snapshot is a scan of a store that keeps changing, followed by the
//! changes made while it ran (see [`super::snapshot`]), so a later record
//! may replace or delete a key an earlier one wrote. The revision and the
//! audit head are therefore known only once every record is written, and
//! come after them; the checksum covers the whole file, so a truncated or
//! altered file is refused before anything is restored from it.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::store::{Revision, StoreError, StoreResult};

const MAGIC: &[u8; 8] = b"ENTLBKUP";
/// The version of this layout; readers refuse others.
pub const FORMAT_VERSION: u16 = 1;

const END: u8 = 0;
const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Keys and values larger than this are taken for corruption rather than
/// allocated.
const MAX_LENGTH: usize = 256 << 20;

/// One change to apply: a key and its value, or None for a deletion.
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// What a backup holds, from its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub revision: Revision,
    /// The audit chain's head (its stored encoding; empty before the first
    /// event).
    pub audit_head: Vec<u8>,
    pub records: u64,
}

/// Encodes a backup piece by piece into a buffer the caller drains.
pub struct Encoder {
    hasher: Sha256,
    records: u64,
    buffer: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// Starts a backup with its header.
    pub fn new() -> Self {
        let mut encoder = Self {
            hasher: Sha256::new(),
            records: 0,
            buffer: Vec::new(),
        };
        encoder.push(MAGIC);
        encoder.push(&FORMAT_VERSION.to_be_bytes());
        encoder
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.push(&[PUT]);
        self.push_bytes(key);
        self.push_bytes(value);
        self.records += 1;
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.push(&[DELETE]);
        self.push_bytes(key);
        self.records += 1;
    }

    /// How many bytes wait to be taken.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The bytes encoded since the last take.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }

    /// Ends the backup; returns the last bytes.
    pub fn finish(mut self, revision: Revision, audit_head: &[u8]) -> Vec<u8> {
        self.push(&[END]);
        self.push(&revision.to_be_bytes());
        let head_length = u16::try_from(audit_head.len()).expect("an audit head is short");
        self.push(&head_length.to_be_bytes());
        self.push(audit_head);
        self.push(&self.records.to_be_bytes());
        let checksum = self.hasher.finalize();
        self.buffer.extend_from_slice(&checksum);
        self.buffer
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        let length = u32::try_from(bytes.len()).expect("keys and values are under 4 GiB");
        self.push(&length.to_be_bytes());
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.buffer.extend_from_slice(bytes);
    }
}

/// Reads a backup's records in order; the summary comes once they are all
/// read and the checksum matched.
pub struct Decoder<R> {
    source: R,
    hasher: Sha256,
    records: u64,
    summary: Option<Summary>,
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header.
    pub fn new(source: R) -> StoreResult<Self> {
        let mut decoder = Self {
            source,
            hasher: Sha256::new(),
            records: 0,
            summary: None,
        };
        let magic: [u8; 8] = decoder.read_array()?;
        if &magic != MAGIC {
            return Err(StoreError::corrupt(
                "this is not an entitlements backup file",
            ));
        }
        let version = u16::from_be_bytes(decoder.read_array()?);
        if version != FORMAT_VERSION {
            return Err(StoreError::corrupt(format!(
                "backup format version {version} is not supported (this binary reads version \
                 {FORMAT_VERSION})"
            )));
        }
        Ok(decoder)
    }

    /// The next record, or None after the last (the summary is then set).
    pub fn next_record(&mut self) -> StoreResult<Option<Record>> {
        if self.summary.is_some() {
            return Ok(None);
        }
        let [tag] = self.read_array()?;
        let record = match tag {
            PUT => (self.read_bytes()?, Some(self.read_bytes()?)),
            DELETE => (self.read_bytes()?, None),
            END => {
                self.read_end()?;
                return Ok(None);
            }
            other => {
                return Err(StoreError::corrupt(format!(
                    "the backup file is damaged: unknown record tag {other} after {} records",
                    self.records
                )));
            }
        };
        self.records += 1;
        Ok(Some(record))
    }

    /// What the backup holds, once every record has been read.
    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    fn read_end(&mut self) -> StoreResult<()> {
        let revision = u64::from_be_bytes(self.read_array()?);
        let head_length = u16::from_be_bytes(self.read_array()?) as usize;
        let audit_head = self.read_exact(head_length)?;
        let records = u64::from_be_bytes(self.read_array()?);
        let computed = std::mem::take(&mut self.hasher).finalize();
        let mut stored = [0u8; 32];
        self.fill(&mut stored)?;
        if stored.as_slice() != computed.as_slice() {
            return Err(StoreError::corrupt(
                "the backup file is damaged: its checksum does not match its contents",
            ));
        }
        if records != self.records {
            return Err(StoreError::corrupt(format!(
                "the backup file is damaged: it says {records} records but holds {}",
                self.records
            )));
        }
        let mut rest = [0u8; 1];
        if self.source.read(&mut rest)? != 0 {
            return Err(StoreError::corrupt(
                "the backup file is damaged: there are bytes after its end",
            ));
        }
        self.summary = Some(Summary {
            revision,
            audit_head,
            records,
        });
        Ok(())
    }

    fn read_bytes(&mut self) -> StoreResult<Vec<u8>> {
        let length = u32::from_be_bytes(self.read_array()?) as usize;
        if length > MAX_LENGTH {
            return Err(StoreError::corrupt(format!(
                "the backup file is damaged: a record claims {length} bytes"
            )));
        }
        self.read_exact(length)
    }

    fn read_array<const N: usize>(&mut self) -> StoreResult<[u8; N]> {
        let mut bytes = [0u8; N];
        self.fill(&mut bytes)?;
        self.hasher.update(bytes);
        Ok(bytes)
    }

    fn read_exact(&mut self, length: usize) -> StoreResult<Vec<u8>> {
        let mut bytes = vec![0u8; length];
        self.fill(&mut bytes)?;
        self.hasher.update(&bytes);
        Ok(bytes)
    }

    fn fill(&mut self, bytes: &mut [u8]) -> StoreResult<()> {
        self.source.read_exact(bytes).map_err(|error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::corrupt(format!(
                    "the backup file is truncated: it ends after {} records, before its end \
                     marker and checksum",
                    self.records
                ))
            } else {
                StoreError::Io(error)
            }
        })
    }
}

/// Reads `source` to its end and checks it; returns its summary.
pub fn check(source: impl Read) -> StoreResult<Summary> {
    let mut decoder = Decoder::new(source)?;
    while decoder.next_record()?.is_some() {}
    Ok(decoder.summary().cloned().expect("read to the end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut encoder = Encoder::new();
        encoder.put(b"a", b"1");
        encoder.put(b"b", b"2");
        encoder.delete(b"a");
        let mut bytes = encoder.take();
        bytes.extend(encoder.finish(7, b"head"));
        bytes
    }

    #[test]
    fn records_and_summary_round_trip() {
        let bytes = sample();
        let mut decoder = Decoder::new(bytes.as_slice()).unwrap();
        let mut records = Vec::new();
        while let Some(record) = decoder.next_record().unwrap() {
            records.push(record);
        }
        assert_eq!(
            records,
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec())),
                (b"a".to_vec(), None),
            ]
        );
        let expected = Summary {
            revision: 7,
            audit_head: b"head".to_vec(),
            records: 3,
        };
        assert_eq!(decoder.summary(), Some(&expected));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample();
        for length in 0..bytes.len() {
            let error = check(&bytes[..length]).unwrap_err().to_string();
            assert!(
                error.contains("truncated") || error.contains("not an entitlements backup"),
                "{length}: {error}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(check(damaged.as_slice()).is_err(), "byte {at}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(check(longer.as_slice()).is_err());
    }
}
