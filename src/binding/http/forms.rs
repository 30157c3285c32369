//! The HTTP binding's forms: exactly the URL contract of DESIGN.md §1.2, with an explicit
//! `htv:methodName` on every form (one op per form, except the SSE observe/unobserve pair), SSE
//! forms per the WoT Profile and longpoll forms for consumers that ignore named SSE events.

use wot_td::protocol::http::{Form as HtvForm, Method};
use wot_td::thing::FormOperation as Op;

use crate::core::ExposedThing;
use crate::td::{Form, FormProvider, Origins, form};

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

fn longpoll(op: Op, href: String) -> Form {
    let mut f = http(&[op], href, Method::Get);
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
            forms.push(sse(
                &[Op::ObserveAllProperties, Op::UnobserveAllProperties],
                format!("{t}/properties"),
            ));
            forms.push(longpoll(
                Op::ObserveAllProperties,
                format!("{t}/longpoll/properties"),
            ));
        }
        if thing.actions.values().any(|a| !a.synchronous) {
            forms.push(http(&[Op::QueryAllActions], format!("{t}/actions"), Method::Get));
        }
        if !thing.events.is_empty() {
            forms.push(sse(
                &[Op::SubscribeAllEvents, Op::UnsubscribeAllEvents],
                format!("{t}/events"),
            ));
            forms.push(longpoll(Op::SubscribeAllEvents, format!("{t}/longpoll/events")));
        }
    }

    fn property_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(p) = thing.properties.get(name).filter(|_| origins.http.is_some()) else {
            return;
        };
        let href = format!("things/{}/properties/{name}", thing.slug);
        if !p.write_only {
            forms.push(http(&[Op::ReadProperty], href.clone(), Method::Get));
        }
        if !p.read_only {
            forms.push(http(&[Op::WriteProperty], href.clone(), Method::Put));
        }
        if p.observable && !p.write_only {
            forms.push(sse(&[Op::ObserveProperty, Op::UnobserveProperty], href));
            forms.push(longpoll(
                Op::ObserveProperty,
                format!("things/{}/longpoll/properties/{name}", thing.slug),
            ));
        }
    }

    fn action_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(a) = thing.actions.get(name).filter(|_| origins.http.is_some()) else {
            return;
        };
        let href = format!("things/{}/actions/{name}", thing.slug);
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
        let href = format!("things/{}/events/{name}", thing.slug);
        forms.push(sse(&[Op::SubscribeEvent, Op::UnsubscribeEvent], href));
        forms.push(longpoll(
            Op::SubscribeEvent,
            format!("things/{}/longpoll/events/{name}", thing.slug),
        ));
    }

    fn profiles(&self) -> &'static [&'static str] {
        &[PROFILE_BASIC, PROFILE_SSE]
    }
}
