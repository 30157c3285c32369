//! `/.well-known/core` (RFC 6690): one link per TD (`rt="wot.thing";ct=432`) and per
//! affordance resource (its `ct`, and `obs` where it can be observed, RFC 7641 §6), with the
//! query filtering of RFC 6690 §4.1 (`?rt=wot.thing`, `?href=/things/lamp*`, ...).
//!
//! Pure: exposed things in, link-format text out.

use std::sync::Arc;

use super::content::{JSON, TD_JSON};
use crate::core::ExposedThing;

/// One link: a target and its attributes (`None` value: a bare flag such as `obs`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub(crate) href: String,
    pub(crate) attrs: Vec<(&'static str, Option<String>)>,
}

impl Link {
    fn new(href: String) -> Self {
        Link {
            href,
            attrs: Vec::new(),
        }
    }
    fn attr(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((key, Some(value.into())));
        self
    }
    fn flag(mut self, key: &'static str) -> Self {
        self.attrs.push((key, None));
        self
    }

    fn render(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.href);
        out.push('>');
        for (key, value) in &self.attrs {
            out.push(';');
            out.push_str(key);
            if let Some(v) = value {
                out.push('=');
                if *key == "ct" || *key == "sz" {
                    out.push_str(v);
                } else {
                    out.push('"');
                    out.push_str(&v.replace(['"', '\\'], ""));
                    out.push('"');
                }
            }
        }
    }

    /// RFC 6690 §4.1: `name=value` with an optional trailing `*` wildcard; a bare `name`
    /// matches links that have the attribute. Space-separated attribute values (rt, ct) match
    /// any of their parts.
    fn matches(&self, query: &str) -> bool {
        let (name, pattern) = match query.split_once('=') {
            Some((n, p)) => (n, Some(p)),
            None => (query, None),
        };
        let hit = |value: &str| match pattern {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => value == p,
            },
        };
        if name == "href" {
            return hit(&self.href);
        }
        self.attrs.iter().any(|(key, value)| {
            *key == name
                && match value {
                    None => pattern.is_none_or(str::is_empty),
                    Some(v) => v.split(' ').any(hit) || hit(v),
                }
        })
    }
}

/// Every link the server offers.
pub(crate) fn links(things: &[Arc<ExposedThing>]) -> Vec<Link> {
    let mut out = Vec::new();
    let rt = if things.len() == 1 {
        "wot.thing"
    } else {
        "wot.directory"
    };
    out.push(
        Link::new("/.well-known/wot".into())
            .attr("rt", rt)
            .attr("ct", TD_JSON.to_string()),
    );
    for thing in things {
        let base = format!("/things/{}", thing.slug);
        out.push(
            Link::new(base.clone())
                .attr("rt", "wot.thing")
                .attr("ct", TD_JSON.to_string())
                .attr("title", thing.title()),
        );
        let json = JSON.to_string();
        if !thing.properties.is_empty() {
            out.push(
                Link::new(format!("{base}/properties"))
                    .attr("ct", json.clone())
                    .flag("obs"),
            );
        }
        for (name, p) in &thing.properties {
            let mut link = Link::new(format!("{base}/properties/{name}")).attr("ct", json.clone());
            if p.observable && !p.write_only {
                link = link.flag("obs");
            }
            out.push(link);
        }
        for name in thing.actions.keys() {
            out.push(Link::new(format!("{base}/actions/{name}")).attr("ct", json.clone()));
        }
        if !thing.events.is_empty() {
            out.push(
                Link::new(format!("{base}/events"))
                    .attr("ct", json.clone())
                    .flag("obs"),
            );
        }
        for name in thing.events.keys() {
            out.push(
                Link::new(format!("{base}/events/{name}"))
                    .attr("ct", json.clone())
                    .flag("obs"),
            );
        }
    }
    out
}

/// The link-format document, filtered by every query (all must match).
pub(crate) fn document(things: &[Arc<ExposedThing>], queries: &[String]) -> String {
    let mut out = String::with_capacity(1024);
    for link in links(things) {
        if queries.iter().all(|q| link.matches(q)) {
            if !out.is_empty() {
                out.push(',');
            }
            link.render(&mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lamp() -> Arc<ExposedThing> {
        crate::core::ThingBuilder::new(
            "lamp",
            json!({"title": "Lamp", "properties": {"on": {"type": "boolean", "observable": true},
                   "w": {"type": "string", "writeOnly": true, "observable": true}},
                   "events": {"faded": {}}}),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn lists_and_filters() {
        let things = vec![lamp()];
        let all = document(&things, &[]);
        assert!(
            all.starts_with("</.well-known/wot>;rt=\"wot.thing\";ct=432,"),
            "{all}"
        );
        assert!(all.contains("</things/lamp/properties/on>;ct=50;obs"), "{all}");
        assert!(
            all.contains("</things/lamp/properties/w>;ct=50,"),
            "write-only is not observable: {all}"
        );
        assert_eq!(
            document(&things, &["rt=wot.thing".into()]),
            "</.well-known/wot>;rt=\"wot.thing\";ct=432,</things/lamp>;rt=\"wot.thing\";ct=432;title=\"Lamp\""
        );
        assert_eq!(
            document(&things, &["href=/things/lamp/ev*".into()]),
            "</things/lamp/events>;ct=50;obs,</things/lamp/events/faded>;ct=50;obs"
        );
        assert_eq!(document(&things, &["rt=nothing".into()]), "");
        assert!(document(&things, &["rt=wot*".into()]).contains("</things/lamp>"));
        assert!(document(&things, &["obs".into()]).contains("</things/lamp/events>"));
    }
}
