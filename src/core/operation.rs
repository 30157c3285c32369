//! The protocol-agnostic vocabulary every binding speaks: [`Operation`] in, [`Reply`] out.
//! The names follow the TD 1.1 operation types. No wire format is decided here.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::actions::ActionStatus;

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    ReadProperty(String),
    WriteProperty(String, Value),
    ReadAllProperties,
    ReadMultipleProperties(Vec<String>),
    WriteMultipleProperties(Map<String, Value>),
    InvokeAction { name: String, input: Option<Value> },
    QueryAction { name: String, id: String },
    CancelAction { name: String, id: String },
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
    Cancelled(ActionStatus),
    /// queryallactions: instances grouped by action name, newest first.
    AllStatuses(IndexMap<String, Vec<ActionStatus>>),
}
