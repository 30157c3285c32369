//! The protocol-agnostic vocabulary every binding speaks: [`Operation`] in, [`Reply`] out.
//! The names follow the TD 1.1 operation types. No wire format is decided here.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::actions::ActionStatus;

/// What a client asks of a thing, whatever the protocol: the TD 1.1 operation types a binding
/// decodes and hands to [`Servient::handle`](super::Servient::handle). Subscriptions are not
/// operations: they are made with [`Servient::subscribe`](super::Servient::subscribe).
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// readproperty: the property's current value.
    ReadProperty(String),
    /// writeproperty: the value, validated against the property's DataSchema.
    WriteProperty(String, Value),
    /// readallproperties: every readable property, as one object.
    ReadAllProperties,
    /// readmultipleproperties: the named properties, as one object.
    ReadMultipleProperties(Vec<String>),
    /// writemultipleproperties: every value is checked before any is stored.
    WriteMultipleProperties(Map<String, Value>),
    /// invokeaction: the input is validated against the action's input schema.
    InvokeAction {
        /// The action.
        name: String,
        /// Its input, if any.
        input: Option<Value>,
    },
    /// queryaction: one instance's status.
    QueryAction {
        /// The action.
        name: String,
        /// The instance.
        id: String,
    },
    /// cancelaction: ends a running instance.
    CancelAction {
        /// The action.
        name: String,
        /// The instance.
        id: String,
    },
    /// queryallactions: the instances of every asynchronous action.
    QueryAllActions,
}

impl Operation {
    /// The TD `op` name.
    pub fn op_name(&self) -> &'static str {
        match self {
            Operation::ReadProperty(_) => "readproperty",
            Operation::WriteProperty(..) => "writeproperty",
            Operation::ReadAllProperties => "readallproperties",
            Operation::ReadMultipleProperties(_) => "readmultipleproperties",
            Operation::WriteMultipleProperties(_) => "writemultipleproperties",
            Operation::InvokeAction { .. } => "invokeaction",
            Operation::QueryAction { .. } => "queryaction",
            Operation::CancelAction { .. } => "cancelaction",
            Operation::QueryAllActions => "queryallactions",
        }
    }
}

/// The core's answer to an [`Operation`]; each binding encodes it in its own way.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A serialised JSON value (a property, or an object of properties).
    Value(Bytes),
    /// A write succeeded.
    Written,
    /// A synchronous action ended with this output (None: no output).
    Output(Option<Value>),
    /// An asynchronous action was accepted.
    Started(ActionStatus),
    /// An action instance's status (query), or its final status after cancel.
    Status(ActionStatus),
    /// An action instance was cancelled: its final status.
    Cancelled(ActionStatus),
    /// queryallactions: instances grouped by action name, newest first.
    AllStatuses(IndexMap<String, Vec<ActionStatus>>),
}
