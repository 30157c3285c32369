//! The CoAP binding's forms (CoAP binding template, SPEC-CHECKLIST §4.3): absolute `coap://`
//! hrefs (the TD's `base` is the HTTP origin), `cov:method` written wherever the method is not
//! the binding's default (and always on query and cancel, §8 item 2), and observe forms marked
//! `subprotocol: "cov:observe"` for the consumers that still require it (§8 item 6).
//!
//! It describes the routes of `router`; it must not invent paths the router does not serve,
//! nor offer a form the access policy (`access`) refuses. Under `--auth` the forms it does
//! offer state their own security (`nosec_sc`), since CoAP takes no credentials.

use wot_td::protocol::coap::{Form as CovForm, Method};
use wot_td::thing::{DefaultedFormOperations, FormOperation as Op};

use super::access::Access;

use crate::core::ExposedThing;
use crate::td::{Form, FormProvider, Origins, form};

pub(crate) const COV_PREFIX: &str = "cov";
pub(crate) const COV_NAMESPACE: &str = "https://www.w3.org/2019/wot/coap#";
pub(crate) const OBSERVE_SUBPROTOCOL: &str = "cov:observe";

/// Contributes CoAP forms to every TD when the CoAP origin is known.
#[derive(Debug, Default)]
pub struct CoapForms {
    pub(crate) access: Access,
}

impl CoapForms {
    pub(crate) fn new(access: Access) -> Self {
        CoapForms { access }
    }

    /// Adds the form when the access policy serves every operation in it.
    fn admit(&self, forms: &mut Vec<Form>, mut f: Form) {
        let DefaultedFormOperations::Custom(ops) = &f.op else {
            return;
        };
        if !self.access.allows_form(ops) {
            return;
        }
        if let Some(name) = self.access.form_security() {
            f.security = Some(vec![name.to_owned()]);
        }
        forms.push(f);
    }
}

fn coap(ops: &[Op], href: String, method: Option<Method>) -> Form {
    let mut f = form(ops, href);
    f.other.head = CovForm {
        method,
        ..Default::default()
    };
    f
}

fn observe(ops: &[Op], href: String) -> Form {
    let mut f = coap(ops, href, None);
    f.subprotocol = Some(OBSERVE_SUBPROTOCOL.into());
    f
}

impl FormProvider for CoapForms {
    fn thing_forms(&self, thing: &ExposedThing, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(origin) = &origins.coap else {
            return;
        };
        let t = format!("{origin}/things/{}", thing.slug);
        if !thing.properties.is_empty() {
            self.admit(
                forms,
                coap(&[Op::ReadAllProperties], format!("{t}/properties"), None),
            );
            if thing.properties.values().any(|p| !p.read_only) {
                self.admit(
                    forms,
                    coap(&[Op::WriteMultipleProperties], format!("{t}/properties"), None),
                );
            }
            self.admit(
                forms,
                observe(
                    &[Op::ObserveAllProperties, Op::UnobserveAllProperties],
                    format!("{t}/properties"),
                ),
            );
        }
        if thing.actions.values().any(|a| !a.synchronous) {
            self.admit(forms, coap(&[Op::QueryAllActions], format!("{t}/actions"), None));
        }
        if !thing.events.is_empty() {
            self.admit(
                forms,
                observe(
                    &[Op::SubscribeAllEvents, Op::UnsubscribeAllEvents],
                    format!("{t}/events"),
                ),
            );
        }
    }

    fn property_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let (Some(origin), Some(p)) = (&origins.coap, thing.properties.get(name)) else {
            return;
        };
        let href = format!("{origin}/things/{}/properties/{name}", thing.slug);
        if !p.write_only {
            self.admit(forms, coap(&[Op::ReadProperty], href.clone(), None));
        }
        if !p.read_only {
            self.admit(forms, coap(&[Op::WriteProperty], href.clone(), None));
        }
        if p.observable && !p.write_only {
            self.admit(
                forms,
                observe(&[Op::ObserveProperty, Op::UnobserveProperty], href),
            );
        }
    }

    fn action_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let (Some(origin), Some(a)) = (&origins.coap, thing.actions.get(name)) else {
            return;
        };
        let href = format!("{origin}/things/{}/actions/{name}", thing.slug);
        self.admit(forms, coap(&[Op::InvokeAction], href.clone(), None));
        if !a.synchronous {
            let instance = format!("{href}/{{actionID}}");
            self.admit(
                forms,
                coap(&[Op::QueryAction], instance.clone(), Some(Method::Get)),
            );
            self.admit(forms, coap(&[Op::CancelAction], instance, Some(Method::Delete)));
        }
    }

    fn event_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(origin) = &origins.coap else {
            return;
        };
        if !thing.events.contains_key(name) {
            return;
        }
        let href = format!("{origin}/things/{}/events/{name}", thing.slug);
        self.admit(forms, observe(&[Op::SubscribeEvent, Op::UnsubscribeEvent], href));
    }

    fn context_prefixes(&self) -> &'static [(&'static str, &'static str)] {
        &[(COV_PREFIX, COV_NAMESPACE)]
    }
}
