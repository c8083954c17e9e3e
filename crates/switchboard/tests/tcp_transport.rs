//! The TCP transport against real sockets on loopback.
//!
//! Timeout tests use timeouts of a few hundred milliseconds and bound every wait, so a hung transport
//! fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use switchboard::transport::{Inbound, SendError, TcpLimits, TcpTransport, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

/// Upper bound on any wait for something that should happen promptly.
const PROMPT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

fn limits() -> TcpLimits {
    TcpLimits {
        max_connections: 16,
        max_message_bytes: 4096,
        idle_timeout: Duration::from_secs(30),
        partial_message_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        write_queue_messages: 16,
    }
}

async fn start(limits: TcpLimits) -> (TcpTransport, mpsc::Receiver<Inbound>) {
    let (tx, rx) = mpsc::channel(64);
    let transport = TcpTransport::bind(loopback(), limits, tx)
        .await
        .expect("bind");
    (transport, rx)
}

/// A SIP request with a correct Content-Length.
fn request(call_id: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:12345@hotline.example SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:12345@hotline.example>\r\n\
         From: <sip:tester@example.com>;tag=1\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\
         \r\n\
         {body}",
        body.len()
    )
    .into_bytes()
}

async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    timeout(PROMPT, rx.recv())
        .await
        .expect("a message within the bound")
        .expect("inbound channel open")
}

/// Reads exactly `n` bytes from `stream`, bounded in time.
async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(PROMPT, stream.read_exact(&mut buf))
        .await
        .expect("bytes within the bound")
        .expect("read");
    buf
}

