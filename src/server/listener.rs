//! Accepting connections within limits. Without them a client could hold
//! descriptors forever by connecting and saying nothing, and at the
//! descriptor limit `accept` fails at once, every time, so a plain accept
//! loop spins a core and floods the log.
//!
//! * At most `max_connections` are open at once; one more is closed as soon
//!   as it is accepted (the client sees the connection closed and can try
//!   another replica, instead of hanging in the listen backlog).
//! * A new connection must send its first bytes within the handshake
//!   timeout: the whole HTTP/2 preface in plaintext, the start of the
//!   handshake with TLS (whose own handshake is then bounded by the idle
//!   timeout). The bytes read are handed to the server first.
//! * A connection on which nothing is received or sent for the idle timeout
//!   is closed. WatchGrants checkpoints and client keepalive pings count.
//! * After an accept error the loop pauses, 5 ms doubling up to 1 s, and
//!   logs once per pause.

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::Settings;

/// The first bytes every HTTP/2 client sends (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            max_connections: settings.max_connections.max(1),
            handshake_timeout: Duration::from_millis(settings.handshake_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms.max(1)),
        }
    }
}

/// What a new connection must send before it is served.
#[derive(Debug, Clone, Copy)]
pub enum FirstBytes {
    /// Plaintext HTTP/2: the whole preface.
    Http2Preface,
    /// TLS: any byte (the handshake itself is the TLS acceptor's).
    Any,
}

/// Accepts connections on `listener` within `limits`, as the server's
/// incoming stream. Accepting stops (and the listener closes) once the
/// stream is dropped.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
    first_bytes: FirstBytes,
) -> impl Stream<Item = Result<Connection, Infallible>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, limits, first_bytes, sender));
    ReceiverStream::new(receiver).map(Ok)
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    first_bytes: FirstBytes,
    ready: mpsc::Sender<Connection>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = AcceptBackoff::default();
    let mut refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ready.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            // The peer gave up before it was accepted; nothing is wrong here.
            Err(error) if is_about_one_connection(&error) => continue,
            Err(error) => {
                let pause = backoff.next_pause();
                tracing::warn!(%error, ?pause, "accepting a connection failed; pausing accepts");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refusals.refused(peer, limits.max_connections);
            continue;
        };
        // Without TCP_NODELAY, Nagle's algorithm holds back the last segment
        // of multi-frame responses until the peer's delayed ack (~40 ms).
        let _ = stream.set_nodelay(true);
        let ready = ready.clone();
        tokio::spawn(async move {
            match handshake(stream, peer, limits, first_bytes, permit).await {
                Ok(connection) => {
                    let _ = ready.send(connection).await;
                }
                Err(why) => tracing::debug!(%peer, "closing a new connection: {why}"),
            }
        });
    }
}

/// Waits (within the handshake timeout) for the first bytes.
async fn handshake(
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    first_bytes: FirstBytes,
    permit: OwnedSemaphorePermit,
) -> Result<Connection, String> {
    let read = async {
        match first_bytes {
            FirstBytes::Http2Preface => {
                let mut preface = [0u8; HTTP2_PREFACE.len()];
                stream.read_exact(&mut preface).await?;
                if &preface != HTTP2_PREFACE {
                    return Err(io::Error::other("it did not start with the HTTP/2 preface"));
                }
                Ok(preface.to_vec())
            }
            FirstBytes::Any => {
                let mut first = vec![0u8; 512];
                let length = stream.read(&mut first).await?;
                if length == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                first.truncate(length);
                Ok(first)
            }
        }
    };
    let replay = match tokio::time::timeout(limits.handshake_timeout, read).await {
        Ok(Ok(replay)) => replay,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => {
            return Err(format!(
                "{peer} sent nothing within the handshake timeout ({:?})",
                limits.handshake_timeout
            ));
        }
    };
    Ok(Connection {
        stream,
        replay,
        replayed: 0,
        idle_timeout: limits.idle_timeout,
        last_active: Instant::now(),
        idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        _permit: permit,
    })
}

/// Errors of `accept` that concern only the connection being accepted.
fn is_about_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The pause after each accept error in a row.
#[derive(Debug)]
struct AcceptBackoff {
    next: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { next: FIRST_PAUSE }
    }
}

impl AcceptBackoff {
    fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        pause
    }

    fn reset(&mut self) {
        self.next = FIRST_PAUSE;
    }
}

/// Logs connections refused at the limit at most once a second.
#[derive(Default)]
struct RefusalLog {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr, limit: usize) {
        self.since_logged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                %peer,
                refused = self.since_logged,
                limit,
                "at the connection limit (max_connections); closing new connections"
            );
            self.since_logged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

/// An accepted connection: the bytes read during the handshake come first,
/// it closes when idle, and it holds its place under the connection limit
/// until dropped.
pub struct Connection {
    stream: TcpStream,
    replay: Vec<u8>,
    replayed: usize,
    idle_timeout: Duration,
    /// When something was last received or sent.
    last_active: Instant,
    /// Fires at `last_active + idle_timeout` or later; re-armed lazily.
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    fn active(&mut self) {
        self.last_active = Instant::now();
    }

    /// An error once the connection has been idle for the timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_active + self.idle_timeout;
            if deadline <= Instant::now() {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle for too long",
                ));
            }
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let length = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..length]);
            this.replayed += length;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_pause_longer_each_time_up_to_a_second() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<_> = (0..10).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), FIRST_PAUSE);
    }
}
