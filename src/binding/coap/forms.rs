//! The CoAP binding's forms (CoAP binding template, SPEC-CHECKLIST §4.3): absolute `coap://`
//! hrefs (the TD's `base` is the HTTP origin), `cov:method` written wherever the method is not
//! the binding's default (and always on query and cancel, §8 item 2), and observe forms marked
//! `subprotocol: "cov:observe"` for the consumers that still require it (§8 item 6).
//!
//! It describes the routes of `router`; it must not invent paths the router does not serve,
//! nor offer a form the access policy (`access`) refuses. Under `--auth` the plain `coap://`
//! forms it does offer state their own security (`nosec_sc`), since plain CoAP takes no
//! credentials. When the coaps port runs (`Origins::coaps`), every operation also gets a
//! `coaps://` form stating `psk_sc` (TD 1.1 PSKSecurityScheme): a session with a pre-shared key
//! may do everything.

use wot_td::protocol::coap::{Form as CovForm, Method};
use wot_td::thing::{DefaultedFormOperations, FormOperation as Op};

use super::access::{Access, PSK};

use crate::core::ExposedThing;
use crate::td::{Form, FormProvider, Origins, form, path_segment};

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

    /// Adds the form when the access policy serves every operation in it (plain CoAP), or
    /// always, stating the PSK scheme (coaps).
    fn admit(&self, forms: &mut Vec<Form>, secure: bool, mut f: Form) {
        let DefaultedFormOperations::Custom(ops) = &f.op else {
            return;
        };
        if secure {
            f.security = Some(vec![PSK.to_owned()]);
            forms.push(f);
            return;
        }
        if !self.access.allows_form(ops) {
            return;
        }
        if let Some(name) = self.access.form_security() {
            f.security = Some(vec![name.to_owned()]);
        }
        forms.push(f);
    }
}

/// The origins CoAP forms go to: plain, then secure.
fn each_origin(origins: &Origins) -> impl Iterator<Item = (&str, bool)> {
    [(&origins.coap, false), (&origins.coaps, true)]
        .into_iter()
        .filter_map(|(o, secure)| o.as_deref().map(|o| (o, secure)))
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
        for (origin, secure) in each_origin(origins) {
            let t = format!("{origin}/things/{}", thing.slug);
            if !thing.properties.is_empty() {
                self.admit(
                    forms,
                    secure,
                    coap(&[Op::ReadAllProperties], format!("{t}/properties"), None),
                );
                if thing.properties.values().any(|p| !p.read_only) {
                    self.admit(
                        forms,
                        secure,
                        coap(&[Op::WriteMultipleProperties], format!("{t}/properties"), None),
                    );
                }
                self.admit(
                    forms,
                    secure,
                    observe(
                        &[Op::ObserveAllProperties, Op::UnobserveAllProperties],
                        format!("{t}/properties"),
                    ),
                );
            }
            if thing.actions.values().any(|a| !a.synchronous) {
                self.admit(
                    forms,
                    secure,
                    coap(&[Op::QueryAllActions], format!("{t}/actions"), None),
                );
            }
            if !thing.events.is_empty() {
                self.admit(
                    forms,
                    secure,
                    observe(
                        &[Op::SubscribeAllEvents, Op::UnsubscribeAllEvents],
                        format!("{t}/events"),
                    ),
                );
            }
        }
    }

    fn property_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(p) = thing.properties.get(name) else {
            return;
        };
        for (origin, secure) in each_origin(origins) {
            let href = format!("{origin}/things/{}/properties/{}", thing.slug, path_segment(name));
            if !p.write_only {
                self.admit(forms, secure, coap(&[Op::ReadProperty], href.clone(), None));
            }
            if !p.read_only {
                self.admit(forms, secure, coap(&[Op::WriteProperty], href.clone(), None));
            }
            if p.observable && !p.write_only {
                self.admit(
                    forms,
                    secure,
                    observe(&[Op::ObserveProperty, Op::UnobserveProperty], href),
                );
            }
        }
    }

    fn action_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        let Some(a) = thing.actions.get(name) else {
            return;
        };
        for (origin, secure) in each_origin(origins) {
            let href = format!("{origin}/things/{}/actions/{}", thing.slug, path_segment(name));
            self.admit(forms, secure, coap(&[Op::InvokeAction], href.clone(), None));
            if !a.synchronous {
                let instance = format!("{href}/{{actionID}}");
                self.admit(
                    forms,
                    secure,
                    coap(&[Op::QueryAction], instance.clone(), Some(Method::Get)),
                );
                self.admit(
                    forms,
                    secure,
                    coap(&[Op::CancelAction], instance, Some(Method::Delete)),
                );
            }
        }
    }

    fn event_forms(&self, thing: &ExposedThing, name: &str, origins: &Origins, forms: &mut Vec<Form>) {
        if !thing.events.contains_key(name) {
            return;
        }
        for (origin, secure) in each_origin(origins) {
            let href = format!("{origin}/things/{}/events/{}", thing.slug, path_segment(name));
            self.admit(
                forms,
                secure,
                observe(&[Op::SubscribeEvent, Op::UnsubscribeEvent], href),
            );
        }
    }

    fn context_prefixes(&self) -> &'static [(&'static str, &'static str)] {
        &[(COV_PREFIX, COV_NAMESPACE)]
    }
}
