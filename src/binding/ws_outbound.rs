//! A WebSocket's outgoing side, for both sockets of the HTTP port (the Web Thing Protocol's and
//! the legacy `/webthing/` one): frames from the socket's task and from this thread's fan-out
//! relay, on their way to the client.
//!
//! The queue owns the writing side of the upgraded connection (`binding::upgrade`), plain TCP or
//! TLS alike. A frame costs one write made by whoever queues it: when nothing is waiting, it is
//! written to the transport at once, and only what the transport does not take waits here, to be
//! written by the connection's task when the socket is writable again. So a notification fanned
//! out to ten thousand sockets is ten thousand writes by the relay, with no task woken and no
//! copy into another buffer. (actix-ws's session instead hands every message through a channel
//! to the response body: wake the task, cross the channel, wake the HTTP dispatcher, copy.)
//!
//! The immediate write is made outside any task, with a waker that does nothing: a transport
//! that is not ready remembers that waker, so the queue then wakes the connection's task, whose
//! own write registers the real one. Whoever finds frames already waiting only appends to them,
//! so no immediate write ever replaces the waker of a task that waits on the socket.
//!
//! Bounded: a notification that finds `limit` bytes already waiting is refused, and the caller
//! reports the lag. Frames the connection itself owes (responses, pongs, the close) always go in;
//! the connection reads no further request until there is room again, so those are bounded by
//! its in-flight limit. Confined to its worker thread (`Rc`); it never blocks and never decides
//! anything about the protocol.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, BytesMut};

use crate::binding::upgrade::WriteSide;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// The queue, as its writers see it. Cloning gives another writer of the same queue.
#[derive(Clone)]
pub(crate) struct Outbound {
    queue: Rc<RefCell<Queue>>,
}

struct Queue {
    /// Encoded frames the transport has not taken yet.
    bytes: BytesMut,
    limit: usize,
    /// The connection's writing side; dropped once the connection is over.
    writer: Option<WriteSide>,
    /// The transport took bytes it has not pushed out yet (TLS records waiting for the socket).
    unflushed: bool,
    /// The connection task, waiting for room, for the queue to drain, or to write.
    task: Option<Waker>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Open,
    /// A close frame is queued; nothing more is.
    Closing,
    /// Over: the sending side was shut down, or given up (nothing more is written).
    Over,
}

/// A notification that was not queued because `limit` bytes were already waiting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

thread_local! {
    /// Where a frame is assembled (header and payload) for its single immediate write.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(4096));
}

impl Outbound {
    /// A queue writing to `writer` that refuses notifications beyond `limit` waiting bytes.
    pub(crate) fn new(limit: usize, writer: WriteSide) -> Outbound {
        Outbound::with_writer(limit, Some(writer))
    }

    fn with_writer(limit: usize, writer: Option<WriteSide>) -> Outbound {
        let queue = Queue {
            bytes: BytesMut::new(),
            limit,
            writer,
            unflushed: false,
            task: None,
            state: State::Open,
        };
        Outbound {
            queue: Rc::new(RefCell::new(queue)),
        }
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

    /// Queues a close frame; nothing is queued after it. `code` is `None` to echo a close
    /// without a status.
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
        }
    }

    /// Sends a close frame, then ends the sending side once everything queued is out; gives up
    /// (dropping what is left) after `patience`.
    pub(crate) async fn close_within(&self, code: Option<u16>, reason: &str, patience: std::time::Duration) {
        self.close(code, reason);
        let sent = async {
            self.drained().await;
            self.shut_down().await;
        };
        if tokio::time::timeout(patience, sent).await.is_err() {
            self.abort();
        }
    }

    /// Gives up on the connection: what is queued is dropped and nothing more is written.
    pub(crate) fn abort(&self) {
        let mut queue = self.queue.borrow_mut();
        queue.bytes = BytesMut::new();
        queue.finish();
    }

    /// Whether another request may be read: fewer than `limit` bytes are waiting.
    pub(crate) fn has_room(&self) -> bool {
        let queue = self.queue.borrow();
        queue.bytes.len() < queue.limit || queue.state != State::Open
    }

    /// Waits until no more than half the limit is waiting (the connection's task must also be
    /// running [`write_backlog`](Self::write_backlog) for this to happen).
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

    /// For the connection's task: resolves after writing what the transport could not take at
    /// once; pending while there is nothing to write.
    pub(crate) async fn write_backlog(&self) {
        poll_fn(|cx| {
            let mut queue = self.queue.borrow_mut();
            if queue.writer.is_none() {
                return Poll::Pending;
            }
            if queue.bytes.is_empty() && !queue.unflushed {
                queue.register_task(cx);
                return Poll::Pending;
            }
            queue.poll_write_out(cx)
        })
        .await
    }

    /// Waits until everything queued is out, or the connection is over.
    pub(crate) async fn drained(&self) {
        poll_fn(|cx| self.queue.borrow_mut().poll_write_out(cx)).await
    }

    /// Ends the sending side (TLS close_notify, TCP FIN) and lets go of it.
    async fn shut_down(&self) {
        poll_fn(|cx| {
            let mut queue = self.queue.borrow_mut();
            let Some(writer) = &queue.writer else {
                return Poll::Ready(());
            };
            match writer.poll_shutdown(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(result) => {
                    if let Err(e) = result {
                        tracing::debug!("websocket shutdown failed: {e}");
                    }
                    queue.finish();
                    Poll::Ready(())
                }
            }
        })
        .await
    }

    fn push_owed(&self, opcode: u8, payload: &[u8]) {
        let mut queue = self.queue.borrow_mut();
        if queue.state == State::Open {
            queue.push(opcode, payload);
        }
    }
}

