//! The consumer's one error type: every way fetching a TD or performing an operation on a remote
//! Thing can fail, typed so that a caller (the CLI's exit codes, later the bridge's 502/504) can
//! decide per kind without reading sentences.

use std::fmt;
use std::time::Duration;

use crate::core::SchemaViolation;

use super::Protocol;

/// Why a consumer operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumerError {
    /// The URL cannot be used at all (unparsable, or a scheme no client here speaks).
    #[error("{url}: {reason}")]
    BadUrl {
        /// The URL as given or resolved.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answered: connection refused, name not resolved, no route.
    #[error("{url} is unreachable: {reason}")]
    Unreachable {
        /// Where the request went.
        url: String,
        /// The transport's reason.
        reason: String,
    },
    /// No answer within the time allowed.
    #[error("{url} did not answer within {}", secs(*after))]
    Timeout {
        /// Where the request went.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// The document fetched is not a Thing Description.
    #[error("{url} is not a Thing Description: {reason}")]
    NotATd {
        /// Where it was fetched from.
        url: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// The TD has no affordance of that name.
    #[error("the Thing has no {kind} named '{name}'{}", known_list(known))]
    UnknownAffordance {
        /// `property`, `action` or `event`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names the TD has, for the message.
        known: Vec<String>,
    },
    /// No form of the affordance (or the Thing) can perform the operation with the protocols
    /// allowed.
    #[error("no usable form for {op}{}{}: {reason}", on(affordance), via_text(*via))]
    NoUsableForm {
        /// The operation type (`readproperty`, ...).
        op: &'static str,
        /// The affordance, None for a Thing-level operation.
        affordance: Option<String>,
        /// The protocol the caller required, if any.
        via: Option<Protocol>,
        /// What the forms lacked.
        reason: String,
    },
    /// The value fails the affordance's DataSchema, checked before anything was sent.
    #[error("the value for '{affordance}' fails its schema: {violation}")]
    Schema {
        /// The property or action.
        affordance: String,
        /// Where and why.
        violation: SchemaViolation,
    },
    /// The value is refused before sending for a reason other than its schema (e.g. a write to a
    /// readOnly property).
    #[error("'{affordance}': {reason}")]
    NotAllowed {
        /// The property or action.
        affordance: String,
        /// Why.
        reason: String,
    },
    /// The remote Thing answered with an error status.
    #[error("{url} answered {status}{}", detail_text(detail))]
    Refused {
        /// Where the request went.
        url: String,
        /// The status as the protocol writes it (`404`, `4.04`, a WTP error's status).
        status: String,
        /// The problem's detail or the body's text, if any.
        detail: Option<String>,
    },
    /// The answer could not be understood (bad JSON/CBOR, a message of the wrong shape).
    #[error("{url}: malformed answer: {reason}")]
    Malformed {
        /// Where the answer came from.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// An asynchronous action ended as failed.
    #[error("action '{name}' failed{}", detail_text(detail))]
    ActionFailed {
        /// The action.
        name: String,
        /// The error the Thing reported.
        detail: Option<String>,
    },
    /// The observation or subscription ended from the remote side.
    #[error("{url}: the remote ended the {what}")]
    Ended {
        /// Where it was.
        url: String,
        /// `observation` or `subscription`.
        what: &'static str,
    },
}

impl ConsumerError {
    /// The kind of failure, for callers that map it (exit codes, gateway statuses).
    pub fn kind(&self) -> ConsumerErrorKind {
        use ConsumerErrorKind as K;
        match self {
            ConsumerError::BadUrl { .. } => K::BadInput,
            ConsumerError::Unreachable { .. } | ConsumerError::Timeout { .. } => K::Unreachable,
            ConsumerError::NotATd { .. } => K::NotATd,
            ConsumerError::UnknownAffordance { .. } | ConsumerError::NoUsableForm { .. } => K::NoForm,
            ConsumerError::Schema { .. } | ConsumerError::NotAllowed { .. } => K::BadInput,
            ConsumerError::Refused { .. }
            | ConsumerError::Malformed { .. }
            | ConsumerError::ActionFailed { .. }
            | ConsumerError::Ended { .. } => K::Remote,
        }
    }
}

/// The classification of a [`ConsumerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerErrorKind {
    /// The caller's input is wrong (URL, value); nothing was sent.
    BadInput,
    /// The remote could not be reached in time.
    Unreachable,
    /// The document is not a TD.
    NotATd,
    /// The TD offers no way to do what was asked.
    NoForm,
    /// The remote answered, with an error or something unusable.
    Remote,
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it has none)".into()
    } else {
        format!(" (it has: {})", known.join(", "))
    }
}

fn on(affordance: &Option<String>) -> String {
    affordance
        .as_ref()
        .map(|a| format!(" of '{a}'"))
        .unwrap_or_default()
}

fn via_text(via: Option<Protocol>) -> String {
    via.map(|p| format!(" via {p}")).unwrap_or_default()
}

fn detail_text(detail: &Option<String>) -> String {
    detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Coap => "coap",
            Protocol::Ws => "ws",
        })
    }
}
