//! Draining: the moment a stopping server tells its long-lived streams to
//! end. A stream that only ends when its client hangs up (WatchGrants, a
//! health Watch) would otherwise hold the shutdown for the whole drain
//! deadline and keep talking after health said NOT_SERVING. It ends with
//! UNAVAILABLE instead, which clients take as "reconnect, here later or
//! elsewhere".

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Starts the drain; see [`channel`].
pub struct DrainSignal(watch::Sender<bool>);

/// Tells whether draining has started; cheap to clone into every stream.
#[derive(Clone)]
pub struct Drain(watch::Receiver<bool>);

pub fn channel() -> (DrainSignal, Drain) {
    let (sender, receiver) = watch::channel(false);
    (DrainSignal(sender), Drain(receiver))
}

impl DrainSignal {
    pub fn start(&self) {
        self.0.send_replace(true);
    }
}

impl Drain {
    /// Whether draining has started.
    pub fn has_started(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has started (or the server is gone).
    pub async fn started(&self) {
        let mut receiver = self.0.clone();
        let _ = receiver.wait_for(|draining| *draining).await;
    }

    /// `stream` until draining starts, then UNAVAILABLE. Items the
    /// stream already has ready are delivered first (a health Watch sends
    /// its NOT_SERVING before it ends).
    pub fn ending<T, S>(&self, mut stream: S) -> ReceiverStream<Result<T, Status>>
    where
        T: Send + 'static,
        S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    {
        let (sender, receiver) = mpsc::channel(16);
        let drain = self.clone();
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    biased;
                    item = stream.next() => match item {
                        Some(item) => item,
                        None => return,
                    },
                    () = drain.started() => {
                        let _ = sender
                            .send(Err(Status::unavailable("the server is shutting down")))
                            .await;
                        return;
                    }
                };
                if sender.send(item).await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(receiver)
    }
}
