//! SIP transports: the types every transport shares, and the stream transport for TCP and TLS (RFC 3261
//! §18, §26.2).
//!
//! Transports only move bytes. Every message read, whatever the transport, becomes one [`Inbound`] on
//! one of the core's bounded lanes ([`crate::lanes`]); replies go back through [`TcpTransport::send`], naming the
//! connection the request came on so the response follows it (§18.2.2).
//!
//! # TCP and TLS connections
//!
//! TLS is the TCP transport with a rustls session inside each connection ([`TcpTransport::bind_tls`]):
//! the same table, framing, limits and timeouts; only the bytes on the socket are encrypted. An accepted
//! connection takes a slot in the table at once and must finish its handshake within
//! [`TcpLimits::partial_message_timeout`], or it is closed (a peer that sends non-TLS bytes fails the
//! handshake and is closed at once). Each handshake takes the certificate in service at that moment
//! ([`TlsHandle`]), so a certificate reloaded on SIGHUP serves new connections while those already up
//! keep theirs. Connections we open ourselves verify the server against `[tls] ca_file`; without it
//! we open none ([`SendError::NoTlsClient`]).
//!
//! Each connection has a reader task that frames messages with [`StreamFramer`] and a writer task that
//! drains a bounded queue. Nothing grows without bound:
//! - the inbound lane is awaited when full, so a core that falls behind stops reading sockets and
//!   TCP flow control pushes back on the peers;
//! - each writer queue holds at most [`TcpLimits::write_queue_messages`]; `send` fails instead of
//!   waiting when it is full, so the caller can shed load (answer 503) rather than stall;
//! - the table holds at most [`TcpLimits::max_connections`] connections, accepted and opened together;
//! - a message larger than [`TcpLimits::max_message_bytes`] closes its connection, as does any other
//!   framing error: the stream cannot be resynchronised, and a 513 could not be framed on it either;
//! - a connection that carries nothing for [`TcpLimits::idle_timeout`], or that holds half a message
//!   for [`TcpLimits::partial_message_timeout`], is closed, so that slow or silent peers cannot pin
//!   connection slots.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use sip_core::framing::{FramingError, StreamFramer, KEEPALIVE_PONG};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::lanes::Lanes;
use crate::tls::TlsHandle;

pub use sip_core::message::{ConnId, Transport};

/// Connection ids are unique across every stream transport of the process (TCP and TLS, IPv4 and
/// IPv6), so an id names one connection wherever it is stored.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// One complete SIP message as received, before parsing.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// How it arrived.
    pub transport: Transport,
    /// Our address it arrived on (for a connection: that connection's local end).
    pub local: SocketAddr,
    /// The sender's address: the source of the datagram, or the far end of the connection.
    pub peer: SocketAddr,
    /// The connection it arrived on; pass it back to `send` so responses use the same connection.
    /// `None` for datagrams.
    pub conn: Option<ConnId>,
    /// The message: start line through body.
    pub bytes: Bytes,
    /// When it was read (the core's lanes compare arrival times: `crate::lanes`).
    pub received: std::time::Instant,
}

/// Bounds on the TCP transport. Every resource a peer can make us hold is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once, accepted and opened by us together. Further peers are closed at
    /// accept; further `send`s to new destinations fail.
    pub max_connections: usize,
    /// Largest message (headers plus body) accepted; a larger one closes its connection.
    pub max_message_bytes: usize,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// A peer that sends half a message and stalls is closed this long after the message began, even
    /// if it keeps trickling bytes: otherwise a peer could hold a slot by sending a byte a second.
    /// On a TLS listener, an accepted connection's handshake must also finish within this time.
    pub partial_message_timeout: Duration,
    /// Bound on opening a connection for `send` (TCP connect, then the TLS handshake, each).
    pub connect_timeout: Duration,
    /// Messages waiting to be written on one connection; `send` fails with [`SendError::QueueFull`]
    /// beyond this, which is the caller's signal to shed load.
    pub write_queue_messages: usize,
}

