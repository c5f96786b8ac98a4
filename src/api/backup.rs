//! BackupStore: streams a consistent snapshot of the whole store (see
//! [`crate::store::backup::snapshot`]) as the chunks of a backup file.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::Error;
use crate::pb::BackupChunk;
use crate::store::backup::format::Encoder;
use crate::store::backup::snapshot::{self, ChangeTap};
use crate::store::{Store, StoreError};

/// Bytes per streamed chunk: well under the default 4 MiB message limit.
const CHUNK: usize = 256 << 10;

/// Chunks that may wait for a slow reader (the snapshot's scan waits
/// beyond that; writes never do).
const BUFFER: usize = 16;

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

/// Starts the snapshot on a blocking thread; its chunks follow as the
/// stream. A client that goes away stops it.
pub fn stream(store: Arc<dyn Store>, tap: Arc<ChangeTap>) -> BackupStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(BUFFER);
    tokio::task::spawn_blocking(move || {
        let send = |data: Vec<u8>| {
            sender
                .blocking_send(Ok(BackupChunk { data }))
                .map_err(|_| StoreError::Unavailable("the client went away".into()))
        };
        let mut encoder = Encoder::new();
        let written = snapshot::write(store.as_ref(), &tap, &mut encoder, CHUNK, send);
        let last = written.and_then(|(revision, audit_head)| {
            tracing::info!(revision, "backup taken");
            send(encoder.finish(revision, &audit_head))
        });
        if let Err(error) = last {
            let _ = sender.blocking_send(Err(Status::from(Error::from(error))));
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}
