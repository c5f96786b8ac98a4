//! The request id of a call: the caller's `x-request-id` when it is a
//! usable one, otherwise a fresh id. The server puts it on the call before
//! any handler runs, echoes it in the response, and the audit events of
//! the call carry it.

/// The metadata key a caller names its call with.
pub const HEADER: &str = "x-request-id";

/// The longest request id taken from a caller.
const MAX_LENGTH: usize = 128;

/// Whether `value` may serve as a request id: 1 to 128 visible ASCII
/// characters (it goes into log lines, audit events and response headers).
pub fn is_usable(value: &str) -> bool {
    (1..=MAX_LENGTH).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The caller's id when usable, otherwise a new one.
pub fn of_call(sent: Option<&str>) -> String {
    match sent {
        Some(sent) if is_usable(sent) => sent.to_string(),
        _ => crate::shared::id::new_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_id_is_kept_and_anything_else_replaced() {
        assert_eq!(of_call(Some("req-42")), "req-42");
        for unusable in [None, Some(""), Some("has space"), Some("é")] {
            let id = of_call(unusable);
            assert!(is_usable(&id), "{id:?}");
            assert_ne!(Some(id.as_str()), unusable);
        }
        let long = "x".repeat(MAX_LENGTH + 1);
        assert_ne!(of_call(Some(&long)), long);
        assert_eq!(of_call(Some(&long[1..])), long[1..]);
    }
}