impl Default for TcpLimits {
    /// Values for a hotline serving a few thousand agent phones and trunks.
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_message_bytes: 64 * 1024,
            // Longer than the 120 s RFC 5626 keep-alive interval phones commonly use.
            idle_timeout: Duration::from_secs(300),
            partial_message_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            write_queue_messages: 256,
        }
    }
}

/// Why `send` did not take a message. The message is dropped; the transaction layer's timers decide
/// whether it is retried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The connection's writer is behind (the peer is not reading fast enough). Retrying at once will
    /// not help; shed load instead.
    #[error("write queue of TCP connection {conn} is full")]
    QueueFull {
        /// The congested connection.
        conn: ConnId,
    },
    /// No open connection to the destination, and opening one would exceed the connection limit.
    #[error("TCP connection limit of {limit} reached; not connecting to {dest}")]
    TooManyConnections {
        /// [`TcpLimits::max_connections`].
        limit: usize,
        /// Where the message was going.
        dest: SocketAddr,
    },
    /// No open TLS connection to the destination, and no `[tls] ca_file` to verify a server we
    /// would connect to.
    #[error("no TLS connection to {dest}, and no [tls] ca_file to open one with")]
    NoTlsClient {
        /// Where the message was going.
        dest: SocketAddr,
    },
}

/// How long a connection whose peer closed its sending side may keep flushing queued messages: the
/// peer may still read the responses to what it sent last.
const DRAIN_AFTER_PEER_CLOSE: Duration = Duration::from_secs(2);
/// Size of each socket read. Messages larger than this are assembled by the framer.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// Pause after a failed accept: failures such as EMFILE persist, and retrying at once would spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// At most one warning per interval for events a peer can trigger in bulk (refused connections, failed
/// connects, accept errors, framing errors), so a flood cannot flood the logs too.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// The stream transport (TCP, or TLS over TCP): a listener plus the table of open connections. Cheap to
/// clone; every clone drives the same connections.
///
/// The accept loop and connection tasks run until the runtime shuts down; there is no drain yet.
#[derive(Clone, Debug)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    local: SocketAddr,
    /// `Tcp`, or `Tls` when `tls` is set.
    transport: Transport,
    /// The certificate in service and the client config, for a TLS transport.
    tls: Option<TlsHandle>,
    limits: TcpLimits,
    inbound: Lanes,
    /// So that `send`, which is not async, can open connections from any thread.
    runtime: tokio::runtime::Handle,
    table: Mutex<ConnTable>,
    /// Origin for [`Activity`] timestamps.
    epoch: Instant,
    refused_warnings: WarnBudget,
    connect_warnings: WarnBudget,
    accept_warnings: WarnBudget,
    framing_warnings: WarnBudget,
    handshake_warnings: WarnBudget,
}

/// Open connections. Behind a std mutex that is never held across an `.await`: every operation is a
/// map lookup or a `try_send`.
#[derive(Debug, Default)]
struct ConnTable {
    by_id: HashMap<ConnId, Conn>,
    /// The connection to use for a destination when the caller names no connection (§18.2.2: reuse an
    /// open connection to the same address).
    by_peer: HashMap<SocketAddr, ConnId>,
}

#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    queue: mpsc::Sender<Bytes>,
}

impl ConnTable {
    fn insert(&mut self, id: ConnId, peer: SocketAddr, queue: mpsc::Sender<Bytes>) {
        self.by_id.insert(id, Conn { peer, queue });
        self.by_peer.insert(peer, id);
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(conn) = self.by_id.remove(&id) {
            // A newer connection to the same peer may have taken the address over.
            if self.by_peer.get(&conn.peer) == Some(&id) {
                self.by_peer.remove(&conn.peer);
            }
        }
    }

    /// Queues `bytes` on connection `id` if it is open. Gives the bytes back if it is not, so the
    /// caller can try another route.
    fn try_queue(&mut self, id: ConnId, bytes: Bytes) -> Result<Result<(), SendError>, Bytes> {
        let Some(conn) = self.by_id.get(&id) else {
            return Err(bytes);
        };
        match conn.queue.try_send(bytes) {
            Ok(()) => Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(Err(SendError::QueueFull { conn: id })),
            Err(mpsc::error::TrySendError::Closed(bytes)) => {
                // Its writer has failed; the reader will notice soon, but don't wait for it.
                self.remove(id);
                Err(bytes)
            }
        }
    }
}

