//! How bindings contribute forms to a TD. Each enabled binding implements [`FormProvider`]; the
//! publisher asks every provider for its forms, so forms are generated from the bindings that
//! actually run and never written by hand.
//!
//! This module defines the contract only; the forms themselves live with their binding.

use wot_td::hlist::{Cons, Nil};
use wot_td::protocol::{coap::CoapProtocol, http::HttpProtocol};
use wot_td::thing::{DefaultedFormOperations, FormOperation};

use crate::core::ExposedThing;

/// Where an affordance name cannot stand as it is in one path segment of a URI (RFC 3986 §3.3):
/// controls, space, the delimiters `/ ? # [ ]`, `%` itself, and what RFC 3986 never allows
/// (`" < > \ ^ ` { | }`). Bytes beyond ASCII are always encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// An affordance name as one path segment of a form's href, percent-encoded where it must be,
/// so that `colour temp` or `a/b` stay one segment and the href a valid URI reference. Names of
/// plain letters and digits come out unchanged. The HTTP binding decodes the segment back;
/// a CoAP client decodes it into its Uri-Path option (RFC 7252 §6.4).
pub fn path_segment(name: &str) -> impl std::fmt::Display + '_ {
    percent_encoding::utf8_percent_encode(name, PATH_SEGMENT)
}

/// The binding vocabularies a TD of ours may carry in its forms (`htv:*`, `cov:*`, `mqv:*`).
pub type TdExt = Cons<CoapProtocol, Cons<HttpProtocol, Cons<MqttProtocol, Nil>>>;

/// The MQTT binding template's form terms as its current draft writes them
/// (`"mqv:controlPacket": "publish"`, `"mqv:qos": "1"`); wot-td's own MQTT extension follows an
/// older draft (`"mqv:publish"`, `"quality:1"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MqvForm {
    /// `publish`, `subscribe` or `unsubscribe`.
    #[serde(
        rename = "mqv:controlPacket",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub control_packet: Option<String>,
    /// The topic a consumer publishes to.
    #[serde(rename = "mqv:topic", skip_serializing_if = "Option::is_none", default)]
    pub topic: Option<String>,
    /// The topic filter a consumer subscribes to.
    #[serde(rename = "mqv:filter", skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<String>,
    /// `"0"`, `"1"` or `"2"`.
    #[serde(rename = "mqv:qos", skip_serializing_if = "Option::is_none", default)]
    pub qos: Option<String>,
    /// Whether the messages are retained (the property can be read, not only observed).
    #[serde(rename = "mqv:retain", skip_serializing_if = "Option::is_none", default)]
    pub retain: Option<bool>,
}

/// The MQTT binding template as a wot-td extension: form terms only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MqttProtocol {}

impl wot_td::extend::ExtendableThing for MqttProtocol {
    type InteractionAffordance = ();
    type PropertyAffordance = ();
    type ActionAffordance = ();
    type EventAffordance = ();
    type Form = MqvForm;
    type ExpectedResponse = ();
    type DataSchema = ();
    type ObjectSchema = ();
    type ArraySchema = ();
}
/// One form of a TD, as wot-td models it.
pub type Form = wot_td::thing::Form<TdExt>;
/// The typed TD, as wot-td models it.
pub(crate) type Thing = wot_td::thing::Thing<TdExt>;

/// The public origins the TD's hrefs are built from, one per binding that has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Origins {
    /// `http://host:port` (no trailing slash), from the request's Host or `--base-url`.
    pub http: Option<String>,
    /// `coap://host:port`.
    pub coap: Option<String>,
    /// `coaps://host:port`, when the coaps (DTLS) port runs.
    pub coaps: Option<String>,
}

/// A binding's contribution to every TD: it appends the forms through which it serves each
/// part of the thing, with hrefs on the origins a client sees.
pub trait FormProvider: Send + Sync {
    /// Forms of the thing itself (readallproperties, subscribeallevents, ...).
    fn thing_forms(&self, thing: &ExposedThing, origins: &Origins, forms: &mut Vec<Form>);
    /// Forms of property `name`.
    fn property_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>);
    /// Forms of action `name`.
    fn action_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>);
    /// Forms of event `name`.
    fn event_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>);
    /// WoT Profile identifiers the binding conforms to.
    fn profiles(&self) -> &'static [&'static str] {
        &[]
    }
    /// JSON-LD prefixes the binding's form terms need, beyond the TD 1.1 context.
    fn context_prefixes(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// A form with the given operations and href; everything else empty.
pub fn form(ops: &[FormOperation], href: impl Into<String>) -> Form {
    Form {
        op: DefaultedFormOperations::Custom(ops.to_vec()),
        href: href.into(),
        content_type: None,
        content_coding: None,
        subprotocol: None,
        security: None,
        scopes: None,
        response: None,
        additional_responses: None,
        other: Default::default(),
    }
}
