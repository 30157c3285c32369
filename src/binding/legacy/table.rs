//! The legacy WebThings API's URLs under `/webthing` as one table: a request path decoded into
//! the resource it names, and the methods that resource takes.
//!
//! It replaces one actix-web resource per URL: the router compiled a regular expression for each
//! pattern with a parameter, once per worker, and those automata and their caches stayed on the
//! heap of an idle server (about 300 KB of its 1.2 MB). The path is split once
//! (`binding::path`); parameters are borrowed unless they hold a percent-escape. No I/O and no
//! handlers here; `routes::dispatch` maps the answer onto them.

use std::borrow::Cow;

use crate::binding::path::{param, segments};

/// A resource of the legacy API, with its path parameters percent-decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resource<'a> {
    /// `/webthing` and `/webthing/`
    List,
    /// `/webthing/{id}` and `/webthing/{id}/` (also the WebSocket endpoint)
    Thing(Cow<'a, str>),
    /// `/webthing/{id}/properties`
    Properties(Cow<'a, str>),
    /// `/webthing/{id}/properties/{name}`
    Property(Cow<'a, str>, Cow<'a, str>),
    /// `/webthing/{id}/actions`
    Actions(Cow<'a, str>),
    /// `/webthing/{id}/actions/{name}`
    Action(Cow<'a, str>, Cow<'a, str>),
    /// `/webthing/{id}/actions/{name}/{action_id}`
    ActionStatus(Cow<'a, str>, Cow<'a, str>, Cow<'a, str>),
    /// `/webthing/{id}/events`
    Events(Cow<'a, str>),
    /// `/webthing/{id}/events/{name}`
    Event(Cow<'a, str>, Cow<'a, str>),
}

impl Resource<'_> {
    /// The methods the resource takes, as an `Allow` header lists them (405 answers).
    pub(crate) fn allow(&self) -> &'static str {
        match self {
            Resource::List
            | Resource::Thing(_)
            | Resource::Properties(_)
            | Resource::Events(_)
            | Resource::Event(..) => "GET",
            Resource::Property(..) => "GET, PUT",
            Resource::Actions(_) | Resource::Action(..) => "GET, POST",
            Resource::ActionStatus(..) => "GET, DELETE",
        }
    }
}

/// The resource a request path names, or None (404). Only the list and a thing's own URL take a
/// trailing slash (WebThings clients send both); any other empty segment names nothing.
pub(crate) fn resource(path: &str) -> Option<Resource<'_>> {
    let rest = path.strip_prefix("/webthing")?;
    if rest.is_empty() || rest == "/" {
        return Some(Resource::List);
    }
    let rest = rest.strip_prefix('/')?;
    if let Some(id) = rest.strip_suffix('/')
        && !id.contains('/')
    {
        return Some(Resource::Thing(param(id)?));
    }
    // The longest URL has four segments after `/webthing`.
    let (raw, count) = segments::<4>(rest)?;
    // Literal segments are compared as sent; only parameters are decoded.
    Some(match raw[..count] {
        [id] => Resource::Thing(param(id)?),
        [id, "properties"] => Resource::Properties(param(id)?),
        [id, "properties", name] => Resource::Property(param(id)?, param(name)?),
        [id, "actions"] => Resource::Actions(param(id)?),
        [id, "actions", name] => Resource::Action(param(id)?, param(name)?),
        [id, "actions", name, action_id] => {
            Resource::ActionStatus(param(id)?, param(name)?, param(action_id)?)
        }
        [id, "events"] => Resource::Events(param(id)?),
        [id, "events", name] => Resource::Event(param(id)?, param(name)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Cow<'_, str> {
        Cow::Borrowed(s)
    }

    #[test]
    fn every_url_of_the_api_is_recognised() {
        use Resource::*;
        let cases = [
            ("/webthing", List),
            ("/webthing/", List),
            ("/webthing/lamp", Thing(b("lamp"))),
            ("/webthing/lamp/", Thing(b("lamp"))),
            ("/webthing/lamp/properties", Properties(b("lamp"))),
            ("/webthing/lamp/properties/on", Property(b("lamp"), b("on"))),
            ("/webthing/lamp/actions", Actions(b("lamp"))),
            ("/webthing/lamp/actions/fade", Action(b("lamp"), b("fade"))),
            (
                "/webthing/lamp/actions/fade/7",
                ActionStatus(b("lamp"), b("fade"), b("7")),
            ),
            ("/webthing/lamp/events", Events(b("lamp"))),
            (
                "/webthing/lamp/events/overheated",
                Event(b("lamp"), b("overheated")),
            ),
            (
                "/webthing/my%20lamp/properties/%C3%A9t%2Fat",
                Property(b("my lamp"), b("ét/at")),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(resource(path), Some(expected), "{path}");
        }
    }

    #[test]
    fn anything_else_names_nothing() {
        for path in [
            "/",
            "/webthings",
            "/webthingx/lamp",
            "/webthing//",
            "/webthing//properties",
            "/webthing/lamp//",
            "/webthing/lamp/properties/",
            "/webthing/lamp/properties/on/x",
            "/webthing/lamp/props",
            "/webthing/lamp/events/a/b",
            "/webthing/lamp/actions/fade/7/x",
            "/webthing/lamp/actions//7",
            "/webthing/%FF",
            "/things/lamp",
        ] {
            assert_eq!(resource(path), None, "{path}");
        }
    }

    #[test]
    fn each_resource_allows_what_the_api_takes() {
        assert_eq!(resource("/webthing/l/properties/p").unwrap().allow(), "GET, PUT");
        assert_eq!(resource("/webthing/l/actions/a").unwrap().allow(), "GET, POST");
        assert_eq!(
            resource("/webthing/l/actions/a/1").unwrap().allow(),
            "GET, DELETE"
        );
        assert_eq!(resource("/webthing/l").unwrap().allow(), "GET");
    }
}
