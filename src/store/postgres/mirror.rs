//! The replica's local copy of the key space: an ordered map kept exactly at
//! the database's state as of [`Mirror::revision`], so that jobs and
//! handlers read without a round trip. Only the committer thread changes it
//! (its own commits, and other replicas' commits from the change log), one
//! whole revision at a time.
//!
//! Scans walk the map in chunks, taking the lock once per chunk: a long scan
//! never holds up the committer, and (as with sled) a scan that runs while
//! a commit is applied may see some of it.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{KeyValue, ReadView, Revision, StoreResult};

/// Keys read per lock taken by a scan.
const CHUNK: usize = 256;

#[derive(Default)]
pub struct Mirror {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    revision: AtomicU64,
}

impl Mirror {
    pub fn new(entries: BTreeMap<Vec<u8>, Vec<u8>>, revision: Revision) -> Self {
        Self {
            map: RwLock::new(entries),
            revision: AtomicU64::new(revision),
        }
    }

    /// The revision the map holds.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// Applies one or more committed revisions' writes at once; `revision`
    /// is the last of them.
    pub fn apply<'a>(
        &self,
        writes: impl IntoIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
        revision: Revision,
    ) {
        let mut map = self.map.write().expect("mirror lock poisoned");
        for (key, value) in writes {
            match value {
                Some(value) => {
                    map.insert(key.clone(), value.clone());
                }
                None => {
                    map.remove(key);
                }
            }
        }
        self.revision.store(revision, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("mirror lock poisoned").len()
    }

    fn chunk(&self, from: &Bound<Vec<u8>>, to: &Bound<Vec<u8>>, backward: bool) -> Vec<KeyValue> {
        let map = self.map.read().expect("mirror lock poisoned");
        let range = map.range::<Vec<u8>, _>((from.clone(), to.clone()));
        let copy = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        if backward {
            range.rev().take(CHUNK).map(copy).collect()
        } else {
            range.take(CHUNK).map(copy).collect()
        }
    }
}

/// The first key after every key that starts with `prefix` (None: no such
/// key, the prefix is all 0xFF).
fn past_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A scan of the mirror, one chunk at a time.
struct Chunked<'a> {
    mirror: &'a Mirror,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    backward: bool,
    buffer: VecDeque<KeyValue>,
    done: bool,
}

impl Iterator for Chunked<'_> {
    type Item = StoreResult<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            let chunk = self.mirror.chunk(&self.from, &self.to, self.backward);
            self.done = chunk.len() < CHUNK;
            if let Some((last, _)) = chunk.last() {
                let cursor = Bound::Excluded(last.clone());
                if self.backward {
                    self.to = cursor;
                } else {
                    self.from = cursor;
                }
            }
            self.buffer = chunk.into();
        }
        self.buffer.pop_front().map(Ok)
    }
}

impl ReadView for Mirror {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .map
            .read()
            .expect("mirror lock poisoned")
            .get(key)
            .cloned())
    }

    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        let from = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let to = past_prefix(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        Box::new(Chunked {
            mirror: self,
            from,
            to,
            backward: false,
            buffer: VecDeque::new(),
            done: false,
        })
    }

    fn scan_back<'a>(
        &'a self,
        prefix: &[u8],
        start_before: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'a> {
        let end = past_prefix(prefix);
        let to = match (start_before, end) {
            (Some(before), Some(end)) if before < end.as_slice() => {
                Bound::Excluded(before.to_vec())
            }
            (Some(before), None) => Bound::Excluded(before.to_vec()),
            (_, Some(end)) => Bound::Excluded(end),
            (None, None) => Bound::Unbounded,
        };
        Box::new(Chunked {
            mirror: self,
            from: Bound::Included(prefix.to_vec()),
            to,
            backward: true,
            buffer: VecDeque::new(),
            done: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(items: Box<dyn Iterator<Item = StoreResult<KeyValue>> + '_>) -> Vec<Vec<u8>> {
        items.map(|kv| kv.unwrap().0).collect()
    }

    #[test]
    fn chunked_scans_cover_the_prefix_both_ways() {
        let mut entries = BTreeMap::new();
        for i in 0..1000u32 {
            entries.insert(format!("a/{i:04}").into_bytes(), vec![1]);
        }
        entries.insert(b"a".to_vec(), vec![]);
        entries.insert(b"b/1".to_vec(), vec![]);
        let mirror = Mirror::new(entries, 7);
        let forward = keys(mirror.scan(b"a/", None));
        assert_eq!(forward.len(), 1000);
        assert!(forward.windows(2).all(|w| w[0] < w[1]));
        let backward = keys(mirror.scan_back(b"a/", None));
        assert_eq!(backward.len(), 1000);
        assert!(backward.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(keys(mirror.scan(b"a/", Some(b"a/0997"))).len(), 2);
        assert_eq!(keys(mirror.scan_back(b"a/", Some(b"a/0002"))).len(), 2);
        assert_eq!(past_prefix(&[1, 255, 255]), Some(vec![2]));
        assert_eq!(past_prefix(&[255]), None);
    }
}
