//! The MQTT binding's forms, as the binding template writes them: `href` is the broker, and the
//! topic is `mqv:topic` (what a consumer publishes to) or `mqv:filter` (what it subscribes to).
//! node-wot's MQTT client (0.8) takes the topic from the href's path instead, so each href also
//! carries the same topic as its path, and the two always agree.
//!
//! It describes only what `client` does: retained property values (read and observe), writes
//! to `.../write`, invocations, events.

use wot_td::thing::FormOperation as Op;

use super::topics::Topics;
use crate::core::ExposedThing;
use crate::td::{Form, FormProvider, MqvForm, Origins, form};

/// The JSON-LD prefix of the MQTT binding's terms.
const MQV_PREFIX: &str = "mqv";
const MQV_NAMESPACE: &str = "https://www.w3.org/2019/wot/mqtt#";

/// Contributes MQTT forms to every TD.
#[derive(Debug, Clone)]
pub struct MqttForms {
    origin: String,
    topics: Topics,
}

impl MqttForms {
    /// Forms for a broker (its URL, without credentials) and a topic prefix.
    pub(crate) fn new(origin: String, prefix: &str) -> Self {
        MqttForms {
            origin,
            topics: Topics::new(prefix),
        }
    }

    fn form(&self, ops: &[Op], topic: String, subscribe: bool, retain: bool) -> Form {
        let mut f = form(ops, format!("{}/{topic}", self.origin));
        f.content_type = Some("application/json".into());
        f.other.tail.tail.head = MqvForm {
            control_packet: Some(if subscribe { "subscribe" } else { "publish" }.into()),
            topic: (!subscribe).then(|| topic.clone()),
            filter: subscribe.then_some(topic),
            qos: Some("1".into()),
            retain: retain.then_some(true),
        };
        f
    }
}

impl FormProvider for MqttForms {
    fn thing_forms(&self, _: &ExposedThing, _: &Origins, _: &mut Vec<Form>) {}

    fn property_forms(&self, thing: &ExposedThing, name: &str, _: &Origins, forms: &mut Vec<Form>) {
        let Some(p) = thing.properties.get(name) else {
            return;
        };
        if !p.write_only {
            // Retained, so a subscription reads the current value first (binding template:
            // readproperty comes with observeproperty).
            let ops: &[Op] = if p.observable {
                &[Op::ReadProperty, Op::ObserveProperty, Op::UnobserveProperty]
            } else {
                &[Op::ReadProperty]
            };
            forms.push(self.form(ops, self.topics.property(&thing.slug, name), true, true));
        }
        if !p.read_only {
            forms.push(self.form(
                &[Op::WriteProperty],
                self.topics.write(&thing.slug, name),
                false,
                false,
            ));
        }
    }

    fn action_forms(&self, thing: &ExposedThing, name: &str, _: &Origins, forms: &mut Vec<Form>) {
        if thing.actions.contains_key(name) {
            forms.push(self.form(
                &[Op::InvokeAction],
                self.topics.action(&thing.slug, name),
                false,
                false,
            ));
        }
    }

    fn event_forms(&self, thing: &ExposedThing, name: &str, _: &Origins, forms: &mut Vec<Form>) {
        if thing.events.contains_key(name) {
            forms.push(self.form(
                &[Op::SubscribeEvent, Op::UnsubscribeEvent],
                self.topics.event(&thing.slug, name),
                true,
                false,
            ));
        }
    }

    fn context_prefixes(&self) -> &'static [(&'static str, &'static str)] {
        &[(MQV_PREFIX, MQV_NAMESPACE)]
    }
}
