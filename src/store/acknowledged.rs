//! The acknowledged mark: a small file beside the store that says how far
//! the store had got when it last told clients their writes were durable.
//!
//! sled takes a record whose checksum does not match for a torn tail and
//! silently drops it and everything after it; so does an older copy of the
//! data directory put back in place. Both leave a store that opens normally
//! but lacks writes clients were told were durable. The mark lets start-up
//! notice: the store's revision must not be behind it, and at the same
//! revision the audit chain's head must be the same.
//!
//! The file holds two fixed-size slots, written in turn with one `pwrite`
//! and one `fdatasync` per group commit (the file's size never changes, so
//! no metadata needs syncing). Each slot carries a generation, counting
//! writes (the newest slot is the higher generation, not the higher
//! revision: accepting a rollback writes a lower one), and a checksum; a
//! write torn by a crash leaves the other slot, which names the previous
//! batch: the torn one was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Revision;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "acknowledged";

const SLOT_SIZE: usize = 512;
const MAGIC: &[u8; 8] = b"ENTACK01";
/// Magic, generation, revision, head length.
const HEADER: usize = 8 + 8 + 8 + 2;
const CHECKSUM: usize = 32;
/// The longest audit head a slot holds (an encoded head is under 100 bytes).
const MAX_HEAD: usize = SLOT_SIZE - HEADER - CHECKSUM;

/// What was acknowledged: the newest durable revision and the audit
/// chain's head at that revision (its stored encoding; empty before the
/// first event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub revision: Revision,
    pub audit_head: Vec<u8>,
}

pub struct AcknowledgedFile {
    file: File,
    /// The slot the next mark goes to: never the one holding the newest.
    next_slot: u64,
    /// The generation of the newest slot.
    generation: u64,
}

impl AcknowledgedFile {
    /// Opens the mark in `dir`, creating an empty one (durably) if there is
    /// none; returns it with the newest mark it holds.
    pub fn open(dir: &Path) -> io::Result<(Self, Option<Mark>)> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            create(dir)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut slots = [None, None];
        for (index, slot) in slots.iter_mut().enumerate() {
            let mut bytes = [0u8; SLOT_SIZE];
            let read = file.read_at(&mut bytes, (index * SLOT_SIZE) as u64)?;
            *slot = (read == SLOT_SIZE).then(|| decode(&bytes)).flatten();
        }
        let newest = match (&slots[0], &slots[1]) {
            (Some((a, _)), Some((b, _))) if b > a => 1,
            (Some(_), _) => 0,
            (None, _) => 1,
        };
        let (generation, mark) = match slots[newest].take() {
            Some((generation, mark)) => (generation, Some(mark)),
            None => (0, None),
        };
        Ok((
            Self {
                file,
                next_slot: 1 - newest as u64,
                generation,
            },
            mark,
        ))
    }

    /// Makes `mark` the newest, durably.
    pub fn record(&mut self, mark: &Mark) -> io::Result<()> {
        let slot = encode(self.generation + 1, mark)?;
        self.file
            .write_all_at(&slot, self.next_slot * SLOT_SIZE as u64)?;
        self.file.sync_data()?;
        self.next_slot = 1 - self.next_slot;
        self.generation += 1;
        Ok(())
    }
}

/// Two empty slots, in place under the final name only once durable.
fn create(dir: &Path) -> io::Result<()> {
    let temporary = dir.join(format!("{FILE_NAME}.new"));
    let file = File::create(&temporary)?;
    file.write_all_at(&[0u8; 2 * SLOT_SIZE], 0)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()
}

fn encode(generation: u64, mark: &Mark) -> io::Result<[u8; SLOT_SIZE]> {
    if mark.audit_head.len() > MAX_HEAD {
        return Err(io::Error::other(format!(
            "the audit head is {} bytes; the acknowledged mark holds at most {MAX_HEAD}",
            mark.audit_head.len()
        )));
    }
    let mut slot = [0u8; SLOT_SIZE];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&generation.to_be_bytes());
    slot[16..24].copy_from_slice(&mark.revision.to_be_bytes());
    slot[24..26].copy_from_slice(&(mark.audit_head.len() as u16).to_be_bytes());
    slot[HEADER..HEADER + mark.audit_head.len()].copy_from_slice(&mark.audit_head);
    let checksum = Sha256::digest(&slot[..SLOT_SIZE - CHECKSUM]);
    slot[SLOT_SIZE - CHECKSUM..].copy_from_slice(&checksum);
    Ok(slot)
}

/// The generation and mark in a slot, or None for an empty or torn one.
fn decode(slot: &[u8; SLOT_SIZE]) -> Option<(u64, Mark)> {
    let (body, checksum) = slot.split_at(SLOT_SIZE - CHECKSUM);
    if &body[..8] != MAGIC || Sha256::digest(body).as_slice() != checksum {
        return None;
    }
    let generation = u64::from_be_bytes(body[8..16].try_into().ok()?);
    let revision = u64::from_be_bytes(body[16..24].try_into().ok()?);
    let length = u16::from_be_bytes(body[24..26].try_into().ok()?) as usize;
    let audit_head = body.get(HEADER..HEADER + length)?.to_vec();
    Some((
        generation,
        Mark {
            revision,
            audit_head,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(revision: Revision) -> Mark {
        Mark {
            revision,
            audit_head: format!("head {revision}").into_bytes(),
        }
    }

    #[test]
    fn the_newest_mark_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, none) = AcknowledgedFile::open(dir.path()).unwrap();
        assert_eq!(none, None);
        for revision in 1..=5 {
            file.record(&mark(revision)).unwrap();
        }
        drop(file);
        let (_, newest) = AcknowledgedFile::open(dir.path()).unwrap();
        assert_eq!(newest, Some(mark(5)));
    }

    #[test]
    fn the_newest_mark_is_the_last_written_even_at_a_lower_revision() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = AcknowledgedFile::open(dir.path()).unwrap();
        file.record(&mark(8)).unwrap();
        file.record(&mark(3)).unwrap();
        drop(file);
        let (_, newest) = AcknowledgedFile::open(dir.path()).unwrap();
        assert_eq!(newest, Some(mark(3)));
    }

    #[test]
    fn a_torn_slot_leaves_the_previous_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = AcknowledgedFile::open(dir.path()).unwrap();
        file.record(&mark(1)).unwrap();
        file.record(&mark(2)).unwrap();
        drop(file);
        // Mark 2 went to the second slot; tear it.
        let raw = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        raw.write_all_at(b"torn", SLOT_SIZE as u64 + 20).unwrap();
        let (mut file, newest) = AcknowledgedFile::open(dir.path()).unwrap();
        assert_eq!(newest, Some(mark(1)));
        // The next mark overwrites the torn slot, not the good one.
        file.record(&mark(3)).unwrap();
        drop(file);
        let (_, newest) = AcknowledgedFile::open(dir.path()).unwrap();
        assert_eq!(newest, Some(mark(3)));
    }
}