/// Waits until the server closes `stream`, returning how long that took. Fails if it stays open.
async fn closed_by_server(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match timeout(PROMPT, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {PROMPT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Polls `cond` until it holds; the transport updates its table asynchronously after a close.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn pipelined_messages_are_framed_in_order() {
    let (transport, mut rx) = start(limits()).await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    let client_addr = client.local_addr().expect("client addr");
    let (a, b, c) = (
        request("a", ""),
        request("b", "hello"),
        request("c", "x\r\n\r\ny"),
    );
    let mut all = b"\r\n".to_vec();
    all.extend_from_slice(&a);
    all.extend_from_slice(&b);
    all.extend_from_slice(&c);
    client.write_all(&all).await.expect("write");

    let first = recv(&mut rx).await;
    assert_eq!(first.bytes, a);
    assert_eq!(first.transport, Transport::Tcp);
    assert_eq!(first.peer, client_addr);
    assert_eq!(first.local, transport.local_addr());
    let conn = first.conn.expect("TCP messages carry their connection");
    for want in [b, c] {
        let got = recv(&mut rx).await;
        assert_eq!(got.bytes, want);
        assert_eq!(got.conn, Some(conn));
    }
}

#[tokio::test]
async fn message_split_across_writes_is_reassembled() {
    let (transport, mut rx) = start(limits()).await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    let msg = request("split", "body that crosses the cut");
    let (head, tail) = msg.split_at(msg.len() / 2);
    client.write_all(head).await.expect("write head");
    // Nothing may come out of half a message.
    assert!(timeout(Duration::from_millis(100), rx.recv())
        .await
        .is_err());
    for byte in tail {
        client.write_all(&[*byte]).await.expect("write byte");
    }
    assert_eq!(recv(&mut rx).await.bytes, msg);
}

#[tokio::test]
async fn send_reuses_the_inbound_connection() {
    let (transport, mut rx) = start(limits()).await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    client
        .write_all(&request("reuse", ""))
        .await
        .expect("write");
    let inbound = recv(&mut rx).await;

    let response = Bytes::from_static(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    transport
        .send(inbound.conn, inbound.peer, response.clone())
        .expect("send on the connection");
    assert_eq!(read_exact(&mut client, response.len()).await, response);

    // Naming only the address finds the same connection too.
    transport
        .send(None, inbound.peer, response.clone())
        .expect("send to the peer address");
    assert_eq!(read_exact(&mut client, response.len()).await, response);
    assert_eq!(transport.connection_count(), 1);
}

#[tokio::test]
async fn send_to_a_new_peer_connects_and_reads_its_replies() {
    let (transport, mut rx) = start(limits()).await;
    let peer = TcpListener::bind(loopback()).await.expect("peer bind");
    let dest = peer.local_addr().expect("peer addr");

    let invite = request("out", "");
    transport
        .send(None, dest, Bytes::from(invite.clone()))
        .expect("send");
    let (mut accepted, _) = timeout(PROMPT, peer.accept())
        .await
        .expect("connect in time")
        .expect("accept");
    assert_eq!(read_exact(&mut accepted, invite.len()).await, invite);
    assert_eq!(transport.connection_count(), 1);

    // A second send to the same address rides the same connection.
    let again = request("out-2", "");
    transport
        .send(None, dest, Bytes::from(again.clone()))
        .expect("send again");
    assert_eq!(read_exact(&mut accepted, again.len()).await, again);
    assert!(
        timeout(Duration::from_millis(50), peer.accept())
            .await
            .is_err(),
        "no second connection"
    );

    // The peer's reply on that connection reaches the core.
    let reply = request("reply", "ok");
    accepted.write_all(&reply).await.expect("reply");
    let got = recv(&mut rx).await;
    assert_eq!(got.bytes, reply);
    assert_eq!(got.peer, dest);
    assert!(got.conn.is_some());
    assert_eq!(transport.connection_count(), 1);
}

#[tokio::test]
async fn send_falls_back_to_the_address_when_the_connection_is_gone() {
    let (transport, mut rx) = start(limits()).await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    client.write_all(&request("gone", "")).await.expect("write");
    let inbound = recv(&mut rx).await;
    drop(client);
    eventually("the closed connection is forgotten", || {
        transport.connection_count() == 0
    })
    .await;

    let peer = TcpListener::bind(loopback()).await.expect("peer bind");
    let dest = peer.local_addr().expect("peer addr");
    let msg = request("fallback", "");
    transport
        .send(inbound.conn, dest, Bytes::from(msg.clone()))
        .expect("send");
    let (mut accepted, _) = timeout(PROMPT, peer.accept())
        .await
        .expect("connect in time")
        .expect("accept");
    assert_eq!(read_exact(&mut accepted, msg.len()).await, msg);
}

#[tokio::test]
async fn failed_connect_frees_its_slot() {
    let (transport, _rx) = start(limits()).await;
    let closed = {
        let l = TcpListener::bind(loopback()).await.expect("bind");
        l.local_addr().expect("addr")
    };
    transport
        .send(None, closed, Bytes::from(request("nobody", "")))
        .expect("queued while connecting");
    eventually("the failed connection is forgotten", || {
        transport.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn connection_limit_is_enforced() {
    let (transport, mut rx) = start(TcpLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = TcpStream::connect(transport.local_addr())
            .await
            .expect("connect");
        // Once a message is through, the connection is surely in the table.
        c.write_all(&request(&format!("held-{i}"), ""))
            .await
            .expect("write");
        recv(&mut rx).await;
        held.push(c);
    }
    assert_eq!(transport.connection_count(), 2);

    let mut third = TcpStream::connect(transport.local_addr())
        .await
        .expect("kernel accepts");
    closed_by_server(&mut third).await;
    assert_eq!(transport.connection_count(), 2);

    // Opening a connection for a send counts against the same limit.
    let peer = TcpListener::bind(loopback()).await.expect("peer bind");
    let dest = peer.local_addr().expect("peer addr");
    assert_eq!(
        transport.send(None, dest, Bytes::from_static(b"x")),
        Err(SendError::TooManyConnections { limit: 2, dest })
    );

    // Closing one frees a slot.
    drop(held.pop());
    eventually("a slot is free", || transport.connection_count() == 1).await;
    let mut fourth = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    fourth
        .write_all(&request("fourth", ""))
        .await
        .expect("write");
    assert_eq!(recv(&mut rx).await.bytes, request("fourth", ""));
}

#[tokio::test]
async fn stalled_half_message_is_closed_after_the_timeout() {
    let stall = Duration::from_millis(200);
    let (transport, mut rx) = start(TcpLimits {
        partial_message_timeout: stall,
        ..limits()
    })
    .await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    let msg = request("stall", "");
    client.write_all(&msg[..40]).await.expect("write half");
    // Trickling more bytes does not extend the deadline.
    tokio::time::sleep(stall / 2).await;
    client.write_all(&msg[40..41]).await.expect("write a byte");
    let waited = closed_by_server(&mut client).await;
    assert!(
        waited < stall,
        "deadline runs from the first byte, waited {waited:?} after the trickle"
    );
    assert!(rx.try_recv().is_err());
    eventually("the stalled connection is forgotten", || {
        transport.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn stall_timer_does_not_touch_a_connection_between_messages() {
    let stall = Duration::from_millis(100);
    let (transport, mut rx) = start(TcpLimits {
        partial_message_timeout: stall,
        ..limits()
    })
    .await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    client
        .write_all(&request("whole", ""))
        .await
        .expect("write");
    recv(&mut rx).await;
    tokio::time::sleep(stall * 3).await;
    client
        .write_all(&request("later", ""))
        .await
        .expect("write later");
    assert_eq!(recv(&mut rx).await.bytes, request("later", ""));
    assert_eq!(transport.connection_count(), 1);
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let idle = Duration::from_millis(200);
    let (transport, _rx) = start(TcpLimits {
        idle_timeout: idle,
        ..limits()
    })
    .await;
    let start = Instant::now();
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    closed_by_server(&mut client).await;
    assert!(start.elapsed() >= idle, "closed before the idle timeout");
    eventually("the idle connection is forgotten", || {
        transport.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn oversized_headers_close_the_connection() {
    let (transport, mut rx) = start(TcpLimits {
        max_message_bytes: 1024,
        ..limits()
    })
    .await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    let mut big = b"INVITE sip:12345@hotline.example SIP/2.0\r\n".to_vec();
    while big.len() <= 2048 {
        big.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // The server may close mid-write; only the close matters.
    let _ = client.write_all(&big).await;
    closed_by_server(&mut client).await;
    assert!(rx.try_recv().is_err());
    eventually("the connection is forgotten", || {
        transport.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn oversized_declared_body_closes_before_it_arrives() {
    let (transport, mut rx) = start(TcpLimits {
        max_message_bytes: 1024,
        ..limits()
    })
    .await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    client
        .write_all(b"MESSAGE sip:12345@hotline.example SIP/2.0\r\nContent-Length: 100000\r\n\r\n")
        .await
        .expect("write head");
    closed_by_server(&mut client).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn framing_error_closes_after_delivering_what_came_before() {
    let (transport, mut rx) = start(limits()).await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    let good = request("good", "");
    let mut input = good.clone();
    input.extend_from_slice(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n");
    client.write_all(&input).await.expect("write");
    assert_eq!(recv(&mut rx).await.bytes, good);
    closed_by_server(&mut client).await;
    eventually("the connection is forgotten", || {
        transport.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn keepalive_ping_gets_a_pong() {
    let (transport, _rx) = start(limits()).await;
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    client.write_all(b"\r\n\r\n").await.expect("ping");
    assert_eq!(read_exact(&mut client, 2).await, b"\r\n");
}

#[tokio::test]
async fn full_write_queue_is_an_error_not_growth() {
    let (transport, _rx) = start(TcpLimits {
        write_queue_messages: 1,
        ..limits()
    })
    .await;
    // A peer that never reads: the kernel buffers fill, then the writer stalls, then its queue.
    let peer = TcpListener::bind(loopback()).await.expect("peer bind");
    let dest = peer.local_addr().expect("peer addr");
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    transport
        .send(None, dest, chunk.clone())
        .expect("first send");
    let (_silent, _) = timeout(PROMPT, peer.accept())
        .await
        .expect("connect in time")
        .expect("accept");
    let mut refused = None;
    for _ in 0..64 {
        match transport.send(None, dest, chunk.clone()) {
            Ok(()) => tokio::task::yield_now().await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(SendError::QueueFull { .. })),
        "got {refused:?}"
    );
}

#[tokio::test]
async fn backpressure_when_the_core_is_slow() {
    // An inbound channel of one: the reader must wait for the core rather than drop or buffer.
    let (tx, mut rx) = mpsc::channel(1);
    let transport = TcpTransport::bind(loopback(), limits(), tx)
        .await
        .expect("bind");
    let mut client = TcpStream::connect(transport.local_addr())
        .await
        .expect("connect");
    let msgs: Vec<Vec<u8>> = (0..20)
        .map(|i| request(&format!("bp-{i}"), "payload"))
        .collect();
    client.write_all(&msgs.concat()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    for want in &msgs {
        assert_eq!(&recv(&mut rx).await.bytes, want);
    }
}
