//! The directory TD served at `/.well-known/wot` when the runtime hosts several things: a TD of
//! `@type` ThingDirectory (WoT Discovery §7.3) whose `things` property reads the list of TDs and
//! whose links lead to each thing's TD.

use serde_json::{Value, json};

use super::forms::Origins;
use super::publish::TD_CONTEXT;
use crate::core::ExposedThing;
use std::sync::Arc;

pub const DISCOVERY_CONTEXT: &str = "https://www.w3.org/2022/wot/discovery";

pub fn directory_td(id: &str, things: &[Arc<ExposedThing>], origins: &Origins) -> Value {
    let base = origins.http.as_deref().map(|o| format!("{o}/"));
    let links: Vec<Value> = things
        .iter()
        .map(|t| json!({"rel": "item", "href": format!("things/{}", t.slug), "type": "application/td+json", "title": t.title()}))
        .collect();
    let mut td = json!({
        "@context": [TD_CONTEXT, DISCOVERY_CONTEXT, {"@language": "en"}],
        "@type": "ThingDirectory",
        "id": id,
        "title": "WoT runtime directory",
        "description": "The things this runtime hosts; read 'things' for every TD.",
        "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
        "security": "nosec_sc",
        "properties": {
            "things": {
                "description": "Every Thing Description hosted here",
                "type": "array",
                "items": {"type": "object"},
                "readOnly": true,
                "forms": [{
                    "op": "readproperty",
                    "href": "things",
                    "htv:methodName": "GET",
                    "contentType": "application/ld+json",
                    "response": {"contentType": "application/ld+json"}
                }]
            }
        },
        "links": links
    });
    if let Some(base) = base {
        td["base"] = json!(base);
    }
    td
}
