//! Taking over an HTTP/1.1 connection after `101 Switching Protocols`, for the endpoints of the
//! HTTP port that speak another protocol on it afterwards (both WebSockets).
//!
//! The HTTP port hands every request that asks to upgrade to actix-http's upgrade service, which
//! owns the connection from then on (`binding::http` builds the server that way). It still runs
//! the request through the port's routes and checks (Host, credentials, connection limit), so an
//! endpoint decides like any other handler, answering `101` after putting a [`Takeover`] in the
//! request's [`UpgradeSlot`]. The service writes the `101`, then runs the takeover with the
//! connection ([`Upgraded`]): the socket (plain TCP or TLS) and whatever the client sent after its
//! request. The connection lasts as long as the takeover does; the port's connection limit and
//! graceful shutdown count it until then.
//!
//! What lives here is the hand-over and the two sides of a taken-over connection ([`ReadSide`],
//! [`WriteSide`]), shared on the worker thread that accepted it. It must not know any protocol
//! spoken after the upgrade, nor decide whether an upgrade is accepted.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::{HttpMessage, HttpRequest};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream an upgraded connection runs on: plain TCP or TLS over it (or, in tests, an
/// in-memory pipe).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for T {}

/// What an endpoint does with the connection once the `101` is out. It runs on the worker
/// thread that accepted the connection, and the connection is closed when it ends.
pub(crate) type Takeover = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()>>>>;

/// Where an endpoint leaves its [`Takeover`] in a request that asks to upgrade. Only requests
/// handed to the HTTP port's upgrade service carry one: a request whose connection cannot be
/// taken over (HTTP/2, or an HTTP/1.1 request that did not ask to upgrade) has none.
#[derive(Clone, Default)]
pub(crate) struct UpgradeSlot(Rc<Cell<Option<Takeover>>>);

impl UpgradeSlot {
    /// The slot of a request, if its connection can be taken over.
    pub(crate) fn of(req: &HttpRequest) -> Option<UpgradeSlot> {
        req.extensions().get::<UpgradeSlot>().cloned()
    }

    /// Leaves what to do with the connection if the answer is `101`.
    pub(crate) fn take_over<F, Fut>(&self, run: F)
    where
        F: FnOnce(Upgraded) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.0
            .set(Some(Box::new(move |upgraded| Box::pin(run(upgraded)))));
    }

    /// For the upgrade service: what the endpoint left, if anything.
    pub(crate) fn take(&self) -> Option<Takeover> {
        self.0.take()
    }
}

/// A connection taken over after its `101`.
pub(crate) struct Upgraded {
    transport: Box<dyn Transport>,
    /// What the client sent after its request, read by the HTTP layer already.
    early: BytesMut,
}

impl Upgraded {
    pub(crate) fn new(transport: Box<dyn Transport>, early: BytesMut) -> Self {
        Upgraded { transport, early }
    }

    /// The two sides of the connection, for the reading task and for whoever writes (which may
    /// be another task of the same thread). The socket closes when both are dropped.
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        let transport = Rc::new(RefCell::new(self.transport));
        (
            ReadSide {
                transport: transport.clone(),
                early: self.early,
            },
            WriteSide { transport },
        )
    }
}

/// The reading side: what the client sent after its request first, then the socket.
pub(crate) struct ReadSide {
    transport: Rc<RefCell<Box<dyn Transport>>>,
    early: BytesMut,
}

impl AsyncRead for ReadSide {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        // The borrow ends with the call: the writing side borrows only inside its own calls, and
        // nothing of ours runs inside the transport's.
        Pin::new(&mut **this.transport.borrow_mut()).poll_read(cx, buf)
    }
}

/// The writing side, with the calls of `AsyncWrite` taking `&self`: the queue that owns it is
/// shared by a connection's task and its thread's fan-out relay.
pub(crate) struct WriteSide {
    transport: Rc<RefCell<Box<dyn Transport>>>,
}

impl WriteSide {
    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self.transport.borrow_mut()).poll_write(cx, bytes)
    }

    /// Pushes out what the transport holds back (TLS records); plain TCP holds nothing.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.transport.borrow_mut()).poll_flush(cx)
    }

    /// Ends the sending direction: TLS's close_notify, then TCP's FIN.
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.transport.borrow_mut()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn early_bytes_come_first_then_the_transport_and_both_sides_share_it() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let upgraded = Upgraded::new(Box::new(ours), BytesMut::from(&b"early "[..]));
        let (mut reader, writer) = upgraded.split();
        theirs.write_all(b"later").await.expect("write");
        let mut got = vec![0; 11];
        reader.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"early later");

        let written = std::future::poll_fn(|cx| writer.poll_write(cx, b"reply")).await;
        assert_eq!(written.expect("write"), 5);
        std::future::poll_fn(|cx| writer.poll_shutdown(cx))
            .await
            .expect("shutdown");
        let mut reply = Vec::new();
        theirs.read_to_end(&mut reply).await.expect("read to the end");
        assert_eq!(reply, b"reply");
    }

    #[test]
    fn a_slot_hands_over_what_was_left_in_it_once() {
        let slot = UpgradeSlot::default();
        assert!(slot.take().is_none());
        slot.clone().take_over(|_upgraded| async {});
        assert!(slot.take().is_some());
        assert!(slot.take().is_none());
    }
}
