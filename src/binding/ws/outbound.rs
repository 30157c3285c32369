//! A socket's outgoing side: WebSocket frames queued as bytes by the socket's connection task and
//! by this thread's fan-out relay, and drained by actix's HTTP/1 dispatcher as the body of the 101
//! response.
//!
//! Why not actix-ws's `Session`: it hands every message through a channel to the body, so a
//! notification had to wake the connection's task, cross the channel and be encoded there. Here
//! the relay writes the finished frame straight into the queue and wakes only the dispatcher,
//! which writes it to the socket: one copy, one wake, one `send`.
//!
//! Bounded: a notification that finds `limit` bytes already waiting is refused, and the caller
//! reports the lag. Frames the connection itself must send (responses, pongs, the close) always
//! go in; the connection reads no further request until the queue has room again, so those are
//! bounded by its in-flight limit. The queue is confined to its worker thread (`Rc`); it never
//! blocks and never decides anything about the protocol.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use bytes::{BufMut, Bytes, BytesMut};

/// The most the dispatcher is handed at once, so that its own write buffer stays small.
const CHUNK: usize = 64 * 1024;

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// The queue, as its writers see it. Cloning gives another writer of the same queue.
#[derive(Clone)]
pub struct Outbound {
    queue: Rc<RefCell<Queue>>,
}

/// The queue, as the dispatcher sees it: the response body.
pub struct OutboundBody {
    queue: Rc<RefCell<Queue>>,
    /// Dropped with this body, never polled (see [`keeping`](Self::keeping)).
    kept: Option<BoxBody>,
}

struct Queue {
    bytes: BytesMut,
    limit: usize,
    /// The dispatcher, waiting for bytes.
    writer: Option<Waker>,
    /// The connection task, waiting for room or for the queue to drain.
    room: Option<Waker>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Nothing more is queued; the body ends once what is queued has been written.
    Closing,
    /// Give up: the body fails, which makes the dispatcher drop the connection.
    Aborted,
    /// The dispatcher dropped the body: the connection is over.
    Gone,
}

/// A notification that was not queued because `limit` bytes were already waiting.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Outbound {
    /// A queue that refuses notifications beyond `limit` waiting bytes, and the body that
    /// drains it.
    pub fn new(limit: usize) -> (Outbound, OutboundBody) {
        let queue = Rc::new(RefCell::new(Queue {
            bytes: BytesMut::new(),
            limit,
            writer: None,
            room: None,
            state: State::Open,
        }));
        (
            Outbound { queue: queue.clone() },
            OutboundBody { queue, kept: None },
        )
    }

    /// Queues a notification (a text frame), unless the client is that far behind.
    pub fn notification(&self, json: &[u8]) -> Result<(), Full> {
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
    pub fn text(&self, json: &[u8]) {
        self.push_control(OPCODE_TEXT, json);
    }

    pub fn ping(&self, payload: &[u8]) {
        self.push_control(OPCODE_PING, payload);
    }

    pub fn pong(&self, payload: &[u8]) {
        self.push_control(OPCODE_PONG, payload);
    }

    /// Queues a close frame; nothing is queued after it and the body ends once it is written.
    /// `code` is `None` to echo a close without a status.
    pub fn close(&self, code: Option<u16>, reason: &str) {
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
            queue.wake_writer();
        }
    }

    /// Drops the connection without writing what is still queued.
    pub fn abort(&self) {
        let mut queue = self.queue.borrow_mut();
        if matches!(queue.state, State::Open | State::Closing) {
            queue.bytes = BytesMut::new();
            queue.state = State::Aborted;
            queue.wake_writer();
        }
    }

    /// Whether another request may be read: its response would not push the queue past the
    /// limit by more than one frame.
    pub fn has_room(&self) -> bool {
        let queue = self.queue.borrow();
        queue.bytes.len() < queue.limit || queue.state == State::Gone
    }

    /// Waits until [`has_room`](Self::has_room) holds.
    pub async fn room(&self) {
        poll_fn(|cx| self.wait(cx, |q| q.bytes.len() < q.limit / 2)).await
    }

    /// Waits until everything queued has been handed to the dispatcher, or the connection is
    /// over.
    pub async fn drained(&self) {
        poll_fn(|cx| self.wait(cx, |q| q.bytes.is_empty())).await
    }

    fn wait(&self, cx: &mut Context<'_>, done: impl Fn(&Queue) -> bool) -> Poll<()> {
        let mut queue = self.queue.borrow_mut();
        if done(&queue) || matches!(queue.state, State::Gone | State::Aborted) {
            return Poll::Ready(());
        }
        match &queue.room {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => queue.room = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn push_control(&self, opcode: u8, payload: &[u8]) {
        let mut queue = self.queue.borrow_mut();
        if queue.state == State::Open {
            queue.push(opcode, payload);
        }
    }
}

impl Queue {
    fn push(&mut self, opcode: u8, payload: &[u8]) {
        encode_frame(&mut self.bytes, opcode, payload);
        self.wake_writer();
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
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
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("websocket connection aborted")
    }
}

impl std::error::Error for Aborted {}

impl OutboundBody {
    /// Holds `other` until this body is dropped, for a side effect of dropping it.
    pub fn keeping(mut self, other: BoxBody) -> Self {
        self.kept = Some(other);
        self
    }
}

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
        if !queue.bytes.is_empty() {
            let take = queue.bytes.len().min(CHUNK);
            let chunk = queue.bytes.split_to(take).freeze();
            // The task may be waiting for room or for the drain.
            if let Some(waker) = queue.room.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if queue.state == State::Closing {
            return Poll::Ready(None);
        }
        match &queue.writer {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => queue.writer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut queue = self.queue.borrow_mut();
        queue.state = State::Gone;
        queue.bytes = BytesMut::new();
        if let Some(waker) = queue.room.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

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
        let (out, mut body) = Outbound::new(1 << 20);
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
        let (out, mut body) = Outbound::new(100);
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
        let (out, mut body) = Outbound::new(1024);
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

        let (out, mut body) = Outbound::new(1024);
        out.text(b"never written");
        out.abort();
        assert!(matches!(next(&mut body), Poll::Ready(Some(Err(Aborted)))));
    }
}
