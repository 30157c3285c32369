//! The directory TD served at `/.well-known/wot` when the runtime hosts several things: the TD of
//! a Thing Description Directory (WoT Discovery §7.3, `exploration-directory-description-type`),
//! derived from the W3C Thing Model `directory.tm.json`: `@type` ThingDirectory, the discovery
//! context, and the mandatory `things` property whose form reads `GET /things` with the
//! offset/limit/format URI variables. The optional TM affordances (create, update, delete,
//! search, notifications) are left out: this directory is read-only. Links lead to every TD.
//!
//! Pure: builds JSON from the things and origins; the HTTP binding serves it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::forms::Origins;
use super::publish::{TD_CONTEXT, TD_CONTEXT_1_0};
use crate::core::ExposedThing;

pub(crate) const DISCOVERY_CONTEXT: &str = "https://www.w3.org/2022/wot/discovery";

/// The `things` property of the directory Thing Model, with the form of this runtime.
fn things_property() -> Value {
    let td_array = json!({
        "description": "Plain list of Thing Descriptions",
        "type": "array",
        "items": {"description": "Thing Description", "type": "object"}
    });
    let collection = json!({
        "type": "object",
        "description": "Verbose payload with pagination information, see format Uri variable",
        "properties": {
            "@context": {"const": DISCOVERY_CONTEXT},
            "@type": {"const": "ThingCollection"},
            "@id": {"description": "URI of this collection", "type": "string"},
            "members": {
                "description": "Thing Descriptions",
                "type": "array",
                "items": {"description": "Thing Description", "type": "object"}
            },
            "total": {"description": "Total number of Thing Descriptions in this collection", "type": "number"},
            "next": {"description": "URI of the next page", "type": "string"}
        }
    });
    json!({
        "description": "Retrieve all Thing Descriptions",
        "readOnly": true,
        "oneOf": [td_array, collection],
        "uriVariables": {
            "offset": {"title": "Number of TDs to skip before the page", "type": "number", "default": 0},
            "limit": {"title": "Number of TDs in a page", "type": "number"},
            "format": {
                "title": "Payload format",
                "type": "string",
                "enum": ["array", "collection"],
                "default": "array"
            }
        },
        "forms": [{
            "op": "readproperty",
            "href": "things{?offset,limit,format}",
            "htv:methodName": "GET",
            "contentType": "application/ld+json",
            "response": {
                "description": "Success response",
                "htv:statusCodeValue": 200,
                "contentType": "application/ld+json",
                "htv:headers": [{"htv:fieldName": "Link"}]
            },
            "additionalResponses": [{
                "description": "Invalid query arguments",
                "contentType": "application/problem+json",
                "htv:statusCodeValue": 400
            }]
        }]
    })
}

pub(crate) fn directory_td(id: &str, things: &[Arc<ExposedThing>], origins: &Origins) -> Value {
    let links: Vec<Value> = things
        .iter()
        .map(|t| {
            json!({"rel": "item", "href": format!("things/{}", t.slug), "type": "application/td+json", "title": t.title()})
        })
        .collect();
    let mut td = json!({
        "@context": [TD_CONTEXT_1_0, TD_CONTEXT, DISCOVERY_CONTEXT, {"@language": "en"}],
        "@type": "ThingDirectory",
        "id": id,
        "title": "WoT runtime directory",
        "description": format!("The {} things this runtime hosts; read 'things' for every TD.", things.len()),
        "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
        "security": "nosec_sc",
        "properties": {"things": things_property()},
        "links": links
    });
    if let Some(http) = &origins.http {
        td["base"] = json!(format!("{http}/"));
    }
    td
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_directory_thing_model_and_validates() {
        let thing = crate::core::ThingBuilder::new("lamp", json!({"title": "Lamp"}))
            .build()
            .unwrap();
        let td = directory_td(
            "urn:uuid:1",
            &[thing],
            &Origins {
                http: Some("http://h:1".into()),
                coap: None,
                coaps: None,
            },
        );
        let violations = crate::td::validate::td_violations(&td);
        assert!(violations.is_empty(), "{violations:#?}");
        assert_eq!(td["@type"], "ThingDirectory");
        assert_eq!(td["@context"][2], DISCOVERY_CONTEXT);
        // The `things` property keeps the Thing Model's schema and form, minus its placeholder.
        let tm: Value = serde_json::from_str(include_str!("w3c/directory.tm.json")).unwrap();
        let ours = &td["properties"]["things"];
        let model = &tm["properties"]["things"];
        assert_eq!(ours["oneOf"], model["oneOf"]);
        assert_eq!(ours["uriVariables"], model["uriVariables"]);
        assert_eq!(ours["forms"][0]["response"], model["forms"][0]["response"]);
        assert_eq!(ours["forms"][0]["href"], "things{?offset,limit,format}");
        assert_eq!(td["links"][0]["href"], "things/lamp");
    }
}
