//! The WebSocket binding's forms: one endpoint per thing, `ws://<host>/things/{id}` (`wss` behind
//! an https origin), `subprotocol: "webthingprotocol"`. The thing-level form carries the meta
//! operations; each affordance gets a form with its own operations on the same href, because
//! TD 1.1 allows only meta operations at thing level.
//!
//! It derives hrefs from the HTTP origin only; it must not describe what the socket does not do.

use wot_td::thing::FormOperation as Op;

use super::protocol::SUBPROTOCOL;
use crate::core::ExposedThing;
use crate::td::{Form, FormProvider, Origins, form};

/// Contributes Web Thing Protocol forms to every TD.
#[derive(Debug, Default)]
pub struct WsForms;

/// The socket URL of a thing: the HTTP origin with `http`→`ws`, `https`→`wss`.
pub(crate) fn endpoint(origins: &Origins, slug: &str) -> Option<String> {
    let http = origins.http.as_deref()?;
    let (scheme, rest) = http.split_once("://")?;
    let ws = match scheme {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    Some(format!("{ws}://{}/things/{slug}", rest.trim_end_matches('/')))
}

fn ws(ops: &[Op], href: String) -> Form {
    let mut f = form(ops, href);
    f.subprotocol = Some(SUBPROTOCOL.into());
    f
}

impl FormProvider for WsForms {
    fn thing_forms(&self, thing: &ExposedThing, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(href) = endpoint(origins, &thing.slug) else {
            return;
        };
        let mut ops = Vec::new();
        if !thing.properties.is_empty() {
            ops.extend([Op::ReadAllProperties, Op::ReadMultipleProperties]);
            if thing.properties.values().any(|p| !p.read_only) {
                ops.extend([Op::WriteAllProperties, Op::WriteMultipleProperties]);
            }
            if thing.properties.values().any(|p| !p.write_only) {
                ops.extend([Op::ObserveAllProperties, Op::UnobserveAllProperties]);
            }
        }
        if thing.actions.values().any(|a| !a.synchronous) {
            ops.push(Op::QueryAllActions);
        }
        if !thing.events.is_empty() {
            ops.extend([Op::SubscribeAllEvents, Op::UnsubscribeAllEvents]);
        }
        if !ops.is_empty() {
            forms.push(ws(&ops, href));
        }
    }

    fn property_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let (Some(p), Some(href)) = (thing.properties.get(name), endpoint(origins, &thing.slug)) else {
            return;
        };
        let mut ops = Vec::new();
        if !p.write_only {
            ops.push(Op::ReadProperty);
        }
        if !p.read_only {
            ops.push(Op::WriteProperty);
        }
        if p.observable && !p.write_only {
            ops.extend([Op::ObserveProperty, Op::UnobserveProperty]);
        }
        if !ops.is_empty() {
            forms.push(ws(&ops, href));
        }
    }

    fn action_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let (Some(a), Some(href)) = (thing.actions.get(name), endpoint(origins, &thing.slug)) else {
            return;
        };
        if a.synchronous {
            forms.push(ws(&[Op::InvokeAction], href));
        } else {
            forms.push(ws(&[Op::InvokeAction, Op::QueryAction, Op::CancelAction], href));
        }
    }

    fn event_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        if !thing.events.contains_key(name) {
            return;
        }
        if let Some(href) = endpoint(origins, &thing.slug) {
            forms.push(ws(&[Op::SubscribeEvent, Op::UnsubscribeEvent], href));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_follows_the_http_origin() {
        let o = |h: &str| Origins {
            http: Some(h.into()),
            coap: None,
            coaps: None,
        };
        assert_eq!(
            endpoint(&o("http://127.0.0.1:8080"), "lamp").as_deref(),
            Some("ws://127.0.0.1:8080/things/lamp")
        );
        assert_eq!(
            endpoint(&o("https://example.org/"), "lamp").as_deref(),
            Some("wss://example.org/things/lamp")
        );
        assert_eq!(endpoint(&o("coap://x"), "lamp"), None);
        assert_eq!(endpoint(&Origins::default(), "lamp"), None);
    }
}
