//! Backups of a whole store: an online snapshot at one revision written in a
//! checked file format, and the offline restore of such a file into a new
//! data directory.

pub mod format;
pub mod restore;
pub mod snapshot;
