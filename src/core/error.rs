//! The one error type of the runtime core, and its one classification.
//!
//! Every failure a client can cause, or the runtime can suffer while serving a request, is a
//! variant of [`Error`]. [`Error::kind`] sorts the variants into the few [`ErrorKind`]s that
//! decide what a client is told (not found, bad request, ...); each binding maps the kind, not
//! the variant, once (HTTP status, CoAP code, Web Thing Protocol error, legacy status), so a new
//! variant is classified here and nowhere else. This module must not know any wire format: no
//! status numbers, no protocol types.

use std::fmt;

/// Where and how a payload broke its DataSchema.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaViolation {
    /// JSON pointer into the payload ("" is the payload itself).
    pub pointer: String,
    /// The JSON Schema keyword that failed (`type`, `maximum`, `required`, ...).
    pub rule: String,
    /// A sentence a person can read.
    pub message: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{} (at {at}, rule '{}')", self.message, self.rule)
    }
}

/// Which kind of affordance a name was looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffordanceKind {
    /// A property.
    Property,
    /// An action.
    Action,
    /// An event.
    Event,
}

impl fmt::Display for AffordanceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AffordanceKind::Property => "property",
            AffordanceKind::Action => "action",
            AffordanceKind::Event => "event",
        })
    }
}

/// What kind of failure an [`Error`] is: the one decision every binding turns into its own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The thing, affordance or action instance named does not exist.
    NotFound,
    /// The request cannot be taken as sent: its payload is malformed or breaks the DataSchema,
    /// an action got input it does not take, or the operation does not apply to the affordance
    /// (querying a synchronous action). Sending it again unchanged fails again.
    BadRequest,
    /// The property exists but not in this direction: a write to a read-only property, a read
    /// or observation of a write-only one. A bad request too, but a protocol that addresses
    /// each property as a resource with methods (CoAP) says that the method is not allowed.
    WrongDirection,
    /// The request contradicts the target's state: the action instance has already ended.
    Conflict,
    /// A limit is full for now (running actions), or a proxied thing's remote is away; the
    /// same request may succeed later.
    Unavailable,
    /// A proxied thing's remote answered with an error or with something unusable.
    BadGateway,
    /// A proxied thing's remote did not answer in time.
    GatewayTimeout,
    /// The runtime or the thing's behaviour failed; the client is not at fault.
    Internal,
}

/// Every error the core reports. [`Error::kind`] groups the variants by what a binding does
/// with them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No thing has this slug.
    #[error("no thing named '{0}'")]
    ThingNotFound(String),
    /// The thing has no such property, action or event.
    #[error("thing has no {kind} named '{name}'")]
    AffordanceNotFound {
        /// Where the name was looked up.
        kind: AffordanceKind,
        /// The name.
        name: String,
    },
    /// The action has no such instance (or it left the bounded history).
    #[error("no instance '{id}' of action '{action}'")]
    ActionInstanceNotFound {
        /// The action.
        action: String,
        /// The instance id asked for.
        id: String,
    },
    /// A write to a read-only property.
    #[error("property '{0}' is read-only")]
    ReadOnly(String),
    /// A read or observation of a write-only property.
    #[error("property '{0}' is write-only")]
    WriteOnly(String),
    /// An action without an input schema got input.
    #[error("action '{0}' takes no input")]
    UnexpectedInput(String),
    /// The payload could not be parsed (or was empty where a value is needed).
    #[error("payload is not valid JSON: {0}")]
    MalformedPayload(String),
    /// The value breaks the affordance's DataSchema.
    #[error("{0}")]
    Schema(SchemaViolation),
    /// A synchronous action cannot be queried or cancelled: it has no instances.
    #[error("action '{0}' is synchronous and cannot be queried or cancelled")]
    NotQueryable(String),
    /// The action instance ended before it could be cancelled.
    #[error("action instance '{0}' has already ended")]
    AlreadyEnded(String),
    /// The thing runs as many actions as it may (the limit is given).
    #[error("too many running actions ({0}); try again later")]
    Busy(usize),
    /// The action's handler failed, saying why.
    #[error("action failed: {0}")]
    ActionFailed(String),
    /// The runtime failed (a TD that cannot be built, storage that failed, ...).
    #[error("internal error: {0}")]
    Internal(String),
    /// A proxied thing's remote failed the request (an error answer, an unusable answer, a
    /// refused connection), saying how.
    #[error("the remote thing failed: {0}")]
    Upstream(String),
    /// A proxied thing's remote did not answer in time.
    #[error("the remote thing did not answer: {0}")]
    UpstreamTimeout(String),
    /// A proxied thing's remote is known to be away; the bridge is reconnecting.
    #[error("the remote thing is unreachable: {0}")]
    UpstreamAway(String),
}

