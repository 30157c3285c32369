//! A WebSocket's outgoing side, for both sockets of the HTTP port (the Web Thing Protocol's and
//! the legacy `/webthing/` one): frames from the socket's task and from this thread's fan-out
//! relay, on their way to the client.
//!
//! Why not a session that hands frames to the response body (as actix-ws's `Session` does): it hands every message through a channel to the response body,
//! so a notification had to wake the connection's task, cross the channel, wake the HTTP
//! dispatcher and be copied into its buffer before the `send`. Here a frame costs one `send`
//! made by whoever queues it:
//! - **Direct** (plain TCP): once the dispatcher has written the 101 head, frames are written to
//!   the socket right away through a second descriptor of it (`dup`, so the number cannot be
//!   reused by another connection while we hold it). What the socket does not take waits here
//!   and is written by the connection task when the socket is writable again. The response body
//!   then never yields anything: it only ends the response when the connection closes.
//! - **Through the body** (TLS, where only the dispatcher can encrypt; also plain TCP when the
//!   descriptor table is nearly full, see `fd_limit`, as the second descriptor is optional):
//!   frames wait here and the body hands them to the dispatcher, which is woken for it.
//!
//! Bounded: a notification that finds `limit` bytes already waiting is refused, and the caller
//! reports the lag. Frames the connection itself owes (responses, pongs, the close) always go in;
//! the connection reads no further request until there is room again, so those are bounded by
//! its in-flight limit. Confined to its worker thread (`Rc`); it never blocks and never decides
//! anything about the protocol.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_web::body::{BodySize, MessageBody};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::binding::ConnectionSocket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The most the dispatcher is handed at once, so that its own write buffer stays small.
const CHUNK: usize = 64 * 1024;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// The queue, as its writers see it. Cloning gives another writer of the same queue.
#[derive(Clone)]
pub(crate) struct Outbound {
    queue: Rc<RefCell<Queue>>,
}

/// The queue, as the dispatcher sees it: the response body.
pub(crate) struct OutboundBody {
    queue: Rc<RefCell<Queue>>,
}

struct Queue {
    /// Encoded frames not yet written (direct) or not yet taken by the dispatcher.
    bytes: BytesMut,
    limit: usize,
    /// Direct mode: our descriptor of the socket.
    socket: Option<Direct>,
    /// Direct mode: how often the body has been polled. The dispatcher polls it first right
    /// after putting the 101 head in its buffer and flushes that buffer before it polls again,
    /// so from the second poll on, the head is in the socket and frames may follow it. (The
    /// flush writes all of it unless the socket is full, which on a connection whose client
    /// reads its responses it is not: only a client that pipelines requests ahead of its
    /// upgrade and leaves their answers unread could see frames before the head, on its own
    /// connection only.)
    body_polls: u8,
    /// The dispatcher, waiting for bytes or for the end.
    dispatcher: Option<Waker>,
    /// The connection task, waiting for room, for the queue to drain, or to write (direct).
    task: Option<Waker>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    /// Nothing more is queued; the body ends once what is queued is out.
    Closing,
    /// Give up: the body fails, which makes the dispatcher drop the connection.
    Aborted,
    /// The dispatcher dropped the body: the connection is over.
    Gone,
}

/// Our descriptor of a connection's socket, for direct writes.
struct Direct {
    /// The descriptor `registered` owns, kept here as well so that a write reads it from the
    /// queue's own memory: the fan-out writes to thousands of sockets in a row, and a pointer
    /// chase to each registration was a cache miss per frame.
    fd: RawFd,
    /// Registered for writability only, for the frames that have to wait.
    registered: Rc<AsyncFd<TcpStream>>,
}

