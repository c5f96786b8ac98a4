//! The layout of the key space. Keys are parts joined by a NUL byte, which no
//! validated id or index value contains, so prefixes never run into each
//! other:
//!
//! | space | key                                         | value                 |
//! |-------|---------------------------------------------|-----------------------|
//! | `r`   | kind, id                                    | the record            |
//! | `i`   | kind, index name, value, target id          | empty                 |
//! | `u`   | kind, constraint, value                     | owning id             |
//! | `f`   | target kind, target id, source kind, src id | empty                 |
//! | `q`   | caller, method, request id                  | body fingerprint, first result |
//! | `m`   | name                                        | store metadata        |

pub const SEP: u8 = 0;

pub const RECORD: &str = "r";
pub const INDEX: &str = "i";
pub const UNIQUE: &str = "u";
pub const REFERENCE: &str = "f";
pub const REQUEST_ID: &str = "q";
pub const META: &str = "m";

/// The metadata naming the head of the audit chain. The store records its
/// value (opaque to it) in the acknowledged mark, so that start-up can tell
/// a store that lost acknowledged commits from one that holds them.
pub const AUDIT_HEAD: &str = "audit_head";

pub fn audit_head_key() -> Vec<u8> {
    key(&[META, AUDIT_HEAD])
}

/// The metadata holding the store's revision (the embedded store keeps it
/// among its keys; the PostgreSQL store in a row of its own).
pub fn revision_key() -> Vec<u8> {
    key(&[META, "revision"])
}

/// A complete key.
pub fn key(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A prefix covering every key that continues `parts` with more parts.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut out = key(parts);
    out.push(SEP);
    out
}

/// The last part of a key, as text.
pub fn last_part(key: &[u8]) -> String {
    let start = key.iter().rposition(|b| *b == SEP).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&key[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_do_not_overlap_longer_ids() {
        let a = prefix(&[RECORD, "user", "ab"]);
        let b = key(&[RECORD, "user", "abc"]);
        assert!(!b.starts_with(&a));
        assert_eq!(last_part(&key(&[INDEX, "user", "org", "o1", "u7"])), "u7");
    }
}
