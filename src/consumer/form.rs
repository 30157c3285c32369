//! Form selection: which form of an affordance (or of the Thing) performs an operation, over
//! which protocol. Pure: TD JSON and a base URL in, a resolved [`Chosen`] form out. It must not
//! perform I/O or know how a protocol's client works, only how a form names it.

use reqwest::Url;
use serde_json::{Map, Value};

use super::{ConsumerError, Protocol};
use crate::binding::ws::SUBPROTOCOL;

/// How an HTTP form observes or subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpMode {
    /// One request, one answer.
    Plain,
    /// Server-Sent Events.
    Sse,
    /// Repeated GETs, each answered by the next change.
    Longpoll,
}

/// A usable form, its href resolved against the TD's base.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chosen {
    pub(crate) protocol: Protocol,
    pub(crate) url: Url,
    /// `htv:methodName` or `cov:method`, when the form names one.
    pub(crate) method: Option<String>,
    pub(crate) http_mode: HttpMode,
    /// The form's `contentType`, when given.
    pub(crate) content_type: Option<String>,
}

/// The operation types a form has, with the TD's defaults when `op` is absent (TD 1.1 §5.4.4).
fn ops_of(form: &Map<String, Value>, default: &[&'static str]) -> Vec<String> {
    match form.get("op") {
        Some(Value::String(op)) => vec![op.clone()],
        Some(Value::Array(ops)) => ops.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => default.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The default `op` of a form on an affordance of this kind.
pub(crate) fn default_ops(kind: &str) -> &'static [&'static str] {
    match kind {
        "properties" => &["readproperty", "writeproperty"],
        "actions" => &["invokeaction"],
        "events" => &["subscribeevent", "unsubscribeevent"],
        _ => &[],
    }
}

/// Picks the first form in TD order that performs `op` over a protocol this consumer speaks,
/// restricted to `via` when given, except that SSE beats longpoll. Forms whose scheme or subprotocol no client here handles are
/// skipped; when none is left the error says what the forms offered.
pub(crate) fn choose(
    forms: Option<&Value>,
    default: &[&'static str],
    op: &'static str,
    affordance: Option<&str>,
    base: &Url,
    via: Option<Protocol>,
) -> Result<Chosen, ConsumerError> {
    let none = |reason: String| ConsumerError::NoUsableForm {
        op,
        affordance: affordance.map(str::to_owned),
        via,
        reason,
    };
    let forms = match forms {
        Some(Value::Array(forms)) => forms,
        _ => return Err(none("it has no forms".into())),
    };
    let mut seen: Vec<String> = Vec::new();
    let mut usable: Vec<Chosen> = Vec::new();
    for form in forms.iter().filter_map(Value::as_object) {
        if !ops_of(form, default).iter().any(|o| o == op) {
            continue;
        }
        let Some(href) = form.get("href").and_then(Value::as_str) else {
            continue;
        };
        let Ok(url) = base.join(href) else {
            seen.push(format!("{href} (not a URL)"));
            continue;
        };
        let subprotocol = form.get("subprotocol").and_then(Value::as_str);
        let Some((protocol, http_mode)) = classify(&url, subprotocol) else {
            seen.push(describe(&url, subprotocol));
            continue;
        };
        if via.is_some_and(|v| v != protocol) {
            seen.push(describe(&url, subprotocol));
            continue;
        }
        let method = form
            .get("htv:methodName")
            .or_else(|| form.get("cov:method"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let content_type = form.get("contentType").and_then(Value::as_str).map(str::to_owned);
        usable.push(Chosen {
            protocol,
            url,
            method,
            http_mode,
            content_type,
        });
    }
    // A longpoll form loses the changes between two polls; when the TD also offers SSE (ours
    // list longpoll first, for consumers that cannot stream), the stream wins.
    let has_sse = usable.iter().any(|c| c.http_mode == HttpMode::Sse);
    if let Some(chosen) = usable
        .into_iter()
        .find(|c| !(has_sse && c.http_mode == HttpMode::Longpoll))
    {
        return Ok(chosen);
    }
    if seen.is_empty() {
        Err(none(format!("no form has op '{op}'")))
    } else {
        Err(none(format!("the forms for it are {}", seen.join(", "))))
    }
}

fn describe(url: &Url, subprotocol: Option<&str>) -> String {
    match subprotocol {
        Some(sub) => format!("{}: ({sub})", url.scheme()),
        None => format!("{}:", url.scheme()),
    }
}

/// The protocol of a form, None when no client here speaks it.
fn classify(url: &Url, subprotocol: Option<&str>) -> Option<(Protocol, HttpMode)> {
    match (url.scheme(), subprotocol) {
        ("http" | "https", None) => Some((Protocol::Http, HttpMode::Plain)),
        ("http" | "https", Some("sse")) => Some((Protocol::Http, HttpMode::Sse)),
        ("http" | "https", Some("longpoll")) => Some((Protocol::Http, HttpMode::Longpoll)),
        ("coap", None | Some("cov:observe")) => Some((Protocol::Coap, HttpMode::Plain)),
        ("ws", Some(sub)) if sub == SUBPROTOCOL => Some((Protocol::Ws, HttpMode::Plain)),
        _ => None,
    }
}

/// Expands `{name}` in a form's URL (an action's `{actionID}`), percent-encoding the value.
pub(crate) fn expand(url: &Url, name: &str, value: &str) -> Result<Url, ConsumerError> {
    // Url percent-encodes the braces of a template it parsed.
    let text = url
        .as_str()
        .replace(&format!("%7B{name}%7D"), &encode_segment(value));
    let text = text.replace(&format!("{{{name}}}"), &encode_segment(value));
    Url::parse(&text).map_err(|e| ConsumerError::BadUrl {
        url: text.clone(),
        reason: e.to_string(),
    })
}

fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:8080/").unwrap()
    }

    fn forms() -> Value {
        json!([
            {"op": ["readproperty"], "href": "things/lamp/properties/on"},
            {"op": ["observeproperty"], "href": "things/lamp/longpoll/properties/on", "subprotocol": "longpoll"},
            {"op": ["observeproperty"], "href": "things/lamp/properties/on", "subprotocol": "sse"},
            {"op": ["readproperty", "observeproperty"], "href": "ws://127.0.0.1:8080/things/lamp", "subprotocol": "webthingprotocol"},
            {"op": "readproperty", "href": "coap://127.0.0.1:5683/things/lamp/properties/on"},
            {"op": ["readproperty"], "href": "mqtt://broker/lamp/on"}
        ])
    }

    #[test]
    fn the_first_form_in_td_order_wins_and_hrefs_resolve_against_the_base() {
        let chosen = choose(Some(&forms()), &[], "readproperty", Some("on"), &base(), None).unwrap();
        assert_eq!(chosen.protocol, Protocol::Http);
        assert_eq!(
            chosen.url.as_str(),
            "http://127.0.0.1:8080/things/lamp/properties/on"
        );
        let chosen = choose(Some(&forms()), &[], "observeproperty", Some("on"), &base(), None).unwrap();
        assert_eq!(
            chosen.http_mode,
            HttpMode::Sse,
            "SSE beats the longpoll form listed before it"
        );
        let longpoll_only = json!([{"op": "observeproperty", "href": "lp", "subprotocol": "longpoll"}]);
        let chosen = choose(
            Some(&longpoll_only),
            &[],
            "observeproperty",
            Some("on"),
            &base(),
            None,
        )
        .unwrap();
        assert_eq!(chosen.http_mode, HttpMode::Longpoll);
    }

    #[test]
    fn via_restricts_the_protocol() {
        let ws = choose(
            Some(&forms()),
            &[],
            "readproperty",
            Some("on"),
            &base(),
            Some(Protocol::Ws),
        )
        .unwrap();
        assert_eq!(ws.url.as_str(), "ws://127.0.0.1:8080/things/lamp");
        let coap = choose(
            Some(&forms()),
            &[],
            "readproperty",
            Some("on"),
            &base(),
            Some(Protocol::Coap),
        )
        .unwrap();
        assert_eq!(coap.protocol, Protocol::Coap);
        let err = choose(
            Some(&forms()),
            &[],
            "observeproperty",
            Some("on"),
            &base(),
            Some(Protocol::Coap),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConsumerError::NoUsableForm {
                    via: Some(Protocol::Coap),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unusable_forms_are_named_in_the_error() {
        let only_mqtt = json!([{"op": "readproperty", "href": "mqtt://broker/x"}]);
        let err = choose(Some(&only_mqtt), &[], "readproperty", Some("x"), &base(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no usable form for readproperty of 'x': the forms for it are mqtt:"
        );
        let err = choose(Some(&only_mqtt), &[], "writeproperty", Some("x"), &base(), None).unwrap_err();
        assert!(
            err.to_string().ends_with("no form has op 'writeproperty'"),
            "{err}"
        );
    }

    #[test]
    fn a_form_without_op_has_the_affordance_kinds_defaults() {
        let forms = json!([{"href": "things/lamp/properties/on"}]);
        let chosen = choose(
            Some(&forms),
            default_ops("properties"),
            "writeproperty",
            Some("on"),
            &base(),
            None,
        );
        assert!(chosen.is_ok());
        let chosen = choose(
            Some(&forms),
            default_ops("properties"),
            "observeproperty",
            Some("on"),
            &base(),
            None,
        );
        assert!(chosen.is_err());
    }

    #[test]
    fn uri_variables_expand_percent_encoded() {
        let url = base().join("things/lamp/actions/fade/{actionID}").unwrap();
        let expanded = expand(&url, "actionID", "a b/c").unwrap();
        assert_eq!(
            expanded.as_str(),
            "http://127.0.0.1:8080/things/lamp/actions/fade/a%20b%2Fc"
        );
    }
}
