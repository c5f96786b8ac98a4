//! Reads made outside the committer and checked inside it. Work that is a
//! function of what it read (an eligibility decision) can be done before a
//! write job, against committed state; inside the job it still holds exactly
//! when the same reads give the same answers, which is far cheaper to check
//! than doing the work again.

use std::cell::RefCell;

use crate::store::{KeyValue, ReadView, StoreResult};

/// One read and what it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Get {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Scan {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        items: Vec<KeyValue>,
    },
}

/// A view that remembers every read made through it.
pub struct Recording<'a> {
    view: &'a dyn ReadView,
    reads: RefCell<Vec<Read>>,
}

impl<'a> Recording<'a> {
    pub fn new(view: &'a dyn ReadView) -> Self {
        Self {
            view,
            reads: RefCell::new(Vec::new()),
        }
    }

    pub fn finish(self) -> ReadSet {
        ReadSet(self.reads.into_inner())
    }
}

impl ReadView for Recording<'_> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let value = self.view.get(key)?;
        self.reads.borrow_mut().push(Read::Get {
            key: key.to_vec(),
            value: value.clone(),
        });
        Ok(value)
    }

    /// Reads the whole range at once: what the caller goes on to consume is
    /// then part of the record however far it reads.
    fn scan<'b>(
        &'b self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StoreResult<KeyValue>> + 'b> {
        let items: StoreResult<Vec<KeyValue>> = self.view.scan(prefix, start_after).collect();
        match items {
            Ok(items) => {
                self.reads.borrow_mut().push(Read::Scan {
                    prefix: prefix.to_vec(),
                    start_after: start_after.map(<[u8]>::to_vec),
                    items: items.clone(),
                });
                Box::new(items.into_iter().map(Ok))
            }
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }
}

/// The reads of a finished [`Recording`].
#[derive(Debug)]
pub struct ReadSet(Vec<Read>);

impl ReadSet {
    /// Whether every read gives, in `view`, what it gave when recorded.
    pub fn unchanged(&self, view: &(impl ReadView + ?Sized)) -> StoreResult<bool> {
        for read in &self.0 {
            let same = match read {
                Read::Get { key, value } => view.get(key)? == *value,
                Read::Scan {
                    prefix,
                    start_after,
                    items,
                } => {
                    let mut now = view.scan(prefix, start_after.as_deref());
                    let mut same = true;
                    for item in items {
                        if now.next().transpose()?.as_ref() != Some(item) {
                            same = false;
                            break;
                        }
                    }
                    same && now.next().transpose()?.is_none()
                }
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::{StoreError, write};

    async fn put(store: &SledStore, key: &'static [u8], value: Option<&'static [u8]>) {
        write::<_, StoreError, _>(store, move |txn| {
            match value {
                Some(value) => txn.put(key.to_vec(), value.to_vec()),
                None => txn.delete(key.to_vec()),
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Records a get of `k` (present), a get of `missing` and a scan of
    /// `s/`, then applies `change`: the reads hold iff `expect`.
    async fn after(change: (&'static [u8], Option<&'static [u8]>), expect: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        put(&store, b"k", Some(b"1")).await;
        put(&store, b"s/1", Some(b"")).await;
        put(&store, b"s/2", Some(b"")).await;
        let recording = Recording::new(&store);
        assert_eq!(recording.get(b"k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(recording.get(b"missing").unwrap(), None);
        assert_eq!(recording.scan(b"s/", None).count(), 2);
        let reads = recording.finish();
        assert!(reads.unchanged(&store).unwrap());
        put(&store, change.0, change.1).await;
        assert_eq!(reads.unchanged(&store).unwrap(), expect, "{change:?}");
    }

    #[tokio::test]
    async fn reads_hold_until_something_they_saw_changes() {
        after((b"unrelated", Some(b"x")), true).await;
        after((b"k", Some(b"1")), true).await;
        after((b"k", Some(b"2")), false).await;
        after((b"k", None), false).await;
        after((b"missing", Some(b"now here")), false).await;
        after((b"s/0", Some(b"")), false).await;
        after((b"s/3", Some(b"")), false).await;
        after((b"s/1", None), false).await;
        after((b"s/1", Some(b"changed")), false).await;
    }
}
