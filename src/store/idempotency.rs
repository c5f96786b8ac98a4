//! Idempotent creates (AIP-155): the first result of a call with a
//! `request_id` is kept under (caller, method, request id) with a
//! fingerprint of the request body. A retry with the same body gets that
//! result and writes nothing; reusing the request id for a different body
//! is refused ([`RecordError::RequestIdReused`]: a client error), never a
//! silent answer about some other request.

use sha2::{Digest, Sha256};

use super::records::{Record, RecordError, RecordResult};
use super::{ReadView, Txn, codec, keys};

/// What a call with a request id leaves behind.
#[derive(Clone, PartialEq, prost::Message)]
struct FirstResult {
    /// [`Idempotency::fingerprint`] of the request body.
    #[prost(bytes = "vec", tag = "1")]
    fingerprint: Vec<u8>,
    /// The record the call produced, encoded.
    #[prost(bytes = "vec", tag = "2")]
    result: Vec<u8>,
}

/// A call with a request id.
struct Keyed {
    key: Vec<u8>,
    fingerprint: Vec<u8>,
}

/// One call that may carry a request id.
pub struct Idempotency {
    method: &'static str,
    /// None when the call has no request id: then nothing is kept.
    keyed: Option<Keyed>,
}

impl Idempotency {
    /// A call of `method` by `caller` with `request_id` (possibly empty).
    /// `body` gives parts that together encode the request canonically
    /// (equal requests, equal parts); it runs only with a request id.
    pub fn new(
        caller: &str,
        method: &'static str,
        request_id: &str,
        body: impl FnOnce() -> Vec<Vec<u8>>,
    ) -> Self {
        let keyed = (!request_id.is_empty()).then(|| {
            let mut hash = Sha256::new();
            for part in body() {
                // Length prefixes keep ("ab", "c") apart from ("a", "bc").
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
            Keyed {
                key: keys::key(&[keys::REQUEST_ID, caller, method, request_id]),
                fingerprint: hash.finalize().to_vec(),
            }
        });
        Self { method, keyed }
    }

    /// The result of the first call with this request id, if there was
    /// one with the same body; [`RecordError::RequestIdReused`] if its body
    /// differed.
    pub fn recall<R: Record>(&self, view: &(impl ReadView + ?Sized)) -> RecordResult<Option<R>> {
        let Some(Keyed { key, fingerprint }) = &self.keyed else {
            return Ok(None);
        };
        let Some(bytes) = view.get(key)? else {
            return Ok(None);
        };
        let first: FirstResult = codec::decode(&bytes)?;
        if first.fingerprint != *fingerprint {
            return Err(RecordError::RequestIdReused {
                method: self.method,
            });
        }
        Ok(Some(codec::decode(&first.result)?))
    }

    /// Keeps `result` as the answer to retries.
    pub fn remember<R: Record>(&self, txn: &mut dyn Txn, result: &R) {
        if let Some(Keyed { key, fingerprint }) = &self.keyed {
            let first = FirstResult {
                fingerprint: fingerprint.clone(),
                result: codec::encode(result),
            };
            txn.put(key.clone(), codec::encode(&first));
        }
    }
}
