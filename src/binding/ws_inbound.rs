//! Incoming WebSocket messages from the bytes a client sent (sans-IO), for both WebSockets of the
//! HTTP port (the Web Thing Protocol's and the legacy `/webthing/` one).
//!
//! Bytes go in (read into its buffer by [`Messages`]); whole messages come out ([`Inbound::next_message`]): text (checked to
//! be UTF-8), binary, ping, pong and close, with fragmented messages joined. The limits are
//! decided here, by type: a frame longer than `max_frame` cannot be skipped (its length is all we
//! know of where the next frame starts), so it ends the connection ([`InboundError::FrameTooLarge`]);
//! a fragmented message that grows past `max_message` is reported once
//! ([`InboundError::MessageTooLarge`]), the rest of its fragments are dropped as they come, and
//! the connection goes on. Frame parsing is actix-http's WebSocket codec (RFC 6455 framing,
//! masking, control frames); this module must not do I/O or know what a message means.

use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio_util::codec::Decoder;

pub(crate) use actix_http::ws::CloseReason;

/// One message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// Why bytes did not make a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InboundError {
    /// A single frame over the frame limit: the connection cannot go on.
    #[error("a frame larger than {0} bytes")]
    FrameTooLarge(usize),
    /// A fragmented message over the message limit: it was dropped, the connection goes on.
    #[error("a message larger than {0} bytes")]
    MessageTooLarge(usize),
    /// A text message that is not UTF-8 (RFC 6455 §8.1): the connection cannot go on.
    #[error("a text message that is not UTF-8")]
    NotUtf8,
    /// Anything else RFC 6455 forbids (unmasked client frame, bad opcode, fragments out of
    /// order, ...): the connection cannot go on.
    #[error("{0}")]
    Protocol(ProtocolError),
}

impl InboundError {
    /// Whether the connection can go on after this error.
    pub(crate) fn is_recoverable(&self) -> bool {
        matches!(self, InboundError::MessageTooLarge(_))
    }
}

/// A fragmented message being joined.
#[derive(Debug)]
enum Partial {
    Text(BytesMut),
    Binary(BytesMut),
    /// Over the limit: its remaining fragments are dropped.
    Dropped,
}

/// The decoder of one connection's incoming bytes.
#[derive(Debug)]
pub(crate) struct Inbound {
    codec: Codec,
    buffer: BytesMut,
    partial: Option<Partial>,
    max_frame: usize,
    max_message: usize,
    /// A fatal error was reported: nothing more is decoded.
    failed: bool,
}

impl Inbound {
    /// A decoder for a server's side of a connection: frames over `max_frame` bytes and
    /// messages over `max_message` bytes (after joining fragments) are refused.
    pub(crate) fn new(max_frame: usize, max_message: usize) -> Self {
        Inbound {
            codec: Codec::new().max_size(max_frame),
            buffer: BytesMut::new(),
            partial: None,
            max_frame,
            max_message,
            failed: false,
        }
    }

    /// Bytes read from the connection (tests feed them by hand; [`Messages`] reads into the
    /// buffer directly).
    #[cfg(test)]
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, an error, or `None` when more bytes are needed. After an error
    /// that is not [recoverable](InboundError::is_recoverable), always `None`.
    pub(crate) fn next_message(&mut self) -> Option<Result<Incoming, InboundError>> {
        while !self.failed {
            let frame = match self.codec.decode(&mut self.buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => return Some(Err(self.fail(error))),
            };
            if let Some(result) = self.message(frame) {
                if let Err(e) = &result
                    && !e.is_recoverable()
                {
                    self.failed = true;
                }
                return Some(result);
            }
        }
        None
    }

    fn fail(&mut self, error: ProtocolError) -> InboundError {
        self.failed = true;
        match error {
            ProtocolError::Overflow => InboundError::FrameTooLarge(self.max_frame),
            other => InboundError::Protocol(other),
        }
    }