impl Error {
    pub(crate) fn property_not_found(name: &str) -> Self {
        Error::AffordanceNotFound {
            kind: AffordanceKind::Property,
            name: name.to_owned(),
        }
    }
    pub(crate) fn action_not_found(name: &str) -> Self {
        Error::AffordanceNotFound {
            kind: AffordanceKind::Action,
            name: name.to_owned(),
        }
    }
    pub(crate) fn event_not_found(name: &str) -> Self {
        Error::AffordanceNotFound {
            kind: AffordanceKind::Event,
            name: name.to_owned(),
        }
    }

    /// The classification every binding maps: the only place a variant is sorted.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ThingNotFound(_)
            | Error::AffordanceNotFound { .. }
            | Error::ActionInstanceNotFound { .. } => ErrorKind::NotFound,
            Error::UnexpectedInput(_)
            | Error::MalformedPayload(_)
            | Error::Schema(_)
            | Error::NotQueryable(_) => ErrorKind::BadRequest,
            Error::ReadOnly(_) | Error::WriteOnly(_) => ErrorKind::WrongDirection,
            Error::AlreadyEnded(_) => ErrorKind::Conflict,
            Error::Busy(_) | Error::UpstreamAway(_) => ErrorKind::Unavailable,
            Error::ActionFailed(_) | Error::Internal(_) => ErrorKind::Internal,
            Error::Upstream(_) => ErrorKind::BadGateway,
            Error::UpstreamTimeout(_) => ErrorKind::GatewayTimeout,
        }
    }

    /// A short, stable title for problem details (RFC 9457 `title`).
    pub fn title(&self) -> &'static str {
        match self {
            Error::ThingNotFound(_) => "Thing not found",
            Error::AffordanceNotFound { .. } => "Affordance not found",
            Error::ActionInstanceNotFound { .. } => "Action instance not found",
            Error::ReadOnly(_) => "Property is read-only",
            Error::WriteOnly(_) => "Property is write-only",
            Error::UnexpectedInput(_) => "Action takes no input",
            Error::MalformedPayload(_) => "Malformed payload",
            Error::Schema(_) => "Schema violation",
            Error::NotQueryable(_) => "Action is synchronous",
            Error::AlreadyEnded(_) => "Action already ended",
            Error::Busy(_) => "Too many running actions",
            Error::ActionFailed(_) => "Action failed",
            Error::Internal(_) => "Internal error",
            Error::Upstream(_) => "Remote thing failed",
            Error::UpstreamTimeout(_) => "Remote thing timed out",
            Error::UpstreamAway(_) => "Remote thing unreachable",
        }
    }

    /// A URI reference naming the problem type (RFC 9457 `type`), relative to the server.
    pub fn type_uri(&self) -> &'static str {
        match self {
            Error::ThingNotFound(_) => "/problems/thing-not-found",
            Error::AffordanceNotFound { .. } => "/problems/affordance-not-found",
            Error::ActionInstanceNotFound { .. } => "/problems/action-instance-not-found",
            Error::ReadOnly(_) => "/problems/read-only",
            Error::WriteOnly(_) => "/problems/write-only",
            Error::UnexpectedInput(_) => "/problems/unexpected-input",
            Error::MalformedPayload(_) => "/problems/malformed-payload",
            Error::Schema(_) => "/problems/schema-violation",
            Error::NotQueryable(_) => "/problems/not-queryable",
            Error::AlreadyEnded(_) => "/problems/already-ended",
            Error::Busy(_) => "/problems/busy",
            Error::ActionFailed(_) => "/problems/action-failed",
            Error::Internal(_) => "/problems/internal",
            Error::Upstream(_) => "/problems/upstream-failed",
            Error::UpstreamTimeout(_) => "/problems/upstream-timeout",
            Error::UpstreamAway(_) => "/problems/upstream-away",
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
impl Error {
    /// How many variants `Error` has; [`Error::one_of_each`] holds one value of each.
    pub(crate) const VARIANTS: usize = 16;

    /// One value of every variant, for tests that must cover them all (each binding's mapping).
    pub(crate) fn one_of_each() -> Vec<Error> {
        vec![
            Error::ThingNotFound("nothing".into()),
            Error::property_not_found("p"),
            Error::ActionInstanceNotFound {
                action: "fade".into(),
                id: "a1".into(),
            },
            Error::ReadOnly("temperature".into()),
            Error::WriteOnly("secret".into()),
            Error::UnexpectedInput("toggle".into()),
            Error::MalformedPayload("expected value at line 1 column 1".into()),
            Error::Schema(SchemaViolation {
                pointer: "/level".into(),
                rule: "maximum".into(),
                message: "500 is greater than the maximum of 100".into(),
            }),
            Error::NotQueryable("toggle".into()),
            Error::AlreadyEnded("a1".into()),
            Error::Busy(64),
            Error::ActionFailed("the command exited with 3".into()),
            Error::Internal("the state writer stopped".into()),
            Error::Upstream("coap://device/things/lamp answered 4.04".into()),
            Error::UpstreamTimeout("coap://device/things/lamp did not answer within 5 s".into()),
            Error::UpstreamAway("coap://device/things/lamp since 12:00:00Z".into()),
        ]
    }

    /// The variant's position. The match has no wildcard, so adding a variant stops this from
    /// compiling until it is numbered here (and `VARIANTS` and `one_of_each` are extended).
    pub(crate) fn ordinal(&self) -> usize {
        match self {
            Error::ThingNotFound(_) => 0,
            Error::AffordanceNotFound { .. } => 1,
            Error::ActionInstanceNotFound { .. } => 2,
            Error::ReadOnly(_) => 3,
            Error::WriteOnly(_) => 4,
            Error::UnexpectedInput(_) => 5,
            Error::MalformedPayload(_) => 6,
            Error::Schema(_) => 7,
            Error::NotQueryable(_) => 8,
            Error::AlreadyEnded(_) => 9,
            Error::Busy(_) => 10,
            Error::ActionFailed(_) => 11,
            Error::Internal(_) => 12,
            Error::Upstream(_) => 13,
            Error::UpstreamTimeout(_) => 14,
            Error::UpstreamAway(_) => 15,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_kind() {
        use ErrorKind::*;
        let want = [
            NotFound,
            NotFound,
            NotFound,
            WrongDirection,
            WrongDirection,
            BadRequest,
            BadRequest,
            BadRequest,
            BadRequest,
            Conflict,
            Unavailable,
            Internal,
            Internal,
            BadGateway,
            GatewayTimeout,
            Unavailable,
        ];
        for e in Error::one_of_each() {
            assert_eq!(e.kind(), want[e.ordinal()], "{e:?}");
        }
    }

    #[test]
    fn one_of_each_holds_every_variant_once() {
        let ordinals: Vec<usize> = Error::one_of_each().iter().map(Error::ordinal).collect();
        assert_eq!(ordinals, (0..Error::VARIANTS).collect::<Vec<_>>());
    }
}
