//! Per-connection state of a Web Thing Protocol socket, sans-IO: what the consumer observes and
//! subscribes to (with the correlationID each notification must echo) and which asynchronous
//! action instances it started. Plain data and functions. (The keepalive clock, which the legacy
//! socket shares, is `binding::keepalive`.)
//!
//! Everything here is bounded by the thing's affordances or by a fixed cap, so a client cannot
//! grow it; it performs no IO and never touches the servient.

use std::collections::HashMap;

use indexmap::IndexMap;

use crate::core::{ExposedThing, Topic};

/// Asynchronous action instances one socket follows at most; the oldest is forgotten beyond it.
pub(crate) const MAX_TRACKED_ACTIONS: usize = 256;

/// The correlationID a subscription's notifications echo (None: the request had none).
pub(crate) type Correlation = Option<String>;

/// How a notification reaches this consumer: as the answer to which operation, echoing which
/// correlationID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery<'a> {
    pub(crate) operation: &'static str,
    pub(crate) correlation_id: Option<&'a str>,
}

/// What the consumer listens to. A repeated observe or subscribe replaces the earlier one
/// ("last subscription wins"); an un* of nothing is not an error.
#[derive(Debug, Default)]
pub(crate) struct Interests {
    properties: HashMap<String, Correlation>,
    all_properties: Option<Correlation>,
    events: HashMap<String, Correlation>,
    all_events: Option<Correlation>,
    actions: IndexMap<String, Correlation>,
}

impl Interests {
    pub(crate) fn is_empty(&self) -> bool {
        self.properties.is_empty()
            && self.all_properties.is_none()
            && self.events.is_empty()
            && self.all_events.is_none()
            && self.actions.is_empty()
    }

    /// The caller has checked that the property exists and is readable, so the map is bounded
    /// by the thing's properties.
    pub(crate) fn observe_property(&mut self, name: &str, correlation: Correlation) {
        self.properties.insert(name.to_owned(), correlation);
    }

    pub(crate) fn unobserve_property(&mut self, name: &str) {
        self.properties.remove(name);
    }

    pub(crate) fn observe_all_properties(&mut self, correlation: Correlation) {
        self.all_properties = Some(correlation);
    }

    pub(crate) fn unobserve_all_properties(&mut self) {
        self.all_properties = None;
    }

    /// The caller has checked that the event exists.
    pub(crate) fn subscribe_event(&mut self, name: &str, correlation: Correlation) {
        self.events.insert(name.to_owned(), correlation);
    }

    pub(crate) fn unsubscribe_event(&mut self, name: &str) {
        self.events.remove(name);
    }

    pub(crate) fn subscribe_all_events(&mut self, correlation: Correlation) {
        self.all_events = Some(correlation);
    }

    pub(crate) fn unsubscribe_all_events(&mut self) {
        self.all_events = None;
    }

    /// Follows an action instance this socket started, until its final status.
    pub(crate) fn track_action(&mut self, id: &str, correlation: Correlation) {
        self.actions.insert(id.to_owned(), correlation);
        while self.actions.len() > MAX_TRACKED_ACTIONS {
            self.actions.shift_remove_index(0);
        }
    }

    pub(crate) fn untrack_action(&mut self, id: &str) {
        self.actions.shift_remove(id);
    }

    pub(crate) fn tracked_actions(&self) -> usize {
        self.actions.len()
    }

    /// Whether (and as what) a notification about `topic` goes to this consumer. A property
    /// observed both by name and through observeallproperties is delivered once, as the
    /// specific observation.
    pub(crate) fn route(&self, topic: &Topic) -> Option<Delivery<'_>> {
        let (operation, correlation) = match topic {
            Topic::Property(name) => match self.properties.get(&**name) {
                Some(c) => ("observeproperty", c),
                None => ("observeallproperties", self.all_properties.as_ref()?),
            },
            Topic::Event(name) => match self.events.get(&**name) {
                Some(c) => ("subscribeevent", c),
                None => ("subscribeallevents", self.all_events.as_ref()?),
            },
            Topic::Action { id, .. } => ("invokeaction", self.actions.get(&**id)?),
        };
        Some(Delivery {
            operation,
            correlation_id: correlation.as_deref(),
        })
    }
}