    /// What a frame makes: a message, an error, or nothing yet (a fragment).
    fn message(&mut self, frame: Frame) -> Option<Result<Incoming, InboundError>> {
        match frame {
            Frame::Text(bytes) => Some(text(bytes)),
            Frame::Binary(bytes) => Some(Ok(Incoming::Binary(bytes))),
            Frame::Ping(bytes) => Some(Ok(Incoming::Ping(bytes))),
            Frame::Pong(bytes) => Some(Ok(Incoming::Pong(bytes))),
            Frame::Close(reason) => Some(Ok(Incoming::Close(reason))),
            Frame::Continuation(item) => self.fragment(item),
        }
    }

    fn fragment(&mut self, item: Item) -> Option<Result<Incoming, InboundError>> {
        let (first, bytes, last) = match item {
            Item::FirstText(b) => (Some(Partial::Text(BytesMut::new())), b, false),
            Item::FirstBinary(b) => (Some(Partial::Binary(BytesMut::new())), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(first) = first {
            self.partial = Some(first);
        }
        // The codec checks the order of fragments: a continuation always has a first part.
        let partial = self.partial.as_mut()?;
        let joined = match partial {
            Partial::Text(b) | Partial::Binary(b) => b,
            Partial::Dropped => {
                if last {
                    self.partial = None;
                }
                return None;
            }
        };
        if joined.len() + bytes.len() > self.max_message {
            *partial = Partial::Dropped;
            if last {
                self.partial = None;
            }
            return Some(Err(InboundError::MessageTooLarge(self.max_message)));
        }
        joined.extend_from_slice(&bytes);
        if !last {
            return None;
        }
        match self.partial.take()? {
            Partial::Text(b) => Some(text(b.freeze())),
            Partial::Binary(b) => Some(Ok(Incoming::Binary(b.freeze()))),
            Partial::Dropped => None,
        }
    }
}

/// The messages of a connection, read from its reading side (`binding::upgrade::ReadSide`).
pub(crate) struct Messages<R> {
    reader: R,
    inbound: Inbound,
}

/// How long a closed connection waits for its client to close its side too.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// How much is read from the socket at once, at least.
const READ_CHUNK: usize = 8 * 1024;

impl<R: tokio::io::AsyncRead + Unpin> Messages<R> {
    pub(crate) fn new(reader: R, inbound: Inbound) -> Self {
        Messages { reader, inbound }
    }

    /// The next message or error; `None` once the connection is over (the client went away,
    /// reading failed, or a fatal error was reported). Cancel-safe: what was read stays in
    /// the decoder.
    pub(crate) async fn recv(&mut self) -> Option<Result<Incoming, InboundError>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(message) = self.inbound.next_message() {
                return Some(message);
            }
            if self.inbound.failed {
                return None;
            }
            self.inbound.buffer.reserve(READ_CHUNK);
            match self.reader.read_buf(&mut self.inbound.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads and drops what the client still sends until it closes its side, for at most
    /// `patience`: closing a socket with unread bytes would reset the connection, and the client
    /// could lose the close frame that was sent before.
    pub(crate) async fn discard_until_closed(mut self, patience: std::time::Duration) {
        use tokio::io::AsyncReadExt;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(patience, async {
            while let Ok(1..) = self.reader.read(&mut sink).await {}
        })
        .await;
    }
}

fn text(bytes: Bytes) -> Result<Incoming, InboundError> {
    ByteString::try_from(bytes)
        .map(Incoming::Text)
        .map_err(|_| InboundError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN, opcode, masked with a fixed key.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn all(inbound: &mut Inbound) -> Vec<Result<Incoming, String>> {
        std::iter::from_fn(|| inbound.next_message())
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn whole_and_fragmented_messages_byte_by_byte() {
        let mut bytes = frame(true, 0x1, b"hello");
        bytes.extend(frame(false, 0x1, b"wo"));
        bytes.extend(frame(true, 0x9, b"p")); // a ping between fragments
        bytes.extend(frame(false, 0x0, b"r"));
        bytes.extend(frame(true, 0x0, b"ld"));
        bytes.extend(frame(true, 0x2, &[0, 255]));
        let mut inbound = Inbound::new(1024, 1024);
        let mut got = Vec::new();
        for b in bytes {
            inbound.feed(&[b]);
            got.extend(all(&mut inbound));
        }
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text("hello".into())),
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Text("world".into())),
                Ok(Incoming::Binary(Bytes::from_static(&[0, 255]))),
            ]
        );
    }

    #[test]
    fn a_message_over_the_limit_is_dropped_and_the_next_one_arrives() {
        let mut inbound = Inbound::new(1024, 8);
        inbound.feed(&frame(false, 0x1, b"12345"));
        inbound.feed(&frame(false, 0x0, b"67890"));
        inbound.feed(&frame(true, 0x0, b"more"));
        inbound.feed(&frame(true, 0x1, b"next"));
        let got = all(&mut inbound);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].as_ref().is_err_and(|e| e.contains("larger than 8")));
        assert_eq!(got[1], Ok(Incoming::Text("next".into())));
    }

    #[test]
    fn fatal_errors_end_decoding() {
        let mut inbound = Inbound::new(16, 1024);
        inbound.feed(&frame(true, 0x1, &[b'x'; 17]));
        inbound.feed(&frame(true, 0x1, b"after"));
        assert!(matches!(
            inbound.next_message(),
            Some(Err(InboundError::FrameTooLarge(16)))
        ));
        assert!(inbound.next_message().is_none());

        let mut inbound = Inbound::new(1024, 1024);
        inbound.feed(&frame(true, 0x1, &[0xff, 0xfe]));
        assert!(matches!(inbound.next_message(), Some(Err(InboundError::NotUtf8))));
        assert!(inbound.next_message().is_none());

        // A server accepts only masked frames from its clients.
        let mut inbound = Inbound::new(1024, 1024);
        inbound.feed(&[0x81, 0x02, b'h', b'i']);
        assert!(matches!(
            inbound.next_message(),
            Some(Err(InboundError::Protocol(_)))
        ));
        assert!(inbound.next_message().is_none());

        // A continuation without a first fragment.
        let mut inbound = Inbound::new(1024, 1024);
        inbound.feed(&frame(true, 0x0, b"orphan"));
        assert!(matches!(
            inbound.next_message(),
            Some(Err(InboundError::Protocol(_)))
        ));
    }

    #[tokio::test]
    async fn messages_from_the_reading_side_until_the_client_closes() {
        use tokio::io::AsyncWriteExt;
        let mut bytes = frame(true, 0x1, b"one");
        bytes.extend(frame(true, 0x1, b"two"));
        let (first, second) = bytes.split_at(4);
        let (ours, mut theirs) = tokio::io::duplex(64);
        let early = BytesMut::from(first);
        let (reader, _writer) = crate::binding::upgrade::Upgraded::new(Box::new(ours), early).split();
        let mut messages = Messages::new(reader, Inbound::new(64, 64));
        theirs.write_all(second).await.expect("write");
        assert_eq!(
            messages.recv().await.map(|r| r.ok()),
            Some(Some(Incoming::Text("one".into())))
        );
        assert_eq!(
            messages.recv().await.map(|r| r.ok()),
            Some(Some(Incoming::Text("two".into())))
        );
        drop(theirs);
        assert!(messages.recv().await.is_none());
    }

    #[test]
    fn a_close_carries_its_code_and_reason() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut inbound = Inbound::new(1024, 1024);
        inbound.feed(&frame(true, 0x8, &payload));
        match inbound.next_message() {
            Some(Ok(Incoming::Close(Some(reason)))) => {
                assert_eq!(u16::from(reason.code), 1000);
                assert_eq!(reason.description.as_deref(), Some("bye"));
            }
            other => panic!("{other:?}"),
        }
    }
}
