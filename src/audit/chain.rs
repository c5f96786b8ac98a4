//! The hash chain: appending an event inside a write transaction, and
//! checking the whole chain.
//!
//! The head of the chain (newest sequence, its time and hash) and the
//! anchor (the oldest retained sequence and the hash it links to) are store
//! metadata written in the same transaction as the events, so a commit
//! never leaves them out of step. Jobs run one at a time on the store's
//! committer, so reading the head and writing the next event cannot race.

use prost::Message;
use prost_types::Timestamp;
use sha2::{Digest, Sha256};

use crate::domain::entity::Actor;
use crate::error::Result;
use crate::pb::AuditEvent;
use crate::store::records::{self, Record};
use crate::store::{ReadView, StoreError, StoreResult, Txn, codec, keys};

use super::event::Draft;

pub type Hash = [u8; 32];

const HEAD_KEY: &str = "audit_head";
const ANCHOR_KEY: &str = "audit_anchor";

/// The newest event: where the next one links.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Head {
    pub sequence: u64,
    pub seconds: i64,
    pub nanos: i32,
    pub hash: Hash,
}

/// Where the retained chain starts: events before `first` were pruned;
/// `previous_hash` is the hash `first` links to and `pruned_until` the time
/// of the newest pruned event (0 when nothing was pruned).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub first: u64,
    pub previous_hash: Hash,
    pub pruned_until: i64,
}

impl Default for Anchor {
    fn default() -> Self {
        Self {
            first: 1,
            previous_hash: Hash::default(),
            pruned_until: 0,
        }
    }
}

