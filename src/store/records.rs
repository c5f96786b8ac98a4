//! Typed records on top of the key space: every record kind declares its
//! secondary index entries, uniqueness constraints and references to other
//! records, and [`save`] / [`remove`] keep all of them in step with the
//! record in the same transaction. References are what make "delete of
//! something in use" a refusal that names the users.
//!
//! What these operations refuse (a record that is missing, a uniqueness
//! claim another record holds, a record others refer to) is a
//! [`RecordError`]; the layers above decide how to tell a client.

use std::collections::BTreeSet;

use super::{ReadView, StoreError, StoreResult, Txn, codec, keys};

/// What typed-record operations refuse, besides failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No record of `kind` has the id.
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    /// Another record of `kind` (`owner`) holds the uniqueness claim
    /// (`name`, `value`).
    #[error("{kind} {owner:?} already has {name} {value:?}")]
    Taken {
        kind: &'static str,
        name: &'static str,
        value: String,
        owner: String,
    },
    /// Records refer to (`kind`, `id`), which therefore stays: up to
    /// [`NAMED_REFERRERS`] of them, at least one.
    #[error("{kind} {id:?} is in use by {} record(s)", referrers.len())]
    InUse {
        kind: String,
        id: String,
        referrers: Vec<Referrer>,
    },
    /// A request id was used before by the same caller for a different
    /// request of `method` (see [`super::idempotency`]).
    #[error("request id already used for a different {method} request")]
    RequestIdReused { method: &'static str },
}

pub type RecordResult<T> = Result<T, RecordError>;

/// A committed change to one record: its kind and id as the store keys
/// it, and the new encoded value (None: removed). Commits reach observers
/// as these ([`super::Change::records`]); observers decode the kinds they
/// follow with [`RecordChange::decode`] and never read key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordChange<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    value: Option<&'a [u8]>,
}

impl<'a> RecordChange<'a> {
    /// The change a write of `value` (None: a delete) to `key` makes, if
    /// `key` is a record's key.
    pub fn parse(key: &'a [u8], value: Option<&'a [u8]>) -> Option<Self> {
        let text = std::str::from_utf8(key).ok()?;
        let mut parts = text.splitn(3, char::from(keys::SEP));
        if parts.next()? != keys::RECORD {
            return None;
        }
        Some(Self {
            kind: parts.next()?,
            id: parts.next()?,
            value,
        })
    }

    /// Whether the change is to a record of kind `R`.
    pub fn is<R: Record>(&self) -> bool {
        self.kind == R::KIND
    }

    /// Whether the change wrote the record (rather than removed it).
    pub fn is_write(&self) -> bool {
        self.value.is_some()
    }

    /// For a change to a record of kind `R`: the record as written, or None
    /// if it was removed. None for a change to another kind.
    pub fn decode<R: Record>(&self) -> Option<StoreResult<Option<R>>> {
        self.is::<R>()
            .then(|| self.value.map(codec::decode).transpose())
    }
}

/// A secondary index entry: `target` is listed under (`name`, `value`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexEntry {
    pub name: &'static str,
    pub value: String,
    pub target: String,
}

impl IndexEntry {
    pub fn new(name: &'static str, value: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            name,
            value: value.into(),
            target: target.into(),
        }
    }
}

/// A reference from a record to another record (by kind and id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub kind: &'static str,
    pub id: String,
}

impl Reference {
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
}

