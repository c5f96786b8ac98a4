//! Who makes a change, when, and in which call.

use std::time::SystemTime;

use super::clock::Moment;

/// The actor recorded for changes the service makes on its own (timed
/// work, start-up). No user or other caller may take this id, so the
/// audit trail never confuses anyone with the service.
pub const SYSTEM_ACTOR: &str = "system";

/// Who makes a change, when, and in which call: the caller's request id,
/// or empty, in which case the change's audit events share a generated one.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub now: SystemTime,
    pub request_id: String,
}

impl Actor {
    /// `id` acting at `now` outside any call (the service's own timed work,
    /// start-up, bulk loads): each change gets its own request id.
    pub fn new(id: &str, now: SystemTime) -> Self {
        Self {
            id: id.to_string(),
            now,
            request_id: String::new(),
        }
    }

    /// When the actor acts.
    pub fn moment(&self) -> Moment {
        Moment::of(self.now)
    }
}
