//! Server-Sent Events and longpoll on top of a core subscription (WoT Profile HTTP SSE).
//!
//! A frame is `id: <RFC 3339 time>/<sequence>`, `event: <affordance name>`, `data: <JSON>`; it
//! is encoded once per notification and shared by every SSE subscriber. The id carries the
//! thing's notification sequence number after the time of the change, so that a client that
//! reconnects with `Last-Event-ID` resumes exactly after the last notification it saw (see
//! [`resume_point`]). Keep-alive comments are sent while idle; a lagging subscriber is told in a
//! comment; every stream ends when the server shuts down, and when its subscription ends (the
//! thing was removed, or reloaded with the observed affordance changed): the client's
//! reconnection then finds the new affordance, or a 404.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header;
use bytes::Bytes;
use tokio::sync::watch;

use crate::core::{EncodingSlot, Notification, Received, SeenUpTo, Subscription};
use crate::limits::Permit;

pub(crate) const EVENT_STREAM: &str = "text/event-stream";

fn frame(n: &Notification) -> Bytes {
    let data: &[u8] = if n.data.is_empty() { b"null" } else { &n.data };
    let mut out = Vec::with_capacity(data.len() + n.topic.name().len() + 64);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(n.timestamp.as_bytes());
    out.push(b'/');
    out.extend_from_slice(n.seq.to_string().as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(n.topic.name().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Where a client's `Last-Event-ID` says it left off: `<time>/<sequence>` as this module writes
/// ids, or a bare sequence number. Anything else (an id of another server) resumes nowhere.
pub(crate) fn resume_point(last_event_id: &str) -> Option<SeenUpTo> {
    let (timestamp, seq) = match last_event_id.trim().rsplit_once('/') {
        Some((time, seq)) => (Some(time.to_owned()), seq),
        None => (None, last_event_id.trim()),
    };
    Some(SeenUpTo {
        seq: seq.parse().ok()?,
        timestamp,
    })
}

struct StreamState {
    subscription: Subscription,
    /// Held for the life of the stream: its slot in the subscriber limits.
    _permit: Permit,
    shutdown: watch::Receiver<bool>,
    keepalive: tokio::time::Interval,
    opened: bool,
}

/// A `text/event-stream` response that forwards the subscription until the client goes away or
/// the server shuts down.
pub(crate) fn response(
    subscription: Subscription,
    permit: Permit,
    shutdown: watch::Receiver<bool>,
    keepalive: Duration,
) -> HttpResponse {
    let mut interval = tokio::time::interval(keepalive);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = StreamState {
        subscription,
        _permit: permit,
        shutdown,
        keepalive: interval,
        opened: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if !st.opened {
            st.opened = true;
            st.keepalive.reset();
            // An immediate comment flushes the headers so the client knows it is subscribed.
            return Some((
                Ok::<_, actix_web::Error>(Bytes::from_static(b": subscribed\n\n")),
                st,
            ));
        }
        if *st.shutdown.borrow() {
            return None;
        }
        let chunk = tokio::select! {
            received = st.subscription.recv() => match received {
                Received::Notification(n) => n.encoded(EncodingSlot::Sse, frame),
                Received::Lagged(missed) => Bytes::from(format!(": lagged, {missed} notifications dropped\n\n")),
                Received::Closed(_) => return None,
            },
            _ = st.keepalive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            _ = st.shutdown.changed() => return None,
        };
        Some((Ok(chunk), st))
    });
    HttpResponse::Ok()
        .content_type(EVENT_STREAM)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// Waits for the next matching notification (longpoll). `None` when the wait timed out or the
/// server is shutting down.
pub(crate) async fn next(
    mut subscription: Subscription,
    mut shutdown: watch::Receiver<bool>,
    wait: Duration,
) -> Option<std::sync::Arc<Notification>> {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            received = subscription.recv() => match received {
                Received::Notification(n) => return Some(n),
                Received::Lagged(_) => continue,
                Received::Closed(_) => return None,
            },
            _ = &mut deadline => return None,
            _ = shutdown.changed() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_ids_name_a_sequence_number() {
        assert_eq!(
            resume_point("2026-12-02T10:00:00.5Z/42"),
            Some(SeenUpTo {
                seq: 42,
                timestamp: Some("2026-12-02T10:00:00.5Z".into())
            })
        );
        assert_eq!(
            resume_point("7"),
            Some(SeenUpTo {
                seq: 7,
                timestamp: None
            })
        );
        assert_eq!(resume_point("2026-12-02T10:00:00Z"), None);
        assert_eq!(resume_point("x/y"), None);
    }
}
