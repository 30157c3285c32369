//! The legacy "Web Thing Description" (Mozilla Web Thing API, HUBS.md §3 items 1-3) of an exposed
//! thing: the string `@context` `https://webthings.io/schemas`, `@type` as WebThings capability
//! names (see `capability`), `links` instead of `forms`, origin-relative hrefs under
//! `/webthing/{id}`, action inputs as plain JSON Schema, and the absolute `alternate` WebSocket
//! link that openHAB requires, built per request from the public origin.
//!
//! Pure: a template is made once per thing from its model; a request only adds its origin.

use serde_json::{Map, Value, json};

use super::capability::{self, Kind, Vocabulary};
use crate::core::ExposedThing;

pub(crate) const WEBTHINGS_CONTEXT: &str = "https://webthings.io/schemas";

/// Keys of a TD affordance that have no meaning in the legacy description.
const TD_ONLY: &[&str] = &[
    "forms",
    "uriVariables",
    "synchronous",
    "observable",
    "idempotent",
    "safe",
];
/// DataSchema keys lifted from an event's `data` onto the event, as Mozilla events carry them
/// (not `@type`: the event's own type is an event capability, the data's would not be).
const EVENT_DATA_KEYS: &[&str] = &[
    "type",
    "unit",
    "minimum",
    "maximum",
    "enum",
    "multipleOf",
    "items",
    "properties",
];

pub(crate) fn prefix(slug: &str) -> String {
    format!("/webthing/{slug}")
}

fn link(rel: &str, href: String) -> Value {
    json!({"rel": rel, "href": href})
}

fn copy_affordance(affordance: &Value) -> Map<String, Value> {
    affordance
        .as_object()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| !TD_ONLY.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// An affordance's `@type` as the one WebThings name of its kind that hubs compare with a
/// string (the first, if the file gave several), or none.
fn affordance_type(vocabulary: &Vocabulary, affordance: &Value, kind: Kind, a: &mut Map<String, Value>) {
    match vocabulary.names(affordance.get("@type"), kind).first() {
        Some(name) => a.insert("@type".into(), json!(name)),
        None => a.shift_remove("@type"),
    };
}

type Adjust<'a> = &'a dyn Fn(&Value, &mut Map<String, Value>);

/// One of `properties`, `actions`, `events`: each affordance without its TD-only keys, typed,
/// adjusted, with its Mozilla link.
fn section(
    (model, vocabulary): (&Value, &Vocabulary),
    base: &str,
    (kind, rel, typed): (&str, &str, Kind),
    adjust: Adjust<'_>,
) -> Value {
    let mut out = Map::new();
    for (name, affordance) in model.get(kind).and_then(Value::as_object).into_iter().flatten() {
        let mut a = copy_affordance(affordance);
        affordance_type(vocabulary, affordance, typed, &mut a);
        adjust(affordance, &mut a);
        a.insert(
            "links".into(),
            json!([link(
                rel,
                format!("{base}/{kind}/{}", crate::td::path_segment(name))
            )]),
        );
        out.insert(name.clone(), Value::Object(a));
    }
    Value::Object(out)
}

/// The origin-independent description of a thing.
pub(crate) fn template(thing: &ExposedThing, security: &(Value, Value)) -> Value {
    let model = &thing.model();
    let base = prefix(&thing.slug);
    let vocabulary = Vocabulary::of(model);
    let m = (model, &vocabulary);
    let properties = section(m, &base, ("properties", "property", Kind::Property), &|_, _| {});
    let actions = section(m, &base, ("actions", "action", Kind::Action), &|_, a| {
        // The Gateway compiles it with a strict Ajv, which throws on any TD term.
        if let Some(input) = a.get_mut("input") {
            *input = capability::plain_schema(input);
        }
    });
    let events = section(m, &base, ("events", "event", Kind::Event), &|affordance, a| {
        if let Some(data) = affordance.get("data").and_then(Value::as_object) {
            for key in EVENT_DATA_KEYS {
                if let Some(v) = data.get(*key) {
                    a.entry(*key).or_insert_with(|| v.clone());
                }
            }
        }
    });
    let mut d = Map::new();
    d.insert("id".into(), json!(thing.id));
    d.insert("title".into(), json!(thing.title()));
    d.insert("@context".into(), json!(WEBTHINGS_CONTEXT));
    let types = vocabulary.names(model.get("@type"), Kind::Thing);
    d.insert("@type".into(), json!(types));
    if let Some(description) = model.get("description").filter(|d| d.is_string()) {
        d.insert("description".into(), description.clone());
    }
    d.insert("href".into(), json!(base));
    d.insert("properties".into(), properties);
    d.insert("actions".into(), actions);
    d.insert("events".into(), events);
    d.insert(
        "links".into(),
        json!([
            link("properties", format!("{base}/properties")),
            link("actions", format!("{base}/actions")),
            link("events", format!("{base}/events")),
            {"rel": "describedby", "href": format!("/things/{}", thing.slug), "type": "application/td+json"},
        ]),
    );
    // The same scheme the TD states and the HTTP port enforces (nosec without --auth).
    d.insert("securityDefinitions".into(), security.0.clone());
    d.insert("security".into(), security.1.clone());
    Value::Object(d)
}

/// The description as served to one request: `base` and the absolute `alternate` WebSocket link
/// from the public origin (`http://host:port` or `https://...`).
pub(crate) fn for_origin(template: &Value, slug: &str, origin: &str) -> Value {
    let mut d = template.clone();
    let ws_origin = match origin.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", origin.strip_prefix("http://").unwrap_or(origin)),
    };
    let path = prefix(slug);
    if let Some(links) = d.get_mut("links").and_then(Value::as_array_mut) {
        links.push(link("alternate", format!("{ws_origin}{path}")));
    }
    d["base"] = json!(format!("{origin}{path}"));
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ThingBuilder;

    #[test]
    fn a_hub_can_parse_it() {
        let thing = ThingBuilder::new(
            "lamp",
            json!({"title": "Lamp", "@type": "Light",
                   "properties": {"on": {"type": "boolean", "observable": true, "@type": "OnOffProperty"}},
                   "actions": {"fade": {"synchronous": false, "input": {"type": "integer"}}},
                   "events": {"faded": {"data": {"type": "integer", "unit": "percent"}}}}),
        )
        .build()
        .unwrap();
        let security = (json!({"bearer_sc": {"scheme": "bearer"}}), json!("bearer_sc"));
        let d = for_origin(&template(&thing, &security), "lamp", "https://example.org:8443");
        assert_eq!(d["security"], "bearer_sc");
        assert_eq!(d["securityDefinitions"]["bearer_sc"]["scheme"], "bearer");
        assert_eq!(d["@context"], WEBTHINGS_CONTEXT);
        assert_eq!(d["@type"], json!(["Light"]));
        let alternate = d["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "alternate")
            .unwrap();
        assert_eq!(alternate["href"], "wss://example.org:8443/webthing/lamp");
        assert_eq!(
            d["properties"]["on"]["links"][0]["href"],
            "/webthing/lamp/properties/on"
        );
        assert_eq!(d["properties"]["on"]["@type"], "OnOffProperty");
        assert!(d["properties"]["on"].get("observable").is_none());
        assert!(d["actions"]["fade"].get("synchronous").is_none());
        assert_eq!(d["events"]["faded"]["unit"], "percent");
        assert_eq!(d["base"], "https://example.org:8443/webthing/lamp");
    }
}
