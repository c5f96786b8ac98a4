//! The deadline of the call being served, for work deep below the API that
//! must not start once the caller has given up (a queued write). The server
//! sets it around each call ([`within`]); code outside a call has none.

use std::future::Future;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `call` with `deadline` as the current call's deadline.
pub fn within<F: Future>(deadline: Instant, call: F) -> TaskLocalFuture<Instant, F> {
    DEADLINE.scope(deadline, call)
}

/// The current call's deadline, if the code runs inside a call.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Whether `deadline` has passed.
pub fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}
