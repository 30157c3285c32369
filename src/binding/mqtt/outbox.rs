//! What the runtime has to publish, bounded whatever the broker does. Retained messages (TDs,
//! property values) are kept per topic, the newest replacing an older one not yet sent: a slow
//! or absent broker gets the current state, never a backlog of it. Other messages (events,
//! replies) wait in a queue of fixed size that drops its oldest message when full, counting
//! what it dropped. Plain data: the client task drains it while connected.

use std::collections::VecDeque;

use bytes::Bytes;
use indexmap::IndexMap;

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) retain: bool,
    /// MQTT 5 correlation data, for a reply to a request that carried it.
    pub(crate) correlation: Option<Bytes>,
}

/// The bounded queue of messages waiting for the broker.
#[derive(Debug)]
pub(crate) struct Outbox {
    retained: IndexMap<String, Bytes>,
    transient: VecDeque<Message>,
    capacity: usize,
    dropped: u64,
}

impl Outbox {
    /// At most `capacity` transient messages wait (retained ones are one per topic).
    pub(crate) fn new(capacity: usize) -> Self {
        Outbox {
            retained: IndexMap::new(),
            transient: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// The current retained payload of `topic`, replacing one still waiting.
    pub(crate) fn retain(&mut self, topic: String, payload: Bytes) {
        self.retained.insert(topic, payload);
    }

    /// A message that is not retained; the oldest waiting one goes when the queue is full
    /// (then this says true).
    pub(crate) fn push(&mut self, message: Message) -> bool {
        let full = self.transient.len() == self.capacity;
        if full {
            self.transient.pop_front();
            self.dropped += 1;
        }
        self.transient.push_back(message);
        full
    }

    /// The next message to publish: retained state first, in the order it was first queued.
    pub(crate) fn pop(&mut self) -> Option<Message> {
        if let Some((topic, payload)) = self.retained.shift_remove_index(0) {
            return Some(Message {
                topic,
                payload,
                retain: true,
                correlation: None,
            });
        }
        self.transient.pop_front()
    }

    /// Puts back a message the client could not take yet, to go first next time; a retained one
    /// that was replaced meanwhile stays replaced.
    pub(crate) fn unpop(&mut self, message: Message) {
        if message.retain {
            if !self.retained.contains_key(&message.topic) {
                self.retained.shift_insert(0, message.topic, message.payload);
            }
        } else {
            self.transient.push_front(message);
            if self.transient.len() > self.capacity {
                self.transient.pop_back();
                self.dropped += 1;
            }
        }
    }

    /// How many transient messages were dropped since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.transient.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u8) -> Message {
        Message {
            topic: "wot/t/events/e".into(),
            payload: Bytes::from(vec![n]),
            retain: false,
            correlation: None,
        }
    }

    #[test]
    fn a_retained_topic_keeps_only_its_newest_value_and_goes_first() {
        let mut o = Outbox::new(4);
        o.push(event(1));
        o.retain("wot/t/properties/p".into(), Bytes::from_static(b"1"));
        o.retain("wot/t/properties/q".into(), Bytes::from_static(b"7"));
        o.retain("wot/t/properties/p".into(), Bytes::from_static(b"2"));
        let first = o.pop().expect("one");
        assert_eq!(
            (first.topic.as_str(), &first.payload[..], first.retain),
            ("wot/t/properties/p", &b"2"[..], true)
        );
        assert_eq!(o.pop().expect("two").topic, "wot/t/properties/q");
        assert_eq!(o.pop(), Some(event(1)));
        assert!(o.pop().is_none() && o.is_empty());
    }

    #[test]
    fn transient_messages_are_bounded_by_dropping_the_oldest() {
        let mut o = Outbox::new(3);
        for n in 0..10 {
            o.push(event(n));
        }
        assert_eq!(o.dropped(), 7);
        let left: Vec<u8> = std::iter::from_fn(|| o.pop()).map(|m| m.payload[0]).collect();
        assert_eq!(left, [7, 8, 9]);
    }

    #[test]
    fn a_message_put_back_goes_first_unless_a_newer_value_replaced_it() {
        let mut o = Outbox::new(2);
        o.retain("a".into(), Bytes::from_static(b"1"));
        let taken = o.pop().expect("a");
        o.retain("a".into(), Bytes::from_static(b"2"));
        o.unpop(taken);
        assert_eq!(&o.pop().expect("a").payload[..], b"2");
        o.push(event(1));
        o.push(event(2));
        let taken = o.pop().expect("1");
        o.push(event(3));
        o.unpop(taken);
        let left: Vec<u8> = std::iter::from_fn(|| o.pop()).map(|m| m.payload[0]).collect();
        assert_eq!(left, [1, 2]);
        assert_eq!(o.dropped(), 1);
    }
}