pub trait Record: prost::Message + Default + Clone + Send + 'static {
    /// The record kind: table name and the noun used in error messages.
    const KIND: &'static str;

    fn id(&self) -> String;

    fn indexes(&self) -> Vec<IndexEntry> {
        Vec::new()
    }

    /// (constraint name, value) pairs no other record of the kind may share.
    fn uniques(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Records this one depends on; they cannot be removed while it exists.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

fn record_key(kind: &str, id: &str) -> Vec<u8> {
    keys::key(&[keys::RECORD, kind, id])
}

fn index_key(kind: &str, entry: &IndexEntry) -> Vec<u8> {
    keys::key(&[keys::INDEX, kind, entry.name, &entry.value, &entry.target])
}

fn unique_key(kind: &str, name: &str, value: &str) -> Vec<u8> {
    keys::key(&[keys::UNIQUE, kind, name, value])
}

fn reference_key(target: &Reference, source_kind: &str, source_id: &str) -> Vec<u8> {
    keys::key(&[
        keys::REFERENCE,
        target.kind,
        &target.id,
        source_kind,
        source_id,
    ])
}

pub fn load<R: Record>(view: &(impl ReadView + ?Sized), id: &str) -> StoreResult<Option<R>> {
    view.get(&record_key(R::KIND, id))?
        .map(|bytes| codec::decode(&bytes))
        .transpose()
}

/// How precondition violations name a record: `<kind>/<id>`.
pub fn subject<R: Record>(id: &str) -> String {
    format!("{}/{id}", R::KIND)
}

/// Loads a record, or refuses with [`RecordError::NotFound`].
pub fn require<R: Record>(view: &(impl ReadView + ?Sized), id: &str) -> RecordResult<R> {
    load(view, id)?.ok_or_else(|| RecordError::NotFound {
        kind: R::KIND,
        id: id.to_string(),
    })
}

pub fn exists<R: Record>(view: &(impl ReadView + ?Sized), id: &str) -> StoreResult<bool> {
    Ok(view.get(&record_key(R::KIND, id))?.is_some())
}

/// Writes `new` (replacing `old`, which must be what is stored), keeping its
/// index entries, uniqueness claims and references in step. A uniqueness
/// claim another record holds is [`RecordError::Taken`].
pub fn save<R: Record>(txn: &mut dyn Txn, old: Option<&R>, new: &R) -> RecordResult<()> {
    let id = new.id();
    let id = id.as_str();
    let old_uniques: BTreeSet<_> = old
        .map(|o| o.uniques())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new_uniques: BTreeSet<_> = new.uniques().into_iter().collect();
    for (name, value) in new_uniques.difference(&old_uniques) {
        let key = unique_key(R::KIND, name, value);
        if let Some(owner) = txn.get(&key)? {
            let owner = String::from_utf8_lossy(&owner).into_owned();
            if owner != id {
                return Err(RecordError::Taken {
                    kind: R::KIND,
                    name,
                    value: value.clone(),
                    owner,
                });
            }
        }
        txn.put(key, id.as_bytes().to_vec());
    }
    for (name, value) in old_uniques.difference(&new_uniques) {
        txn.delete(unique_key(R::KIND, name, value));
    }

    let old_indexes: BTreeSet<_> = old
        .map(|o| o.indexes())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new_indexes: BTreeSet<_> = new.indexes().into_iter().collect();
    for entry in old_indexes.difference(&new_indexes) {
        txn.delete(index_key(R::KIND, entry));
    }
    for entry in new_indexes.difference(&old_indexes) {
        txn.put(index_key(R::KIND, entry), Vec::new());
    }

    let old_refs: BTreeSet<_> = old
        .map(|o| o.references())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new_refs: BTreeSet<_> = new.references().into_iter().collect();
    for target in old_refs.difference(&new_refs) {
        txn.delete(reference_key(target, R::KIND, id));
    }
    for target in new_refs.difference(&old_refs) {
        txn.put(reference_key(target, R::KIND, id), Vec::new());
    }

    txn.put(record_key(R::KIND, id), codec::encode(new));
    Ok(())
}

/// Deletes a record and everything [`save`] wrote for it;
/// [`RecordError::InUse`] while other records refer to it.
pub fn remove<R: Record>(txn: &mut dyn Txn, record: &R) -> RecordResult<()> {
    let id = record.id();
    ensure_unreferenced(txn, R::KIND, &id, None)?;
    for (name, value) in record.uniques() {
        txn.delete(unique_key(R::KIND, name, &value));
    }
    for entry in record.indexes() {
        txn.delete(index_key(R::KIND, &entry));
    }
    for target in record.references() {
        txn.delete(reference_key(&target, R::KIND, &id));
    }
    txn.delete(record_key(R::KIND, &id));
    Ok(())
}

/// The most referrers an "in use" refusal names.
pub const NAMED_REFERRERS: usize = 10;

/// [`RecordError::InUse`] naming (up to [`NAMED_REFERRERS`] of) the records
/// that refer to (`kind`, `id`), apart from those of kind `ignored`
/// (references that go away with the record, e.g. a user's group
/// memberships).
pub fn ensure_unreferenced(
    view: &(impl ReadView + ?Sized),
    kind: &str,
    id: &str,
    ignored: Option<&str>,
) -> RecordResult<()> {
    let referrers = referrers_except(view, kind, id, ignored, NAMED_REFERRERS)?;
    if referrers.is_empty() {
        return Ok(());
    }
    Err(RecordError::InUse {
        kind: kind.to_string(),
        id: id.to_string(),
        referrers,
    })
}

/// A record that refers to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    pub kind_name: String,
    pub id: String,
}

/// Up to `limit` records referring to (`kind`, `id`).
pub fn referrers(
    view: &(impl ReadView + ?Sized),
    kind: &str,
    id: &str,
    limit: usize,
) -> StoreResult<Vec<Referrer>> {
    referrers_except(view, kind, id, None, limit)
}