impl Direct {
    fn new(registered: AsyncFd<TcpStream>) -> Self {
        Direct {
            fd: registered.as_raw_fd(),
            registered: Rc::new(registered),
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: `fd` is the descriptor `registered` owns, which stays open as long as this
        // value (and with it `registered`) exists.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&fd).send(bytes)
    }
}

/// A notification that was not queued because `limit` bytes were already waiting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

thread_local! {
    /// Where a direct frame is assembled (header and payload) for its single `send`.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(4096));
}

impl Outbound {
    /// A queue for a connection that refuses notifications beyond `limit` waiting bytes, and the
    /// body that goes into the 101 response. With `socket` (the connection's plain TCP socket,
    /// from the request being upgraded) frames are written directly; the descriptor is
    /// duplicated, so this must run on the worker thread inside its runtime.
    pub(crate) fn new(limit: usize, socket: Option<&ConnectionSocket>) -> (Outbound, OutboundBody) {
        let socket = socket.and_then(|socket| match direct_socket(socket) {
            Ok(socket) => Some(Direct::new(socket)),
            Err(e) => {
                tracing::debug!("websocket frames go through the dispatcher: {e}");
                None
            }
        });
        let queue = Rc::new(RefCell::new(Queue {
            bytes: BytesMut::new(),
            limit,
            socket,
            body_polls: 0,
            dispatcher: None,
            task: None,
            state: State::Open,
        }));
        (Outbound { queue: queue.clone() }, OutboundBody { queue })
    }

    /// Queues a notification (a text frame), unless the client is that far behind.
    pub(crate) fn notification(&self, json: &[u8]) -> Result<(), Full> {
        let mut queue = self.queue.borrow_mut();
        if queue.state != State::Open {
            // The connection is closing; its task no longer reports lag.
            return Ok(());
        }
        if queue.bytes.len() >= queue.limit {
            return Err(Full);
        }
        queue.push(OPCODE_TEXT, json);
        Ok(())
    }

    /// Queues a text frame the connection owes its client (a response), whatever is waiting.
    pub(crate) fn text(&self, json: &[u8]) {
        self.push_owed(OPCODE_TEXT, json);
    }

    pub(crate) fn ping(&self, payload: &[u8]) {
        self.push_owed(OPCODE_PING, payload);
    }

    pub(crate) fn pong(&self, payload: &[u8]) {
        self.push_owed(OPCODE_PONG, payload);
    }

    /// Queues a close frame; nothing is queued after it and the body ends once it is out.
    /// `code` is `None` to echo a close without a status.
    pub(crate) fn close(&self, code: Option<u16>, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len().min(123));
        if let Some(code) = code {
            payload.extend_from_slice(&code.to_be_bytes());
            // A control frame carries at most 125 bytes; cut the reason on a character boundary.
            let mut end = reason.len().min(123);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            payload.extend_from_slice(&reason.as_bytes()[..end]);
        }
        let mut queue = self.queue.borrow_mut();
        if queue.state == State::Open {
            queue.push(OPCODE_CLOSE, &payload);
            queue.state = State::Closing;
            queue.wake_dispatcher();
        }
    }

    /// Drops the connection without writing what is still queued.
    pub(crate) fn abort(&self) {
        self.queue.borrow_mut().abort();
    }

    /// Whether another request may be read: fewer than `limit` bytes are waiting.
    pub(crate) fn has_room(&self) -> bool {
        let queue = self.queue.borrow();
        queue.bytes.len() < queue.limit || queue.state != State::Open
    }

    /// Waits until no more than half the limit is waiting (the connection's task must also be
    /// running [`write_backlog`](Self::write_backlog) for this to happen in direct mode).
    pub(crate) async fn room(&self) {
        poll_fn(|cx| {
            let mut queue = self.queue.borrow_mut();
            if queue.bytes.len() <= queue.limit / 2 || queue.state != State::Open {
                return Poll::Ready(());
            }
            queue.register_task(cx);
            Poll::Pending
        })
        .await
    }

    /// Direct mode: resolves after writing frames that the socket could not take at once;
    /// pending while there are none. Never resolves when the dispatcher writes the frames.
    pub(crate) async fn write_backlog(&self) {
        poll_fn(|cx| {
            let mut queue = self.queue.borrow_mut();
            if queue.socket.is_none() {
                return Poll::Pending;
            }
            if queue.bytes.is_empty() {
                queue.register_task(cx);
                return Poll::Pending;
            }
            drop(queue);
            self.poll_write_out(cx)
        })
        .await
    }

    /// Waits until everything queued is out (written, or handed to the dispatcher), or the
    /// connection is over.
    pub(crate) async fn drained(&self) {
        poll_fn(|cx| {
            let mut queue = self.queue.borrow_mut();
            if queue.socket.is_some() {
                drop(queue);
                return self.poll_write_out(cx);
            }
            if queue.bytes.is_empty() || matches!(queue.state, State::Gone | State::Aborted) {
                return Poll::Ready(());
            }
            queue.register_task(cx);
            Poll::Pending
        })
        .await
    }