impl Queue {
    fn push(&mut self, opcode: u8, payload: &[u8]) {
        let idle = self.bytes.is_empty() && !self.unflushed;
        match &self.writer {
            Some(writer) if idle => {
                let bytes = &mut self.bytes;
                let written = SCRATCH.with(|scratch| {
                    let mut frame = scratch.borrow_mut();
                    frame.clear();
                    encode_frame(&mut frame, opcode, payload);
                    let written = write_now(writer, &frame);
                    if let Ok(n) = written {
                        // Whatever the transport did not take waits here.
                        bytes.extend_from_slice(&frame[n..]);
                    }
                    written
                });
                match written {
                    Err(e) => self.broken(&e),
                    Ok(_) if !self.bytes.is_empty() => self.wake_task(),
                    Ok(_) => self.flush_now(),
                }
            }
            Some(_) => {
                encode_frame(&mut self.bytes, opcode, payload);
                self.wake_task();
            }
            // Over (or, in tests, never connected): frames are kept only while open.
            None if self.state == State::Over => {}
            None => encode_frame(&mut self.bytes, opcode, payload),
        }
    }

    /// After an immediate write: pushes out what the transport holds back, or leaves that to
    /// the task.
    fn flush_now(&mut self) {
        let Some(writer) = &self.writer else { return };
        match writer.poll_flush(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => self.broken(&e),
            Poll::Pending => {
                self.unflushed = true;
                self.wake_task();
            }
        }
    }

    /// Writes and flushes what is queued as far as the transport takes it, with the task's
    /// waker. Ready when nothing is left or the connection is over.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(writer) = &self.writer else {
                return Poll::Ready(());
            };
            let step = if !self.bytes.is_empty() {
                match writer.poll_write(cx, &self.bytes) {
                    Poll::Ready(Ok(0)) => Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.bytes.advance(n);
                        self.unflushed = true;
                        Ok(())
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => return Poll::Pending,
                }
            } else if self.unflushed {
                match writer.poll_flush(cx) {
                    Poll::Ready(result) => {
                        self.unflushed = false;
                        result
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                return Poll::Ready(());
            };
            if let Err(e) = step {
                self.broken(&e);
                return Poll::Ready(());
            }
        }
    }

    fn finish(&mut self) {
        self.state = State::Over;
        self.writer = None;
        self.unflushed = false;
        self.wake_task();
    }

    fn broken(&mut self, error: &io::Error) {
        tracing::debug!("websocket write failed: {error}");
        self.bytes = BytesMut::new();
        self.finish();
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
}