/// Like [`referrers`], leaving out referrers of kind `ignored`.
pub fn referrers_except(
    view: &(impl ReadView + ?Sized),
    kind: &str,
    id: &str,
    ignored: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Referrer>> {
    let prefix = keys::prefix(&[keys::REFERENCE, kind, id]);
    view.scan(&prefix, None)
        .map(|item| {
            let (key, _) = item?;
            let rest = &key[prefix.len()..];
            let sep = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| StoreError::corrupt("malformed reference key"))?;
            Ok(Referrer {
                kind_name: String::from_utf8_lossy(&rest[..sep]).into_owned(),
                id: String::from_utf8_lossy(&rest[sep + 1..]).into_owned(),
            })
        })
        .filter(|referrer| match referrer {
            Ok(r) => Some(r.kind_name.as_str()) != ignored,
            Err(_) => true,
        })
        .take(limit)
        .collect()
}

/// Writes the reference entries of every stored record of kind `R` again:
/// for records stored before `R` named (some of) what it refers to. Returns
/// how many records it visited.
pub fn restore_references<R: Record>(txn: &mut dyn Txn) -> StoreResult<usize> {
    let stored: Vec<R> = txn
        .scan(&keys::prefix(&[keys::RECORD, R::KIND]), None)
        .map(|item| item.and_then(|(_, bytes)| codec::decode(&bytes)))
        .collect::<StoreResult<_>>()?;
    for record in &stored {
        let id = record.id();
        for target in record.references() {
            txn.put(reference_key(&target, R::KIND, &id), Vec::new());
        }
    }
    Ok(stored.len())
}

/// Where a listing takes its ids from.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// Every record of the listed kind, by id.
    All,
    /// The targets of an index of records of `kind`, by target id.
    Index {
        kind: &'static str,
        name: &'static str,
        value: &'a str,
    },
}

/// Ids from `source` in ascending order, strictly after `after`.
pub fn ids<'v>(
    view: &'v (impl ReadView + ?Sized),
    listed_kind: &'static str,
    source: &Source<'_>,
    after: Option<&str>,
) -> impl Iterator<Item = StoreResult<String>> + 'v {
    let prefix = source_prefix(listed_kind, source);
    let start = after.map(|after| {
        let mut key = prefix.clone();
        key.extend_from_slice(after.as_bytes());
        key
    });
    view.scan(&prefix, start.as_deref())
        .map(|item| item.map(|(key, _)| keys::last_part(&key)))
}

/// Where the keys of `source` live.
pub fn source_prefix(listed_kind: &str, source: &Source<'_>) -> Vec<u8> {
    match source {
        Source::All => keys::prefix(&[keys::RECORD, listed_kind]),
        Source::Index { kind, name, value } => keys::prefix(&[keys::INDEX, kind, name, value]),
    }
}

/// The id of the record holding a uniqueness claim, if any.
pub fn unique_owner<R: Record>(
    view: &(impl ReadView + ?Sized),
    name: &str,
    value: &str,
) -> StoreResult<Option<String>> {
    Ok(view
        .get(&unique_key(R::KIND, name, value))?
        .map(|owner| String::from_utf8_lossy(&owner).into_owned()))
}

/// Targets of an index of records of `kind`, in ascending value order, for
/// every value up to and including `last_value`: (value, target) pairs.
pub fn index_up_to<'v>(
    view: &'v (impl ReadView + ?Sized),
    kind: &str,
    name: &str,
    last_value: &str,
) -> impl Iterator<Item = StoreResult<(String, String)>> + 'v {
    index_range(view, kind, name, None, last_value)
}

/// Like [`index_up_to`], starting strictly after the (value, target) pair
/// `after` when given.
pub fn index_range<'v>(
    view: &'v (impl ReadView + ?Sized),
    kind: &str,
    name: &str,
    after: Option<(&str, &str)>,
    last_value: &str,
) -> impl Iterator<Item = StoreResult<(String, String)>> + 'v {
    let prefix = keys::prefix(&[keys::INDEX, kind, name]);
    let skip = prefix.len();
    let start = after.map(|(value, target)| keys::key(&[keys::INDEX, kind, name, value, target]));
    let last_value = last_value.to_string();
    view.scan(&prefix, start.as_deref())
        .map(move |item| {
            let (key, _) = item?;
            let rest = String::from_utf8_lossy(&key[skip..]).into_owned();
            let (value, target) = rest
                .split_once('\0')
                .ok_or_else(|| StoreError::corrupt("malformed index key"))?;
            Ok((value.to_string(), target.to_string()))
        })
        .take_while(move |item| match item {
            Ok((value, _)) => *value <= last_value,
            Err(_) => true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_change_is_read_from_record_keys_only() {
        let key = keys::key(&[keys::RECORD, "user", "u/1"]);
        let change = RecordChange::parse(&key, None).expect("a record key");
        assert_eq!((change.kind, change.id), ("user", "u/1"));
        let index = keys::key(&[keys::INDEX, "user", "u/1"]);
        assert_eq!(RecordChange::parse(&index, None), None);
    }
}
