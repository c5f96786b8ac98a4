//! Ids the service assigns.

/// A new server-assigned id: time-ordered, so listings by id follow creation.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
