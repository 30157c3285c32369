//! The HTTP binding's URL contract (DESIGN.md §1.2) as one table: a request path decoded into
//! the resource it names, and the methods that resource takes.
//!
//! It replaces one actix-web resource per URL, which the router tried in turn with a regular
//! expression each and whose captures it copied (about a tenth of the CPU of a property read).
//! Here a path is split once (`binding::path`); segments are borrowed, and copied only when
//! they hold a percent-escape to decode. It does no I/O and knows nothing of handlers, so it is tested
//! without sockets; `routes::dispatch` maps its answer onto the handlers.

use std::borrow::Cow;

use crate::binding::path::{param, segments};

/// A resource of the binding, with its path parameters percent-decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resource<'a> {
    /// `/.well-known/wot`
    WellKnown,
    /// `/things`
    Things,
    /// `/things/{id}`
    Thing(Cow<'a, str>),
    /// `/things/{id}/properties`
    Properties(Cow<'a, str>),
    /// `/things/{id}/properties/{name}`
    Property(Cow<'a, str>, Cow<'a, str>),
    /// `/things/{id}/actions`
    Actions(Cow<'a, str>),
    /// `/things/{id}/actions/{name}`
    Action(Cow<'a, str>, Cow<'a, str>),
    /// `/things/{id}/actions/{name}/{action_id}`
    ActionStatus(Cow<'a, str>, Cow<'a, str>, Cow<'a, str>),
    /// `/things/{id}/events`
    Events(Cow<'a, str>),
    /// `/things/{id}/events/{name}`
    Event(Cow<'a, str>, Cow<'a, str>),
    /// `/things/{id}/longpoll/properties`
    LongpollProperties(Cow<'a, str>),
    /// `/things/{id}/longpoll/properties/{name}`
    LongpollProperty(Cow<'a, str>, Cow<'a, str>),
    /// `/things/{id}/longpoll/events`
    LongpollEvents(Cow<'a, str>),
    /// `/things/{id}/longpoll/events/{name}`
    LongpollEvent(Cow<'a, str>, Cow<'a, str>),
}

/// A method of an HTTP request as far as the table distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Other,
}

impl Verb {
    pub(crate) fn of(method: &actix_web::http::Method) -> Verb {
        use actix_web::http::Method;
        match *method {
            Method::GET => Verb::Get,
            Method::HEAD => Verb::Head,
            Method::PUT => Verb::Put,
            Method::POST => Verb::Post,
            Method::DELETE => Verb::Delete,
            _ => Verb::Other,
        }
    }
}

impl Resource<'_> {
    /// The methods the resource takes, as an `Allow` header lists them (405 answers).
    pub(crate) fn allow(&self) -> &'static str {
        match self {
            Resource::WellKnown | Resource::Things | Resource::Thing(_) => "GET, HEAD",
            Resource::Properties(_) | Resource::Property(..) => "GET, PUT",
            Resource::Actions(_) | Resource::Events(_) | Resource::Event(..) => "GET",
            Resource::Action(..) => "POST",
            Resource::ActionStatus(..) => "GET, DELETE",
            Resource::LongpollProperties(_)
            | Resource::LongpollProperty(..)
            | Resource::LongpollEvents(_)
            | Resource::LongpollEvent(..) => "GET, HEAD",
        }
    }
}

/// The resource a request path names, or None (404). A segment must not be empty, so a
/// trailing slash names nothing; a parameter is percent-decoded (`%2F` included) and must be
/// UTF-8. Parameters are taken from the path as sent: no dot-segment removal.
pub(crate) fn resource(path: &str) -> Option<Resource<'_>> {
    if path == "/.well-known/wot" {
        return Some(Resource::WellKnown);
    }
    let rest = path.strip_prefix("/things")?;
    if rest.is_empty() {
        return Some(Resource::Things);
    }
    // The longest URLs have four segments after `/things`.
    let (raw, count) = segments::<4>(rest.strip_prefix('/')?)?;
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
        [id, "longpoll", "properties"] => Resource::LongpollProperties(param(id)?),
        [id, "longpoll", "properties", name] => Resource::LongpollProperty(param(id)?, param(name)?),
        [id, "longpoll", "events"] => Resource::LongpollEvents(param(id)?),
        [id, "longpoll", "events", name] => Resource::LongpollEvent(param(id)?, param(name)?),
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
    fn every_url_of_the_contract_is_recognised() {
        use Resource::*;
        let cases = [
            ("/.well-known/wot", WellKnown),
            ("/things", Things),
            ("/things/lamp", Thing(b("lamp"))),
            ("/things/lamp/properties", Properties(b("lamp"))),
            ("/things/lamp/properties/on", Property(b("lamp"), b("on"))),
            ("/things/lamp/actions", Actions(b("lamp"))),
            ("/things/lamp/actions/fade", Action(b("lamp"), b("fade"))),
            (
                "/things/lamp/actions/fade/7",
                ActionStatus(b("lamp"), b("fade"), b("7")),
            ),
            ("/things/lamp/events", Events(b("lamp"))),
            (
                "/things/lamp/events/overheated",
                Event(b("lamp"), b("overheated")),
            ),
            ("/things/lamp/longpoll/properties", LongpollProperties(b("lamp"))),
            (
                "/things/lamp/longpoll/properties/on",
                LongpollProperty(b("lamp"), b("on")),
            ),
            ("/things/lamp/longpoll/events", LongpollEvents(b("lamp"))),
            (
                "/things/lamp/longpoll/events/overheated",
                LongpollEvent(b("lamp"), b("overheated")),
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
            "/thing",
            "/thingsx",
            "/things/",
            "/things//properties",
            "/things/lamp/",
            "/things/lamp/properties/",
            "/things/lamp/properties/on/x",
            "/things/lamp/props",
            "/things/lamp/events/a/b",
            "/things/lamp/actions/fade/7/x",
            "/things/lamp/actions//7",
            "/things/lamp/longpoll",
            "/things/lamp/longpoll/actions",
            "/things/lamp/longpoll/properties/",
            "/things/lamp/longpoll/properties/on/x",
            "/things/lamp/longpoll/%70roperties",
            "/.well-known/wot/",
            "/webthing/lamp",
        ] {
            assert_eq!(resource(path), None, "{path}");
        }
    }

    #[test]
    fn parameters_are_percent_decoded_and_must_be_utf8() {
        assert_eq!(
            resource("/things/my%20lamp/properties/%C3%A9t%2Fat"),
            Some(Resource::Property(b("my lamp"), b("ét/at")))
        );
        assert_eq!(resource("/things/a+b"), Some(Resource::Thing(b("a+b"))));
        assert_eq!(resource("/things/%FF"), None);
        assert_eq!(resource("/things/%"), Some(Resource::Thing(b("%"))));
    }

    #[test]
    fn each_resource_allows_what_the_contract_says() {
        assert_eq!(resource("/things/l/properties/p").unwrap().allow(), "GET, PUT");
        assert_eq!(resource("/things/l/actions/a").unwrap().allow(), "POST");
        assert_eq!(resource("/things/l/actions/a/1").unwrap().allow(), "GET, DELETE");
        assert_eq!(resource("/things").unwrap().allow(), "GET, HEAD");
    }
}
