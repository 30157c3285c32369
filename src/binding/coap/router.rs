//! The CoAP binding's resources: the same paths as HTTP (DESIGN.md §1.2) plus
//! `/.well-known/core`, and which methods each resource takes. Pure: a path in, a resource
//! out; deciding what the request then does is the engine's job.

use super::message::{DELETE, GET, POST, PUT};

/// A resource named by a request's Uri-Path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    WellKnownCore,
    WellKnownWot,
    Things,
    Td(String),
    Properties(String),
    Property(String, String),
    Actions(String),
    Action(String, String),
    ActionInstance(String, String, String),
    Events(String),
    Event(String, String),
}

impl Resource {
    /// The methods the resource takes (for 4.05).
    pub(crate) fn methods(&self) -> &'static [u8] {
        match self {
            Resource::WellKnownCore
            | Resource::WellKnownWot
            | Resource::Things
            | Resource::Td(_)
            | Resource::Actions(_)
            | Resource::Events(_)
            | Resource::Event(..) => &[GET],
            Resource::Properties(_) | Resource::Property(..) => &[GET, PUT],
            Resource::Action(..) => &[POST],
            // Cancel is DELETE as over HTTP, or POST, the CoAP binding's default for cancelaction.
            Resource::ActionInstance(..) => &[GET, DELETE, POST],
        }
    }

    pub(crate) fn allows(&self, method: u8) -> bool {
        self.methods().contains(&method)
    }

    /// The thing the resource belongs to, if any.
    pub(crate) fn slug(&self) -> Option<&str> {
        match self {
            Resource::Td(s)
            | Resource::Properties(s)
            | Resource::Property(s, _)
            | Resource::Actions(s)
            | Resource::Action(s, _)
            | Resource::ActionInstance(s, ..)
            | Resource::Events(s)
            | Resource::Event(s, _) => Some(s),
            _ => None,
        }
    }
}

/// Finds the resource of a path; `None` is 4.04.
pub(crate) fn resource(path: &[String]) -> Option<Resource> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let own = |s: &str| s.to_owned();
    Some(match p.as_slice() {
        [".well-known", "core"] => Resource::WellKnownCore,
        [".well-known", "wot"] => Resource::WellKnownWot,
        ["things"] => Resource::Things,
        ["things", t] => Resource::Td(own(t)),
        ["things", t, "properties"] => Resource::Properties(own(t)),
        ["things", t, "properties", n] => Resource::Property(own(t), own(n)),
        ["things", t, "actions"] => Resource::Actions(own(t)),
        ["things", t, "actions", n] => Resource::Action(own(t), own(n)),
        ["things", t, "actions", n, id] => Resource::ActionInstance(own(t), own(n), own(id)),
        ["things", t, "events"] => Resource::Events(own(t)),
        ["things", t, "events", n] => Resource::Event(own(t), own(n)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Vec<String> {
        s.split('/')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn paths() {
        assert_eq!(
            resource(&path("/.well-known/core")),
            Some(Resource::WellKnownCore)
        );
        assert_eq!(
            resource(&path("/things/lamp/properties/on")),
            Some(Resource::Property("lamp".into(), "on".into()))
        );
        assert_eq!(
            resource(&path("/things/lamp/actions/fade/abc")),
            Some(Resource::ActionInstance(
                "lamp".into(),
                "fade".into(),
                "abc".into()
            ))
        );
        assert_eq!(resource(&path("/things/lamp/nope")), None);
        assert_eq!(resource(&path("/")), None);
        assert!(Resource::Action("l".into(), "t".into()).allows(POST));
        assert!(!Resource::Action("l".into(), "t".into()).allows(GET));
    }
}