/// Whether a request's `thingID` names this thing: its TD `id`, or a URL (http, https, ws or
/// wss) of its TD, whose path is `/things/{slug}`.
pub(crate) fn names_thing(thing: &ExposedThing, thing_id: &str) -> bool {
    if thing_id == thing.id {
        return true;
    }
    let Some((scheme, rest)) = thing_id.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https" | "ws" | "wss") {
        return false;
    }
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.trim_end_matches('/')
        .strip_prefix("/things/")
        .is_some_and(|slug| slug == thing.slug)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_with_last_subscription_winning() {
        let mut i = Interests::default();
        assert!(i.is_empty());
        let on: Topic = Topic::Property("on".into());
        assert_eq!(i.route(&on), None);
        i.observe_all_properties(None);
        assert_eq!(
            i.route(&on),
            Some(Delivery {
                operation: "observeallproperties",
                correlation_id: None
            })
        );
        i.observe_property("on", Some("a".into()));
        i.observe_property("on", Some("b".into()));
        assert_eq!(
            i.route(&on),
            Some(Delivery {
                operation: "observeproperty",
                correlation_id: Some("b")
            })
        );
        i.unobserve_property("on");
        i.unobserve_property("on");
        assert_eq!(i.route(&on).unwrap().operation, "observeallproperties");
        i.unobserve_all_properties();
        assert_eq!(i.route(&on), None);

        let faded = Topic::Event("faded".into());
        i.subscribe_event("faded", None);
        assert_eq!(i.route(&faded).unwrap().operation, "subscribeevent");
        assert_eq!(i.route(&Topic::Event("other".into())), None);
        i.subscribe_all_events(Some("e".into()));
        assert_eq!(
            i.route(&Topic::Event("other".into())).unwrap().correlation_id,
            Some("e")
        );
        i.unsubscribe_event("faded");
        i.unsubscribe_all_events();
        assert_eq!(i.route(&faded), None);
        assert!(i.is_empty());
    }

    #[test]
    fn tracked_actions_are_bounded() {
        let mut i = Interests::default();
        for n in 0..MAX_TRACKED_ACTIONS + 10 {
            i.track_action(&n.to_string(), None);
        }
        assert_eq!(i.tracked_actions(), MAX_TRACKED_ACTIONS);
        let oldest = Topic::Action {
            name: "fade".into(),
            id: "0".into(),
        };
        assert_eq!(i.route(&oldest), None);
        let newest = Topic::Action {
            name: "fade".into(),
            id: (MAX_TRACKED_ACTIONS + 9).to_string().into(),
        };
        assert_eq!(i.route(&newest).unwrap().operation, "invokeaction");
        i.untrack_action(&(MAX_TRACKED_ACTIONS + 9).to_string());
        assert_eq!(i.route(&newest), None);
    }

    #[test]
    fn thing_ids_and_urls_name_the_thing() {
        let thing = crate::core::ThingBuilder::new("lamp", json!({"title": "Lamp"}))
            .id("urn:uuid:1")
            .build()
            .unwrap();
        for yes in [
            "urn:uuid:1",
            "http://h:1/things/lamp",
            "https://h/things/lamp/",
            "ws://127.0.0.1:8080/things/lamp",
            "wss://h/things/lamp?x=1",
        ] {
            assert!(names_thing(&thing, yes), "{yes}");
        }
        for no in [
            "urn:uuid:2",
            "lamp",
            "http://h/things/lamp2",
            "http://h/things/lamp/properties",
            "ftp://h/things/lamp",
            "",
        ] {
            assert!(!names_thing(&thing, no), "{no}");
        }
    }
}