/// Writes outside any task: with a waker that does nothing, so only the caller learns whether
/// the transport took the bytes (see the module's doc for why that is safe). `Ok(0)` when it took
/// none.
fn write_now(writer: &WriteSide, frame: &[u8]) -> io::Result<usize> {
    match writer.poll_write(&mut Context::from_waker(Waker::noop()), frame) {
        Poll::Ready(Ok(0)) => Err(io::ErrorKind::WriteZero.into()),
        Poll::Ready(result) => result,
        Poll::Pending => Ok(0),
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

#[cfg(test)]
impl Outbound {
    /// A queue with no connection behind it: frames stay queued (for tests of what is queued).
    pub(crate) fn detached(limit: usize) -> Outbound {
        Outbound::with_writer(limit, None)
    }

    /// Takes what is queued.
    pub(crate) fn take_queued(&self) -> BytesMut {
        std::mem::take(&mut self.queue.borrow_mut().bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::upgrade::{ReadSide, Upgraded};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn frames_are_encoded_with_the_right_length_form() {
        let out = Outbound::detached(1 << 20);
        out.text(b"hi");
        assert_eq!(&out.take_queued()[..], [0x81, 2, b'h', b'i']);
        let medium = vec![b'x'; 300];
        out.notification(&medium).expect("room");
        let got = out.take_queued();
        assert_eq!(&got[..4], [0x81, 126, 0x01, 0x2c]);
        assert_eq!(got.len(), 4 + 300);
        let large = vec![b'y'; 70_000];
        out.text(&large);
        let got = out.take_queued();
        assert_eq!(&got[..10], [0x81, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        assert_eq!(got.len(), 10 + 70_000);
    }

    #[test]
    fn notifications_beyond_the_limit_are_refused_but_responses_go_in() {
        let out = Outbound::detached(100);
        out.notification(&[b'a'; 90]).expect("room");
        out.notification(&[b'b'; 90])
            .expect("still under the limit when it was queued");
        assert_eq!(out.notification(b"c"), Err(Full));
        assert!(!out.has_room());
        out.text(b"response");
        assert_eq!(out.take_queued().len(), 92 + 92 + 10);
        assert!(out.has_room());
    }

    #[test]
    fn nothing_is_queued_after_the_close_which_is_cut_to_fit_a_control_frame() {
        let out = Outbound::detached(1024);
        out.text(b"last");
        out.close(Some(1013), &"é".repeat(100));
        out.text(b"ignored after close");
        let got = out.take_queued();
        assert_eq!(&got[..6], [0x81, 4, b'l', b'a', b's', b't']);
        let close = &got[6..];
        assert_eq!(close[0], 0x88);
        let len = usize::from(close[1]);
        assert!(len <= 125, "control frames carry at most 125 bytes: {len}");
        assert_eq!(close.len(), 2 + len, "nothing after the close");
        assert_eq!(&close[2..4], 1013u16.to_be_bytes());
        assert!(
            std::str::from_utf8(&close[4..2 + len]).is_ok(),
            "cut on a char boundary"
        );
    }

    /// A loopback connection: (our queue over the server's end, its reading side, the client).
    async fn connected(limit: usize) -> (Outbound, ReadSide, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (reader, writer) = Upgraded::new(Box::new(server), BytesMut::new()).split();
        (Outbound::new(limit, writer), reader, client)
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        buf
    }

    #[tokio::test]
    async fn frames_go_straight_to_the_socket_and_the_close_ends_the_sending_side() {
        let (out, reader, mut client) = connected(1 << 20).await;
        // No task runs: whoever queues a frame writes it.
        out.notification(b"now").expect("room");
        out.text(b"reply");
        assert!(out.queue.borrow().bytes.is_empty());
        assert_eq!(read_exactly(&mut client, 5).await, [0x81, 3, b'n', b'o', b'w']);
        assert_eq!(
            read_exactly(&mut client, 7).await,
            [0x81, 5, b'r', b'e', b'p', b'l', b'y']
        );
        out.close_within(Some(1000), "bye", Duration::from_secs(10)).await;
        assert_eq!(
            read_exactly(&mut client, 7).await,
            [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']
        );
        // The FIN follows the close although the reading side is still open.
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("the server's side ends");
        assert!(rest.is_empty());
        assert!(
            out.queue.borrow().writer.is_none(),
            "the queue let go of the socket"
        );
        drop(reader);
    }

    #[tokio::test]
    async fn a_socket_that_stops_taking_frames_makes_them_wait_in_order() {
        let (out, _reader, mut client) = connected(64 * 1024).await;
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
        let reader = tokio::spawn(async move {
            let mut frames = 0;
            while frames < sent {
                let header = read_exactly(&mut client, 4).await;
                assert_eq!(
                    header,
                    [0x81, 126, 0x03, 0xe8],
                    "frame {frames} intact and in order"
                );
                read_exactly(&mut client, 1000).await;
                frames += 1;
            }
            frames
        });
        tokio::time::timeout(Duration::from_secs(10), out.drained())
            .await
            .expect("drained");
        assert_eq!(reader.await.expect("reader"), sent);
    }

    #[tokio::test]
    async fn an_aborted_queue_drops_what_waits_and_writes_nothing_more() {
        let (out, _reader, mut client) = connected(1 << 20).await;
        out.text(b"first");
        out.abort();
        out.text(b"never written");
        assert_eq!(out.notification(b"nor this"), Ok(()));
        assert!(out.queue.borrow().bytes.is_empty());
        out.drained().await;
        assert_eq!(
            read_exactly(&mut client, 7).await,
            [0x81, 5, b'f', b'i', b'r', b's', b't']
        );
        drop(_reader);
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("closed once both sides are gone");
        assert!(rest.is_empty(), "{rest:?}");
    }
}
