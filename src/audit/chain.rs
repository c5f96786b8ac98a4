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

use crate::error::Result;
use crate::pb::AuditEvent;
use crate::shared::actor::Actor;
use crate::shared::clock::Moment;
use crate::store::records::{self, Record};
use crate::store::{ReadView, StoreResult, Txn, codec, keys};

use super::event::{Draft, sequence_key};
use crate::shared::id::new_id;

const HEAD_KEY: &str = keys::AUDIT_HEAD;
const ANCHOR_KEY: &str = "audit_anchor";

/// The newest event: where the next one links, and the revision of the
/// change that appended it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Head {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    #[prost(message, optional, tag = "2")]
    pub time: Option<Timestamp>,
    #[prost(bytes = "vec", tag = "3")]
    pub hash: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub revision: u64,
}

/// Where the retained chain starts: events before `first` were pruned;
/// `previous_hash` is the hash `first` links to and `pruned_until` (epoch
/// seconds) with `pruned_until_nanos` the time of the newest pruned event
/// (0 when nothing was pruned).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Anchor {
    #[prost(uint64, tag = "1")]
    pub first: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub previous_hash: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub pruned_until: i64,
    #[prost(int32, tag = "4")]
    pub pruned_until_nanos: i32,
}

impl Anchor {
    /// The time of the newest pruned event.
    pub fn pruned_until(&self) -> Moment {
        Moment::from_timestamp(Timestamp {
            seconds: self.pruned_until,
            nanos: self.pruned_until_nanos,
        })
    }
}

/// The hash the first event links to.
const GENESIS: [u8; 32] = [0; 32];

fn meta_key(name: &str) -> Vec<u8> {
    keys::key(&[keys::META, name])
}

fn read_meta<M: prost::Message + Default>(
    view: &(impl ReadView + ?Sized),
    name: &str,
) -> StoreResult<Option<M>> {
    view.get(&meta_key(name))?
        .map(|bytes| codec::decode(&bytes))
        .transpose()
}

pub fn head(view: &(impl ReadView + ?Sized)) -> StoreResult<Head> {
    Ok(read_meta(view, HEAD_KEY)?.unwrap_or_else(|| Head {
        hash: GENESIS.to_vec(),
        ..Head::default()
    }))
}

pub fn anchor(view: &(impl ReadView + ?Sized)) -> StoreResult<Anchor> {
    Ok(read_meta(view, ANCHOR_KEY)?.unwrap_or_else(|| Anchor {
        first: 1,
        previous_hash: GENESIS.to_vec(),
        pruned_until: 0,
        pruned_until_nanos: 0,
    }))
}

pub fn write_anchor(txn: &mut dyn Txn, anchor: &Anchor) {
    txn.put(meta_key(ANCHOR_KEY), codec::encode(anchor));
}

/// SHA-256 of the previous hash and the event encoded with `hash` empty.
/// prost encodes fields in tag order and Struct fields in key order, so the
/// encoding of a decoded event is the encoding it was hashed in.
pub fn hash_of(event: &AuditEvent) -> Vec<u8> {
    let mut unhashed = event.clone();
    unhashed.hash.clear();
    digest(&unhashed)
}

/// [`hash_of`] for an event whose `hash` is still empty.
fn digest(unhashed: &AuditEvent) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(&unhashed.previous_hash);
    hasher.update(unhashed.encode_to_vec());
    hasher.finalize().to_vec()
}

/// The request id of a change whose actor brought none: the one its
/// first event got, or a fresh one for the first event.
fn change_request_id(txn: &dyn Txn, head: &Head) -> Result<String> {
    if head.sequence > 0 && head.revision == txn.revision() {
        let first: AuditEvent = records::require(txn, &sequence_key(head.sequence))?;
        return Ok(first.request_id);
    }
    Ok(new_id())
}

/// Appends one event for a change made in `txn` by `actor`. Times never go
/// backwards along the chain, so time ranges map to sequence ranges.
pub fn append(txn: &mut dyn Txn, actor: &Actor, draft: Draft) -> Result<()> {
    let head = head(txn)?;
    let now = crate::shared::clock::to_timestamp(actor.now);
    let time = match head.time {
        Some(last) if (now.seconds, now.nanos) < (last.seconds, last.nanos) => last,
        _ => now,
    };
    let request_id = match actor.request_id.as_str() {
        "" => change_request_id(txn, &head)?,
        given => given.to_string(),
    };
    let mut event = AuditEvent {
        sequence: head.sequence + 1,
        time: Some(time),
        actor: actor.id.clone(),
        action: draft.action.name(),
        target_type: draft.action.target_type.to_string(),
        target_id: draft.target_id.clone(),
        outcome: draft.outcome.clone(),
        details: draft.details_struct(),
        request_id,
        catalog_id: draft.catalog_id,
        access_package_id: draft.access_package_id,
        user_id: draft.user_id,
        revision: txn.revision(),
        previous_hash: head.hash,
        hash: Vec::new(),
    };
    event.hash = digest(&event);
    records::save(txn, None, &event)?;
    let head = Head {
        sequence: event.sequence,
        time: Some(time),
        hash: event.hash,
        revision: event.revision,
    };
    txn.put(meta_key(HEAD_KEY), codec::encode(&head));
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
        previous = event.hash;
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
    previous: &[u8],
) -> Option<String> {
    if stored_at != sequence_key(event.sequence) {
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