impl TcpTransport {
    /// Listens on `addr` and starts accepting connections; every message read from any connection,
    /// accepted or opened by `send`, goes to `inbound`. Must be called within a tokio runtime.
    pub async fn bind(
        addr: SocketAddr,
        limits: TcpLimits,
        inbound: impl Into<Lanes>,
    ) -> io::Result<TcpTransport> {
        Self::bind_with(addr, limits, None, inbound.into()).await
    }

    /// Like [`bind`](Self::bind), for SIP over TLS: every connection, accepted or opened, runs a TLS
    /// session with the material `tls` has in service when its handshake starts, and its messages
    /// arrive as [`Transport::Tls`].
    pub async fn bind_tls(
        addr: SocketAddr,
        limits: TcpLimits,
        tls: TlsHandle,
        inbound: impl Into<Lanes>,
    ) -> io::Result<TcpTransport> {
        Self::bind_with(addr, limits, Some(tls), inbound.into()).await
    }

    async fn bind_with(
        addr: SocketAddr,
        limits: TcpLimits,
        tls: Option<TlsHandle>,
        inbound: Lanes,
    ) -> io::Result<TcpTransport> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let inner = Arc::new(Inner {
            local,
            transport: if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
            tls,
            limits,
            inbound,
            runtime: tokio::runtime::Handle::current(),
            table: Mutex::new(ConnTable::default()),
            epoch: Instant::now(),
            refused_warnings: WarnBudget::default(),
            connect_warnings: WarnBudget::default(),
            accept_warnings: WarnBudget::default(),
            framing_warnings: WarnBudget::default(),
            handshake_warnings: WarnBudget::default(),
        });
        inner
            .runtime
            .spawn(accept_loop(Arc::clone(&inner), listener));
        Ok(TcpTransport { inner })
    }

    /// The address the listener is bound to (with the real port if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// `Tcp`, or `Tls` for a transport made with [`bind_tls`](Self::bind_tls).
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// Sends on the existing connection `conn` if it is still open, else to `dest`: reuse any open
    /// connection to that peer address, else connect (bounded by `connect_timeout`) and keep the new
    /// connection (its reads also feed `inbound`).
    ///
    /// Never waits: the message is handed to the connection's bounded writer queue. Success means
    /// queued, not delivered; a connect that fails later drops what was queued for it (and logs it),
    /// which the transaction timers then handle like any loss.
    pub fn send(
        &self,
        conn: Option<ConnId>,
        dest: SocketAddr,
        bytes: Bytes,
    ) -> Result<(), SendError> {
        let inner = &self.inner;
        let mut table = inner.lock_table();
        let mut bytes = bytes;
        if let Some(id) = conn {
            match table.try_queue(id, bytes) {
                Ok(result) => return result,
                Err(back) => bytes = back,
            }
        }
        if let Some(&id) = table.by_peer.get(&dest) {
            match table.try_queue(id, bytes) {
                Ok(result) => return result,
                Err(back) => bytes = back,
            }
        }
        let limit = inner.limits.max_connections;
        if table.by_id.len() >= limit {
            return Err(SendError::TooManyConnections { limit, dest });
        }
        let connector = match &inner.tls {
            None => None,
            Some(tls) => match tls.connector() {
                Some(c) => Some(c),
                None => return Err(SendError::NoTlsClient { dest }),
            },
        };
        let id = inner.next_id();
        let (queue, rx) = mpsc::channel(inner.limits.write_queue_messages.max(1));
        // Cannot fail: the queue is new and has room for at least one message.
        let _ = queue.try_send(bytes);
        table.insert(id, dest, queue.clone());
        drop(table);
        debug!(conn = id, %dest, transport = inner.transport.as_token(), "opening connection");
        inner.runtime.spawn(connect_and_run(
            Arc::clone(inner),
            id,
            dest,
            connector,
            queue,
            rx,
        ));
        Ok(())
    }

    /// Connections open or being opened.
    pub fn connection_count(&self) -> usize {
        self.inner.lock_table().by_id.len()
    }

    /// The limits this transport enforces.
    pub fn limits(&self) -> &TcpLimits {
        &self.inner.limits
    }
}

