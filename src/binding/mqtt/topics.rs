//! The MQTT binding's topic scheme, under a prefix (default `wot/`), one topic per affordance
//! as the binding template asks. Names are percent-encoded where MQTT gives a character a
//! meaning (`/`, `+`, `#`) or where it would be ambiguous (`%`, space, control characters), so
//! any affordance name maps to exactly one topic level and back.
//!
//! | topic | who publishes | retained |
//! |---|---|---|
//! | `{prefix}{thing}/td` | the runtime: the TD | yes |
//! | `{prefix}{thing}/properties/{name}` | the runtime: the value, on change | yes |
//! | `{prefix}{thing}/properties/{name}/write` | a client: a new value | no |
//! | `{prefix}{thing}/actions/{name}` | a client: an invocation (its input) | no |
//! | `{prefix}{thing}/events/{name}` | the runtime: an occurrence | no |
//! | `{request topic}/reply` | the runtime: the answer to a request without an MQTT 5 response topic | no |
//!
//! Plain functions of strings: no I/O.

/// A request a client published, decoded from its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// writeproperty.
    Write { thing: String, property: String },
    /// invokeaction.
    Invoke { thing: String, action: String },
}

/// The topics of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix` (a trailing `/` is added when missing; an empty prefix is none).
    pub(crate) fn new(prefix: &str) -> Self {
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Topics { prefix }
    }

    pub(crate) fn td(&self, thing: &str) -> String {
        format!("{}{}/td", self.prefix, encode(thing))
    }

    pub(crate) fn property(&self, thing: &str, name: &str) -> String {
        format!("{}{}/properties/{}", self.prefix, encode(thing), encode(name))
    }

    pub(crate) fn write(&self, thing: &str, name: &str) -> String {
        format!("{}/write", self.property(thing, name))
    }

    pub(crate) fn action(&self, thing: &str, name: &str) -> String {
        format!("{}{}/actions/{}", self.prefix, encode(thing), encode(name))
    }

    pub(crate) fn event(&self, thing: &str, name: &str) -> String {
        format!("{}{}/events/{}", self.prefix, encode(thing), encode(name))
    }

    /// Where the answer to a request goes when the client named no response topic.
    pub(crate) fn reply(request_topic: &str) -> String {
        format!("{request_topic}/reply")
    }

    /// The filters the runtime subscribes to: every write and every invocation.
    pub(crate) fn request_filters(&self) -> [String; 2] {
        [
            format!("{}+/properties/+/write", self.prefix),
            format!("{}+/actions/+", self.prefix),
        ]
    }

    /// The request a topic carries, if it is one.
    pub(crate) fn request(&self, topic: &str) -> Option<Request> {
        let rest = topic.strip_prefix(&self.prefix)?;
        let levels: Vec<&str> = rest.split('/').collect();
        match levels.as_slice() {
            [thing, "properties", name, "write"] => Some(Request::Write {
                thing: decode(thing)?,
                property: decode(name)?,
            }),
            [thing, "actions", name] => Some(Request::Invoke {
                thing: decode(thing)?,
                action: decode(name)?,
            }),
            _ => None,
        }
    }
}

fn encode(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    for c in level.chars() {
        if matches!(c, '/' | '+' | '#' | '%' | ' ') || c.is_control() {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn decode(level: &str) -> Option<String> {
    let bytes = level.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = level.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_its_place_under_the_prefix() {
        let t = Topics::new("wot");
        assert_eq!(t.td("lamp"), "wot/lamp/td");
        assert_eq!(t.property("lamp", "on"), "wot/lamp/properties/on");
        assert_eq!(t.write("lamp", "on"), "wot/lamp/properties/on/write");
        assert_eq!(t.action("lamp", "fade"), "wot/lamp/actions/fade");
        assert_eq!(t.event("lamp", "faded"), "wot/lamp/events/faded");
        assert_eq!(
            Topics::reply("wot/lamp/actions/fade"),
            "wot/lamp/actions/fade/reply"
        );
        assert_eq!(
            t.request_filters(),
            ["wot/+/properties/+/write", "wot/+/actions/+"]
        );
        assert_eq!(Topics::new("").td("lamp"), "lamp/td");
    }

    #[test]
    fn requests_are_read_back_from_their_topics_and_nothing_else_is_one() {
        let t = Topics::new("wot/");
        assert_eq!(
            t.request("wot/lamp/properties/on/write"),
            Some(Request::Write {
                thing: "lamp".into(),
                property: "on".into()
            })
        );
        assert_eq!(
            t.request("wot/lamp/actions/fade"),
            Some(Request::Invoke {
                thing: "lamp".into(),
                action: "fade".into()
            })
        );
        for not in [
            "wot/lamp/properties/on",
            "wot/lamp/actions/fade/reply",
            "wot/lamp/properties/on/write/reply",
            "other/lamp/actions/fade",
            "wot/lamp/td",
            "wot/lamp/actions/%ZZ",
        ] {
            assert_eq!(t.request(not), None, "{not}");
        }
    }

    #[test]
    fn names_with_mqtt_characters_take_one_level_and_come_back() {
        let t = Topics::new("wot/");
        for name in ["a/b", "50%", "x+y#z", "température", "two words"] {
            let write = t.write("lamp", name);
            assert_eq!(write.matches('/').count(), 4, "{write}");
            assert!(!write.contains('+') && !write.contains('#'), "{write}");
            assert_eq!(
                t.request(&write),
                Some(Request::Write {
                    thing: "lamp".into(),
                    property: name.into()
                }),
                "{write}"
            );
        }
    }
}
