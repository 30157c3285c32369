//! RFC 9457 problem details: the one builder of the JSON error object that the HTTP binding
//! sends as `application/problem+json`, that the WebSocket binding sends when it refuses an
//! upgrade, and that every Web Thing Protocol error message carries in its `error` member.
//!
//! It writes the members in one order (`type`, `title`, `status`, `detail`, then extensions)
//! and gives a core error the same extension members everywhere: where a payload broke its
//! schema (`pointer`, `rule`), which affordance was missing (`kind`, `name`), which property
//! refused the direction (`name`, `rule`). It must not decide a status or a type URI (each
//! binding maps `ErrorKind` to its own), know any envelope around the object, or import a
//! binding: it is the part of error encoding the bindings share, so that none imports another.

use serde_json::{Map, Value};

use crate::core::Error;

/// A problem-details object under construction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem(Map<String, Value>);

impl Problem {
    /// The four members every problem has.
    pub(crate) fn new(type_uri: &str, title: &str, status: u16, detail: impl Into<String>) -> Self {
        let mut members = Map::with_capacity(6);
        members.insert("type".into(), Value::from(type_uri));
        members.insert("title".into(), Value::from(title));
        members.insert("status".into(), Value::from(status));
        members.insert("detail".into(), Value::from(detail.into()));
        Problem(members)
    }

    /// The problem of a core error: its title, its message as `detail`, and the extension
    /// members that say where the request went wrong. The binding chooses `type_uri` and
    /// `status` from the error's kind.
    pub(crate) fn of_error(error: &Error, type_uri: &str, status: u16) -> Self {
        let problem = Problem::new(type_uri, error.title(), status, error.to_string());
        match error {
            Error::Schema(v) => problem
                .with("pointer", v.pointer.as_str())
                .with("rule", v.rule.as_str()),
            Error::AffordanceNotFound { kind, name } => {
                problem.with("kind", kind.to_string()).with("name", name.as_str())
            }
            Error::ReadOnly(name) => problem.with("name", name.as_str()).with("rule", "readOnly"),
            Error::WriteOnly(name) => problem.with("name", name.as_str()).with("rule", "writeOnly"),
            _ => problem,
        }
    }

    /// Adds an extension member (after the ones already there).
    pub(crate) fn with(mut self, member: &str, value: impl Into<Value>) -> Self {
        self.0.insert(member.into(), value.into());
        self
    }

    pub(crate) fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    /// The object serialised, e.g. as an HTTP body.
    pub(crate) fn into_json(self) -> String {
        Value::Object(self.0).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::SchemaViolation;

    #[test]
    fn members_come_in_one_order() {
        let p = Problem::new("/t", "Title", 418, "what happened").with("member", "thingID");
        assert_eq!(
            p.into_json(),
            r#"{"type":"/t","title":"Title","status":418,"detail":"what happened","member":"thingID"}"#
        );
    }

    #[test]
    fn a_core_error_says_where() {
        let schema = Error::Schema(SchemaViolation {
            pointer: "/level".into(),
            rule: "maximum".into(),
            message: "too big".into(),
        });
        assert_eq!(
            Problem::of_error(&schema, "/s", 400).into_json(),
            r#"{"type":"/s","title":"Schema violation","status":400,"detail":"too big (at /level, rule 'maximum')","pointer":"/level","rule":"maximum"}"#
        );
        assert_eq!(
            Problem::of_error(&Error::WriteOnly("secret".into()), "/w", 400).into_json(),
            r#"{"type":"/w","title":"Property is write-only","status":400,"detail":"property 'secret' is write-only","name":"secret","rule":"writeOnly"}"#
        );
        assert_eq!(
            Problem::of_error(&Error::event_not_found("e"), "/n", 404).into_json(),
            r#"{"type":"/n","title":"Affordance not found","status":404,"detail":"thing has no event named 'e'","kind":"event","name":"e"}"#
        );
        assert_eq!(
            Problem::of_error(&Error::Busy(3), "/b", 503).into_value()["detail"],
            "too many running actions (3); try again later"
        );
    }
}