fn meta_key(name: &str) -> Vec<u8> {
    keys::key(&[keys::META, name])
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("the audit {what} is malformed"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn read_hash(bytes: &[u8], at: usize) -> Hash {
    bytes[at..at + 32].try_into().expect("32 bytes")
}

pub fn head(view: &(impl ReadView + ?Sized)) -> StoreResult<Head> {
    let Some(bytes) = view.get(&meta_key(HEAD_KEY))? else {
        return Ok(Head::default());
    };
    if bytes.len() != 52 {
        return Err(corrupt("head"));
    }
    Ok(Head {
        sequence: read_u64(&bytes, 0),
        seconds: read_u64(&bytes, 8) as i64,
        nanos: u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes")) as i32,
        hash: read_hash(&bytes, 20),
    })
}

fn write_head(txn: &mut dyn Txn, head: &Head) {
    let mut bytes = Vec::with_capacity(52);
    bytes.extend_from_slice(&head.sequence.to_be_bytes());
    bytes.extend_from_slice(&head.seconds.to_be_bytes());
    bytes.extend_from_slice(&(head.nanos as u32).to_be_bytes());
    bytes.extend_from_slice(&head.hash);
    txn.put(meta_key(HEAD_KEY), bytes);
}

pub fn anchor(view: &(impl ReadView + ?Sized)) -> StoreResult<Anchor> {
    let Some(bytes) = view.get(&meta_key(ANCHOR_KEY))? else {
        return Ok(Anchor::default());
    };
    if bytes.len() != 48 {
        return Err(corrupt("anchor"));
    }
    Ok(Anchor {
        first: read_u64(&bytes, 0),
        previous_hash: read_hash(&bytes, 8),
        pruned_until: read_u64(&bytes, 40) as i64,
    })
}

pub fn write_anchor(txn: &mut dyn Txn, anchor: &Anchor) {
    let mut bytes = Vec::with_capacity(48);
    bytes.extend_from_slice(&anchor.first.to_be_bytes());
    bytes.extend_from_slice(&anchor.previous_hash);
    bytes.extend_from_slice(&anchor.pruned_until.to_be_bytes());
    txn.put(meta_key(ANCHOR_KEY), bytes);
}

/// SHA-256 of the previous hash and the event encoded with `hash` empty.
/// prost encodes fields in tag order and Struct fields in key order, so the
/// encoding of a decoded event is the encoding it was hashed in.
pub fn hash_of(event: &AuditEvent) -> Hash {
    let mut unhashed = event.clone();
    unhashed.hash.clear();
    let mut hasher = Sha256::new();
    hasher.update(&event.previous_hash);
    hasher.update(unhashed.encode_to_vec());
    hasher.finalize().into()
}

/// Appends one event for a change made in `txn` by `actor`. Times never go
/// backwards along the chain, so time ranges map to sequence ranges.
pub fn append(txn: &mut dyn Txn, actor: &Actor, draft: Draft) -> Result<()> {
    let head = head(txn)?;
    let now = crate::clock::to_timestamp(actor.now);
    let time = if (now.seconds, now.nanos) < (head.seconds, head.nanos) {
        Timestamp {
            seconds: head.seconds,
            nanos: head.nanos,
        }
    } else {
        now
    };
    let mut event = AuditEvent {
        sequence: head.sequence + 1,
        time: Some(time),
        actor: actor.id.clone(),
        action: draft.action(),
        target_type: draft.target_type.to_string(),
        target_id: draft.target_id.clone(),
        outcome: draft.outcome.clone(),
        details: draft.details_struct(),
        request_id: actor.request_id.clone(),
        catalog_id: draft.catalog_id,
        access_package_id: draft.access_package_id,
        user_id: draft.user_id,
        revision: txn.revision(),
        previous_hash: head.hash.to_vec(),
        hash: Vec::new(),
    };
    let hash = hash_of(&event);
    event.hash = hash.to_vec();
    records::save(txn, None, &event)?;
    write_head(
        txn,
        &Head {
            sequence: event.sequence,
            seconds: time.seconds,
            nanos: time.nanos,
            hash,
        },
    );
    Ok(())
}

/// What a check of the chain found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verification {
    pub checked: u64,
    pub first: u64,
    pub last: u64,
    /// The first broken link and what is wrong with it.
    pub broken: Option<(u64, String)>,
}

/// Walks every retained event in sequence order and checks that each is
/// the next number, links to the hash before it, and hashes to what it
/// claims; then that the newest is the recorded head.
pub fn verify(view: &(impl ReadView + ?Sized)) -> Result<Verification> {
    let anchor = anchor(view)?;
    let head = head(view)?;
    let mut result = Verification {
        first: anchor.first,
        ..Verification::default()
    };
    let mut expected = anchor.first;
    let mut previous = anchor.previous_hash;
    let prefix = keys::prefix(&[keys::RECORD, AuditEvent::KIND]);
    for item in view.scan(&prefix, None) {
        let (key, bytes) = item?;
        let stored_at = keys::last_part(&key);
        let event = match codec::decode::<AuditEvent>(&bytes) {
            Ok(event) => event,
            Err(_) => {
                result.broken = Some((expected, "the stored event cannot be read".into()));
                return Ok(result);
            }
        };
        if let Some(problem) = link_problem(&event, &stored_at, expected, &previous) {
            result.broken = Some((expected, problem));
            return Ok(result);
        }
        previous = event.hash.as_slice().try_into().unwrap_or_default();
        result.checked += 1;
        result.last = event.sequence;
        expected += 1;
    }
    if head.sequence + 1 != expected || (head.sequence > 0 && head.hash != previous) {
        let problem = format!(
            "the chain's head is event {}, but the retained events end at {}",
            head.sequence,
            expected - 1
        );
        result.broken = Some((expected.min(head.sequence.max(1)), problem));
    }
    Ok(result)
}

fn link_problem(
    event: &AuditEvent,
    stored_at: &str,
    expected: u64,
    previous: &Hash,
) -> Option<String> {
    if stored_at != super::event::sequence_key(event.sequence) {
        return Some(format!(
            "the event stored as {stored_at} claims sequence {}",
            event.sequence
        ));
    }
    if event.sequence != expected {
        return Some(format!(
            "event {expected} is missing (the next stored event is {})",
            event.sequence
        ));
    }
    if event.previous_hash != previous {
        return Some("it does not link to the hash of the event before it".into());
    }
    if event.hash != hash_of(event) {
        return Some("its content does not match its hash".into());
    }
    None
}