    /// Direct mode: writes what is queued as far as the socket takes it. Ready when nothing is
    /// left or the connection is over; otherwise pending until the socket is writable (or the
    /// head is out).
    fn poll_write_out(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut queue = self.queue.borrow_mut();
            if matches!(queue.state, State::Gone | State::Aborted) {
                return Poll::Ready(());
            }
            let Some(socket) = queue.socket.as_ref().map(|direct| direct.registered.clone()) else {
                return Poll::Ready(());
            };
            if queue.bytes.is_empty() {
                if queue.state == State::Closing {
                    queue.wake_dispatcher();
                }
                return Poll::Ready(());
            }
            if queue.body_polls < 2 {
                // The head is not out yet; the body's next poll wakes us.
                queue.register_task(cx);
                return Poll::Pending;
            }
            let mut guard = match socket.poll_write_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    queue.broken(&e);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            };
            let written = guard.try_io(|fd| fd.get_ref().write(&queue.bytes));
            match written {
                Ok(Ok(n)) => queue.bytes.advance(n),
                Ok(Err(e)) => {
                    queue.broken(&e);
                    return Poll::Ready(());
                }
                // Not writable after all; readiness is cleared, so the next round waits.
                Err(_would_block) => {}
            }
        }
    }

    fn push_owed(&self, opcode: u8, payload: &[u8]) {
        let mut queue = self.queue.borrow_mut();
        if queue.state == State::Open {
            queue.push(opcode, payload);
        }
    }
}

/// Our own descriptor of the connection's socket, registered for writability only (edge
/// triggered), so that incoming data does not wake anything of ours.
fn direct_socket(socket: &ConnectionSocket) -> io::Result<AsyncFd<TcpStream>> {
    // SAFETY: a `ConnectionSocket` is made only from an accepted stream and lent only from the
    // connection data of one of its requests (see its doc): while we hold the reference, the
    // dispatcher keeps that socket open. It is only duplicated here.
    let owned = unsafe { BorrowedFd::borrow_raw(socket.raw()) }.try_clone_to_owned()?;
    if !crate::fd_limit::may_keep_optional(owned.as_raw_fd()) {
        // Dropping `owned` gives the descriptor back for accepting connections.
        return Err(io::Error::other(
            "the descriptor table is nearly full; its top is kept for new connections",
        ));
    }
    let stream = TcpStream::from(owned);
    // The copy shares the original's file description, which the runtime made non-blocking.
    stream.set_nonblocking(true)?;
    // SAFETY: `stream` owns its descriptor, which stays open and unchanged until it is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(stream, Interest::WRITABLE) }?)
}

impl Queue {
    fn push(&mut self, opcode: u8, payload: &[u8]) {
        match &self.socket {
            Some(socket) if self.body_polls >= 2 && self.bytes.is_empty() => {
                let bytes = &mut self.bytes;
                // Whatever the socket did not take waits in `bytes`.
                let sent = SCRATCH.with(|scratch| {
                    let mut frame = scratch.borrow_mut();
                    frame.clear();
                    encode_frame(&mut frame, opcode, payload);
                    let sent = socket.send(&frame);
                    match sent {
                        Ok(n) => bytes.extend_from_slice(&frame[n..]),
                        Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => {
                            bytes.extend_from_slice(&frame)
                        }
                        Err(_) => {}
                    }
                    sent
                });
                match sent {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => self.broken(&e),
                    _ if !self.bytes.is_empty() => self.wake_task(),
                    _ => {}
                }
            }
            Some(_) => {
                encode_frame(&mut self.bytes, opcode, payload);
                self.wake_task();
            }
            None => {
                encode_frame(&mut self.bytes, opcode, payload);
                self.wake_dispatcher();
            }
        }
    }

    fn abort(&mut self) {
        if matches!(self.state, State::Open | State::Closing) {
            self.bytes = BytesMut::new();
            self.state = State::Aborted;
            self.socket = None;
            self.wake_dispatcher();
            self.wake_task();
        }
    }

