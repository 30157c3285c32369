//! The HTTP binding's forms: exactly the URL contract of DESIGN.md §1.2, SSE forms per the WoT
//! Profile and longpoll forms for consumers that ignore named SSE events.
//!
//! Every form names its `htv:methodName` (one op per form, except the observe/unobserve pairs),
//! except the longpoll forms: node-wot sends its longpoll handshake with the form's method, and
//! only without one does it send the `HEAD` the handshake route answers at once (a `GET` would
//! wait for the next change). Their method is the binding's default for the op, `GET`.
//!
//! Where an affordance can be observed both ways, the longpoll form comes first: consumers that
//! take the first form with the op (node-wot 0.7 and 0.9, and so the WebThings Gateway's
//! wot-adapter) get one they can use, and WoT Profile consumers pick the SSE form by its
//! `subprotocol`. Why, and what each client does: spec-notes/profile-http.md.

use wot_td::protocol::http::{Form as HtvForm, Method};
use wot_td::thing::FormOperation as Op;

use crate::core::ExposedThing;
use crate::td::{Form, FormProvider, Origins, form, path_segment};

pub(crate) const PROFILE_BASIC: &str = "https://www.w3.org/2022/wot/profile/http-basic/v1";
pub(crate) const PROFILE_SSE: &str = "https://www.w3.org/2022/wot/profile/http-sse/v1";

/// Contributes HTTP forms to every TD.
#[derive(Debug, Default)]
pub struct HttpForms;

fn http(ops: &[Op], href: String, method: Method) -> Form {
    let mut f = form(ops, href);
    f.other.tail.head = HtvForm {
        method_name: Some(method),
    };
    f
}

fn sse(ops: &[Op], href: String) -> Form {
    let mut f = http(ops, href, Method::Get);
    f.subprotocol = Some("sse".into());
    f
}

/// A longpoll form: `[observe, unobserve]` (one form for both, so that node-wot's unsubscribe
/// finds the subscription it made, which it keys by href), without `htv:methodName`.
fn longpoll(ops: &[Op], href: String) -> Form {
    let mut f = form(ops, href);
    f.subprotocol = Some("longpoll".into());
    f
}

impl FormProvider for HttpForms {
    fn thing_forms(&self, thing: &ExposedThing, origins: &Origins, forms: &mut Vec<Form>) {
        if origins.http.is_none() {
            return;
        }
        let t = format!("things/{}", thing.slug);
        if !thing.properties.is_empty() {
            forms.push(http(
                &[Op::ReadAllProperties],
                format!("{t}/properties"),
                Method::Get,
            ));
            if thing.properties.values().any(|p| !p.read_only) {
                forms.push(http(
                    &[Op::WriteMultipleProperties],
                    format!("{t}/properties"),
                    Method::Put,
                ));
            }
            forms.push(longpoll(
                &[Op::ObserveAllProperties, Op::UnobserveAllProperties],
                format!("{t}/longpoll/properties"),
            ));
            forms.push(sse(
                &[Op::ObserveAllProperties, Op::UnobserveAllProperties],
                format!("{t}/properties"),
            ));
        }
        if thing.actions.values().any(|a| !a.synchronous) {
            forms.push(http(&[Op::QueryAllActions], format!("{t}/actions"), Method::Get));
        }
        if !thing.events.is_empty() {
            forms.push(longpoll(
                &[Op::SubscribeAllEvents, Op::UnsubscribeAllEvents],
                format!("{t}/longpoll/events"),
            ));
            forms.push(sse(
                &[Op::SubscribeAllEvents, Op::UnsubscribeAllEvents],
                format!("{t}/events"),
            ));
        }
    }

    fn property_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(p) = thing.properties.get(name).filter(|_| origins.http.is_some()) else {
            return;
        };
        let href = format!("things/{}/properties/{}", thing.slug, path_segment(name));
        if !p.write_only {
            forms.push(http(&[Op::ReadProperty], href.clone(), Method::Get));
        }
        if !p.read_only {
            forms.push(http(&[Op::WriteProperty], href.clone(), Method::Put));
        }
        if p.observable && !p.write_only {
            forms.push(longpoll(
                &[Op::ObserveProperty, Op::UnobserveProperty],
                format!("things/{}/longpoll/properties/{}", thing.slug, path_segment(name)),
            ));
            forms.push(sse(&[Op::ObserveProperty, Op::UnobserveProperty], href));
        }
    }

    fn action_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(a) = thing.actions.get(name).filter(|_| origins.http.is_some()) else {
            return;
        };
        let href = format!("things/{}/actions/{}", thing.slug, path_segment(name));
        forms.push(http(&[Op::InvokeAction], href.clone(), Method::Post));
        if !a.synchronous {
            forms.push(http(
                &[Op::QueryAction],
                format!("{href}/{{actionID}}"),
                Method::Get,
            ));
            forms.push(http(
                &[Op::CancelAction],
                format!("{href}/{{actionID}}"),
                Method::Delete,
            ));
        }
    }

    fn event_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        if origins.http.is_none() || !thing.events.contains_key(name) {
            return;
        }
        let href = format!("things/{}/events/{}", thing.slug, path_segment(name));
        forms.push(longpoll(
            &[Op::SubscribeEvent, Op::UnsubscribeEvent],
            format!("things/{}/longpoll/events/{}", thing.slug, path_segment(name)),
        ));
        forms.push(sse(&[Op::SubscribeEvent, Op::UnsubscribeEvent], href));
    }

    fn profiles(&self) -> &'static [&'static str] {
        &[PROFILE_BASIC, PROFILE_SSE]
    }
}