impl Inner {
    fn lock_table(&self) -> MutexGuard<'_, ConnTable> {
        // The table is consistent after every statement, so a panic elsewhere cannot leave it torn.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_id(&self) -> ConnId {
        NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
    }

    fn forget(&self, id: ConnId) {
        self.lock_table().remove(id);
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => adopt(&inner, stream, peer),
            Err(error) => {
                if let Some(suppressed) = inner.accept_warnings.admit() {
                    warn!(%error, suppressed, "TCP accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Registers an accepted connection and starts its tasks, or closes it at once if the table is full.
fn adopt(inner: &Arc<Inner>, stream: TcpStream, peer: SocketAddr) {
    let mut table = inner.lock_table();
    let limit = inner.limits.max_connections;
    if table.by_id.len() >= limit {
        drop(table);
        drop(stream);
        if let Some(suppressed) = inner.refused_warnings.admit() {
            warn!(%peer, limit, suppressed, "TCP connection limit reached; closing new connection");
        }
        return;
    }
    let id = inner.next_id();
    let (queue, rx) = mpsc::channel(inner.limits.write_queue_messages.max(1));
    table.insert(id, peer, queue.clone());
    drop(table);
    debug!(conn = id, %peer, transport = inner.transport.as_token(), "accepted connection");
    inner.runtime.spawn(accept_and_run(
        Arc::clone(inner),
        id,
        stream,
        peer,
        queue,
        rx,
    ));
}

/// Runs an accepted connection: for TLS, the server handshake first, bounded by
/// `partial_message_timeout` (it holds a slot of the table meanwhile).
async fn accept_and_run(
    inner: Arc<Inner>,
    id: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    queue: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
) {
    // SIP messages are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(inner.local);
    let Some(tls) = &inner.tls else {
        let (rd, wr) = stream.into_split();
        return run_connection(inner, id, local, peer, rd, wr, queue, rx).await;
    };
    let handshake = tls.acceptor().accept(stream);
    match tokio::time::timeout(inner.limits.partial_message_timeout, handshake).await {
        Ok(Ok(session)) => {
            debug!(conn = id, %peer, version = ?session.get_ref().1.protocol_version(), "TLS handshake done");
            let (rd, wr) = tokio::io::split(session);
            run_connection(inner, id, local, peer, rd, wr, queue, rx).await
        }
        Ok(Err(error)) => handshake_failed(&inner, id, peer, "accept", &error),
        Err(_) => handshake_failed(
            &inner,
            id,
            peer,
            "accept",
            &io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
        ),
    }
}

fn handshake_failed(
    inner: &Inner,
    id: ConnId,
    peer: SocketAddr,
    side: &'static str,
    error: &io::Error,
) {
    inner.forget(id);
    metrics::counter!(crate::metrics::TLS_HANDSHAKE_FAILURES, "side" => side).increment(1);
    if let Some(suppressed) = inner.handshake_warnings.admit() {
        warn!(conn = id, %peer, side, %error, suppressed, "TLS handshake failed; connection closed");
    }
}

async fn connect_and_run(
    inner: Arc<Inner>,
    id: ConnId,
    dest: SocketAddr,
    connector: Option<tokio_rustls::TlsConnector>,
    queue: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
) {
    let error =
        match tokio::time::timeout(inner.limits.connect_timeout, TcpStream::connect(dest)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(inner.local);
                let Some(connector) = connector else {
                    let (rd, wr) = stream.into_split();
                    return run_connection(inner, id, local, dest, rd, wr, queue, rx).await;
                };
                // The core routes to IP addresses: the server's certificate must name this one.
                let name = rustls::pki_types::ServerName::IpAddress(dest.ip().into());
                let handshake = connector.connect(name, stream);
                match tokio::time::timeout(inner.limits.connect_timeout, handshake).await {
                    Ok(Ok(session)) => {
                        let (rd, wr) = tokio::io::split(session);
                        return run_connection(inner, id, local, dest, rd, wr, queue, rx).await;
                    }
                    Ok(Err(error)) => {
                        return handshake_failed(&inner, id, dest, "connect", &error);
                    }
                    Err(_) => {
                        let error = io::Error::new(io::ErrorKind::TimedOut, "handshake timed out");
                        return handshake_failed(&inner, id, dest, "connect", &error);
                    }
                }
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        };
    inner.forget(id);
    if let Some(suppressed) = inner.connect_warnings.admit() {
        warn!(conn = id, %dest, %error, dropped = rx.len(), suppressed, "TCP connect failed");
    }
}

/// Why a connection was closed.
#[derive(Debug)]
enum End {
    /// The peer closed its sending side between messages.
    PeerClosed,
    PeerClosedMidMessage,
    ReadFailed(io::Error),
    WriteFailed,
    Framing(FramingError),
    Idle,
    Stalled,
    /// The core stopped taking messages: the daemon is shutting down.
    InboundClosed,
}

/// Runs one connection (its two halves: plain TCP or a TLS session) until it closes, then removes it
/// from the table.
#[allow(clippy::too_many_arguments)]
async fn run_connection<R, W>(
    inner: Arc<Inner>,
    id: ConnId,
    local: SocketAddr,
    peer: SocketAddr,
    rd: R,
    wr: W,
    queue: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(inner.epoch));
    let mut writer = tokio::spawn(write_loop(wr, rx, Arc::clone(&activity)));
    let end = read_loop(&inner, id, local, peer, rd, &queue, &activity, &mut writer).await;
    // No new sends can reach the queue once it is out of the table and our sender is gone, so the
    // writer ends when it has written what is already queued.
    inner.forget(id);
    drop(queue);
    match &end {
        End::PeerClosed => {
            if tokio::time::timeout(DRAIN_AFTER_PEER_CLOSE, &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        }
        _ => writer.abort(),
    }
    let transport = inner.transport.as_token();
    match end {
        End::Framing(error) => {
            if let Some(suppressed) = inner.framing_warnings.admit() {
                warn!(conn = id, %peer, transport, %error, suppressed, "closing connection: framing error");
            }
        }
        End::ReadFailed(error) => {
            debug!(conn = id, %peer, transport, %error, "closing connection: read failed")
        }
        other => debug!(conn = id, %peer, transport, reason = ?other, "connection closed"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<R: AsyncRead + Unpin>(
    inner: &Inner,
    id: ConnId,
    local: SocketAddr,
    peer: SocketAddr,
    mut rd: R,
    queue: &mpsc::Sender<Bytes>,
    activity: &Activity,
    writer: &mut JoinHandle<()>,
) -> End {
    let limits = &inner.limits;
    let mut framer = StreamFramer::new(limits.max_message_bytes);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    // When the message now half-buffered began: the stall deadline runs from there.
    let mut partial_since: Option<Instant> = None;
    let mut armed = activity.last() + limits.idle_timeout;
    let timer = tokio::time::sleep_until(armed);
    tokio::pin!(timer);
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        let deadline = match partial_since {
            Some(since) => idle_at.min(since + limits.partial_message_timeout),
            None => idle_at,
        };
        // Re-arm only when the deadline moves, not once per read.
        if deadline != armed {
            timer.as_mut().reset(deadline);
            armed = deadline;
        }
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = match read {
                    Ok(0) if framer.has_partial_message() => return End::PeerClosedMidMessage,
                    Ok(0) => return End::PeerClosed,
                    Ok(n) => n,
                    Err(e) => return End::ReadFailed(e),
                };
                activity.touch();
                framer.push(&buf[..n]);
                let mut completed = false;
                loop {
                    match framer.next_message() {
                        Ok(Some(bytes)) => {
                            completed = true;
                            let msg = Inbound { transport: inner.transport, local, peer, conn: Some(id), bytes, received: std::time::Instant::now() };
                            // Awaiting a full channel stops this socket's reads: TCP backpressure.
                            if inner.inbound.send(msg).await.is_err() {
                                return End::InboundClosed;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return End::Framing(e),
                    }
                }
                if framer.take_ping() {
                    // A full queue means the peer is not reading; skipping the pong costs nothing.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = queue.try_send(Bytes::from_static(KEEPALIVE_PONG)) {
                        return End::WriteFailed;
                    }
                }
                partial_since = match (framer.has_partial_message(), partial_since) {
                    (false, _) => None,
                    (true, Some(since)) if !completed => Some(since),
                    (true, _) => Some(Instant::now()),
                };
            }
            () = &mut timer => {
                let now = Instant::now();
                if partial_since.is_some_and(|since| now >= since + limits.partial_message_timeout) {
                    return End::Stalled;
                }
                if now >= activity.last() + limits.idle_timeout {
                    return End::Idle;
                }
                // Writes happened since the timer was armed; the loop re-arms it.
            }
            _ = &mut *writer => return End::WriteFailed,
        }
    }
}

/// Writes queued messages until the queue closes (then sends FIN) or a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    activity: Arc<Activity>,
) {
    while let Some(bytes) = rx.recv().await {
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
        activity.touch();
    }
    let _ = wr.shutdown().await;
}

/// When a connection last moved bytes in either direction, shared by its reader and writer so that a
/// connection busy only writing is not taken for idle.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let a = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
        };
        a.touch();
        a
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Admits one warning per [`WARN_INTERVAL`] and counts the ones it suppressed.
#[derive(Debug, Default)]
struct WarnBudget {
    state: Mutex<WarnState>,
}

#[derive(Debug, Default)]
struct WarnState {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnBudget {
    /// `Some(suppressed since the last admitted warning)` if a warning may be logged now.
    fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last {
            Some(last) if now.duration_since(last) < WARN_INTERVAL => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_remove_keeps_a_newer_connection_to_the_same_peer() {
        let peer: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        let (q1, _r1) = mpsc::channel(1);
        let (q2, _r2) = mpsc::channel(1);
        let mut table = ConnTable::default();
        table.insert(1, peer, q1);
        table.insert(2, peer, q2);
        table.remove(1);
        assert_eq!(table.by_peer.get(&peer), Some(&2));
        table.remove(2);
        assert!(table.by_peer.is_empty() && table.by_id.is_empty());
    }

    #[test]
    fn try_queue_reports_full_and_hands_back_bytes_of_a_dead_connection() {
        let peer: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        let (q, rx) = mpsc::channel(1);
        let mut table = ConnTable::default();
        table.insert(7, peer, q);
        assert_eq!(table.try_queue(7, Bytes::from_static(b"a")), Ok(Ok(())));
        assert_eq!(
            table.try_queue(7, Bytes::from_static(b"b")),
            Ok(Err(SendError::QueueFull { conn: 7 }))
        );
        drop(rx);
        assert_eq!(
            table.try_queue(7, Bytes::from_static(b"c")),
            Err(Bytes::from_static(b"c"))
        );
        assert!(
            table.by_id.is_empty(),
            "a dead connection is dropped from the table"
        );
        assert_eq!(
            table.try_queue(7, Bytes::from_static(b"d")),
            Err(Bytes::from_static(b"d"))
        );
    }

    #[test]
    fn warn_budget_admits_one_per_interval() {
        let budget = WarnBudget::default();
        let t0 = Instant::now();
        assert_eq!(budget.admit_at(t0), Some(0));
        assert_eq!(budget.admit_at(t0), None);
        assert_eq!(budget.admit_at(t0 + WARN_INTERVAL / 2), None);
        assert_eq!(budget.admit_at(t0 + WARN_INTERVAL), Some(2));
        assert_eq!(budget.admit_at(t0 + WARN_INTERVAL), None);
    }
}