    fn broken(&mut self, error: &io::Error) {
        tracing::debug!("websocket write failed: {error}");
        self.abort();
    }

    fn register_task(&mut self, cx: &Context<'_>) {
        match &self.task {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.task = Some(cx.waker().clone()),
        }
    }

    fn wake_task(&mut self) {
        if let Some(waker) = self.task.take() {
            waker.wake();
        }
    }

    fn wake_dispatcher(&mut self) {
        if let Some(waker) = self.dispatcher.take() {
            waker.wake();
        }
    }
}

/// Appends one final, unmasked frame (RFC 6455 §5.2; a server never masks).
fn encode_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.put_u8(len as u8),
        len @ 126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        len => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
}

/// Why the body failed: the connection gave up on its client.
#[derive(Debug)]
pub(crate) struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("websocket connection aborted")
    }
}

impl std::error::Error for Aborted {}

impl MessageBody for OutboundBody {
    type Error = Aborted;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Aborted>>> {
        let mut queue = self.queue.borrow_mut();
        if queue.state == State::Aborted {
            return Poll::Ready(Some(Err(Aborted)));
        }
        if queue.socket.is_some() {
            if queue.body_polls < 2 {
                queue.body_polls += 1;
                if queue.body_polls == 1 {
                    // Come back after the dispatcher has flushed the head.
                    cx.waker().wake_by_ref();
                } else if !queue.bytes.is_empty() {
                    // Frames queued before the head was out can go now.
                    queue.wake_task();
                }
            }
            if queue.state == State::Closing && queue.bytes.is_empty() {
                queue.socket = None;
                return Poll::Ready(None);
            }
        } else if !queue.bytes.is_empty() {
            let take = queue.bytes.len().min(CHUNK);
            let chunk = queue.bytes.split_to(take).freeze();
            queue.wake_task();
            return Poll::Ready(Some(Ok(chunk)));
        } else if queue.state == State::Closing {
            return Poll::Ready(None);
        }
        match &queue.dispatcher {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => queue.dispatcher = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut queue = self.queue.borrow_mut();
        queue.state = State::Gone;
        queue.bytes = BytesMut::new();
        // Our descriptor must not keep the socket open after the dispatcher closed its own.
        queue.socket = None;
        queue.wake_task();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn next(body: &mut OutboundBody) -> Poll<Option<Result<Bytes, Aborted>>> {
        Pin::new(body).poll_next(&mut Context::from_waker(Waker::noop()))
    }

    fn chunk(body: &mut OutboundBody) -> Vec<u8> {
        match next(body) {
            Poll::Ready(Some(Ok(bytes))) => bytes.to_vec(),
            other => panic!("expected bytes, got {:?}", other.map(|o| o.map(|r| r.is_ok()))),
        }
    }

    #[test]
    fn frames_are_encoded_with_the_right_length_form() {
        let (out, mut body) = Outbound::new(1 << 20, None);
        out.text(b"hi");
        assert_eq!(chunk(&mut body), [0x81, 2, b'h', b'i']);
        let medium = vec![b'x'; 300];
        out.notification(&medium).expect("room");
        let got = chunk(&mut body);
        assert_eq!(&got[..4], [0x81, 126, 0x01, 0x2c]);
        assert_eq!(got.len(), 4 + 300);
        let large = vec![b'y'; 70_000];
        out.text(&large);
        let mut got = Vec::new();
        while let Poll::Ready(Some(Ok(bytes))) = next(&mut body) {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(&got[..10], [0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        assert_eq!(got.len(), 10 + 70_000);
        assert!(next(&mut body).is_pending());
    }

    #[test]
    fn notifications_beyond_the_limit_are_refused_but_responses_go_in() {
        let (out, mut body) = Outbound::new(100, None);
        out.notification(&[b'a'; 90]).expect("room");
        out.notification(&[b'b'; 90])
            .expect("still under the limit when it was queued");
        assert_eq!(out.notification(b"c"), Err(Full));
        assert!(!out.has_room());
        out.text(b"response");
        let drained: usize = std::iter::from_fn(|| match next(&mut body) {
            Poll::Ready(Some(Ok(b))) => Some(b.len()),
            _ => None,
        })
        .sum();
        assert_eq!(drained, 92 + 92 + 10);
        assert!(out.has_room());
    }

    #[test]
    fn close_ends_the_body_after_the_queue_and_abort_fails_it() {
        let (out, mut body) = Outbound::new(1024, None);
        out.text(b"last");
        out.close(Some(1013), &"é".repeat(100));
        out.text(b"ignored after close");
        let got = chunk(&mut body);
        assert_eq!(&got[..6], [0x81, 4, b'l', b'a', b's', b't']);
        let close = &got[6..];
        assert_eq!(close[0], 0x88);
        let len = usize::from(close[1]);
        assert!(len <= 125, "control frames carry at most 125 bytes: {len}");
        assert_eq!(&close[2..4], 1013u16.to_be_bytes());
        assert!(
            std::str::from_utf8(&close[4..2 + len]).is_ok(),
            "cut on a char boundary"
        );
        assert!(matches!(next(&mut body), Poll::Ready(None)));

        let (out, mut body) = Outbound::new(1024, None);
        out.text(b"never written");
        out.abort();
        assert!(matches!(next(&mut body), Poll::Ready(Some(Err(Aborted)))));
    }

    /// A connected pair of loopback sockets: (server side as tokio would hold it, client side).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        (server, client)
    }

    fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        client.read_exact(&mut buf).expect("read");
        buf
    }

    #[tokio::test]
    async fn direct_frames_wait_for_the_head_then_go_straight_to_the_socket() {
        let (server, mut client) = pair();
        let (out, mut body) = Outbound::new(1 << 20, Some(&ConnectionSocket::of(&server)));
        // Before the dispatcher has flushed the head, frames wait.
        out.text(b"early");
        assert!(
            next(&mut body).is_pending(),
            "the body yields nothing in direct mode"
        );
        out.drained().now_or_never_pending();
        // The second poll means the head is out: the waiting frame is written by the task...
        assert!(next(&mut body).is_pending());
        out.drained().await;
        assert_eq!(
            read_exactly(&mut client, 7),
            [0x81, 5, b'e', b'a', b'r', b'l', b'y']
        );
        // ... and from now on frames go out as they are queued, without any task.
        out.notification(b"now").expect("room");
        assert_eq!(read_exactly(&mut client, 5), [0x81, 3, b'n', b'o', b'w']);
        // The close goes out, then the body ends and lets go of its descriptor.
        out.close(Some(1000), "bye");
        assert_eq!(
            read_exactly(&mut client, 7),
            [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']
        );
        assert!(matches!(next(&mut body), Poll::Ready(None)));
        drop(server);
        drop((out, body));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("the socket closes");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_socket_that_stops_taking_frames_makes_them_wait_in_order() {
        let (server, mut client) = pair();
        let (out, mut body) = Outbound::new(64 * 1024, Some(&ConnectionSocket::of(&server)));
        let _ = next(&mut body);
        let _ = next(&mut body);
        // The client reads nothing: fill the socket until frames have to wait here.
        let payload = vec![b'p'; 1000];
        let mut sent = 0usize;
        while out.queue.borrow().bytes.is_empty() {
            out.notification(&payload).expect("room");
            sent += 1;
            assert!(sent < 100_000, "the socket never filled");
        }
        while out.notification(&payload).is_ok() {
            sent += 1;
        }
        assert!(!out.has_room(), "refused only once the limit is reached");
        // The client reads again; the task writes the backlog as the socket takes it.
        let reader = std::thread::spawn(move || {
            let mut frames = 0;
            let mut header = [0u8; 4];
            while frames < sent {
                client.read_exact(&mut header).expect("header");
                assert_eq!(
                    header,
                    [0x81, 126, 0x03, 0xe8],
                    "frame {frames} intact and in order"
                );
                read_exactly(&mut client, 1000);
                frames += 1;
            }
            frames
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), out.drained())
            .await
            .expect("drained");
        assert_eq!(reader.join().expect("reader"), sent);
    }

    trait NowOrNeverPending {
        fn now_or_never_pending(self);
    }

    impl<F: std::future::Future> NowOrNeverPending for F {
        /// Polls once and insists that it is pending.
        fn now_or_never_pending(self) {
            let mut f = std::pin::pin!(self);
            let polled = f.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(polled.is_pending());
        }
    }
}
