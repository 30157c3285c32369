//! A remote TD as a thing file: what the bridge serves again is the remote's description
//! (titles, `@type`, `@context` extensions, DataSchemas, `observable`, `synchronous`) without
//! what belongs to the remote's endpoints (forms, base, security, id, links, uriVariables),
//! which the local bindings and id store write anew. Pure: no I/O.

use serde_json::{Map, Value};

/// Top-level TD members that describe the remote's endpoints, not the Thing.
const ENDPOINT_KEYS: &[&str] = &[
    "forms",
    "base",
    "security",
    "securityDefinitions",
    "id",
    "links",
    "profile",
    "uriVariables",
];

/// Affordance members that describe the remote's endpoints (and `runtime`, which a thing
/// file would take as a behaviour).
const AFFORDANCE_ENDPOINT_KEYS: &[&str] =
    &["forms", "uriVariables", "subscription", "cancellation", "runtime"];

/// The thing file document of a remote TD.
pub(crate) fn thing_file(td: &Value) -> Value {
    let mut doc = td.clone();
    let Some(root) = doc.as_object_mut() else {
        return doc;
    };
    for key in ENDPOINT_KEYS {
        root.shift_remove(*key);
    }
    for kind in ["properties", "actions", "events"] {
        if let Some(Value::Object(affordances)) = root.get_mut(kind) {
            affordances.values_mut().for_each(strip_affordance);
        }
    }
    doc
}

fn strip_affordance(affordance: &mut Value) {
    if let Some(object) = affordance.as_object_mut() {
        let object: &mut Map<String, Value> = object;
        for key in AFFORDANCE_ENDPOINT_KEYS {
            object.shift_remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_description_stays_and_the_endpoints_go() {
        let td = json!({
            "@context": ["https://www.w3.org/2019/wot/td/v1", {"saref": "https://w3id.org/saref#"}],
            "@type": "saref:LightSwitch",
            "id": "urn:uuid:remote",
            "title": "Lamp",
            "titles": {"de": "Lampe"},
            "base": "coap://device/",
            "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
            "security": "nosec_sc",
            "links": [{"href": "/x"}],
            "forms": [{"href": "things/lamp/properties", "op": "readallproperties"}],
            "properties": {"on": {"type": "boolean", "observable": true, "forms": [{"href": "p/on"}]}},
            "actions": {"fade": {"input": {"type": "integer"}, "synchronous": false, "forms": [{"href": "a"}]}},
            "events": {"overheated": {"data": {"type": "number"}, "subscription": {"type": "string"}, "forms": [{"href": "e"}]}}
        });
        assert_eq!(
            thing_file(&td),
            json!({
                "@context": ["https://www.w3.org/2019/wot/td/v1", {"saref": "https://w3id.org/saref#"}],
                "@type": "saref:LightSwitch",
                "title": "Lamp",
                "titles": {"de": "Lampe"},
                "properties": {"on": {"type": "boolean", "observable": true}},
                "actions": {"fade": {"input": {"type": "integer"}, "synchronous": false}},
                "events": {"overheated": {"data": {"type": "number"}}}
            })
        );
    }
}
