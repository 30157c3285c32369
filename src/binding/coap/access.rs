//! Who may do what over CoAP. Plain `coap://` carries no credentials, so it cannot check the
//! ones the HTTP port requires. When the runtime is started with `--auth`, plain CoAP therefore
//! serves only the kinds of request the configuration explicitly opens (`read`, `observe`) to
//! anyone, and refuses everything else with 4.01; writes, invocations and cancellations can never
//! be opened. Without `--auth` everything is open, as on HTTP. A `coaps://` session whose client
//! proved a pre-shared key (`dtls`) is served as [`Access::Open`], like HTTP with credentials; an
//! anonymous (certificate-mode) coaps session gets the plain policy.
//!
//! Pure policy: a request's kind in, a yes or no out, and the same answer for TD forms, so a TD
//! never offers a CoAP form the server would refuse. It must not look at sockets or messages.

use wot_td::thing::FormOperation as Op;

/// What a request does, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// GET without Observe: a TD, a property, a directory listing, `/.well-known/core`, an
    /// action's status.
    Read,
    /// GET with Observe (register or deregister), or any GET of an event resource.
    Observe,
    /// PUT, POST, DELETE: a write, an invocation, a cancellation.
    Change,
}

/// The kinds of request opened to unauthenticated CoAP clients while `--auth` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    /// GETs of properties, TDs and `/.well-known/core`.
    pub read: bool,
    /// GETs with Observe, and event observations.
    pub observe: bool,
}

/// Why a `--coap-open` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenedError {
    /// A kind of request that changes things: it never goes unauthenticated.
    #[error(
        "'{0}' cannot be opened: plain CoAP carries no credentials, so writes, \
         invocations and cancellations never go unauthenticated (use coaps:// with a pre-shared key)"
    )]
    Change(String),
    /// A word that names no kind of request.
    #[error("unknown CoAP access '{0}' (use read, observe or none)")]
    Unknown(String),
}

impl Opened {
    /// `read`, `observe`, `read,observe` or `none`.
    pub fn parse(list: &str) -> Result<Opened, OpenedError> {
        let mut opened = Opened::default();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "read" => opened.read = true,
                "observe" => opened.observe = true,
                "none" => {}
                "write" | "invoke" | "cancel" | "change" => return Err(OpenedError::Change(word.to_owned())),
                other => return Err(OpenedError::Unknown(other.to_owned())),
            }
        }
        Ok(opened)
    }

    fn any(self) -> bool {
        self.read || self.observe
    }
}

/// The CoAP access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Access {
    /// No credentials are required anywhere: CoAP serves everything.
    #[default]
    Open,
    /// Credentials are required on HTTP; CoAP serves only what is opened.
    Restricted(Opened),
}

impl Access {
    pub(crate) fn allows(self, kind: Kind) -> bool {
        match self {
            Access::Open => true,
            Access::Restricted(opened) => match kind {
                Kind::Read => opened.read,
                Kind::Observe => opened.observe,
                Kind::Change => false,
            },
        }
    }

    /// Whether a CoAP form with these operations belongs in a TD: only when every operation in
    /// it is served.
    pub(crate) fn allows_form(self, ops: &[Op]) -> bool {
        ops.iter().all(|op| self.allows(kind_of(op)))
    }

    /// The security a served CoAP form states when it differs from the TD's top-level one:
    /// under `--auth` the top level names the HTTP scheme, while the opened CoAP forms take
    /// no credentials at all.
    pub(crate) fn form_security(self) -> Option<&'static str> {
        match self {
            Access::Restricted(opened) if opened.any() => Some(NOSEC),
            _ => None,
        }
    }

    /// The 4.01 diagnostic for a refused request.
    pub(crate) fn refusal(self, kind: Kind) -> String {
        let what = match kind {
            Kind::Read => "reads",
            Kind::Observe => "observations",
            Kind::Change => "writes, invocations and cancellations",
        };
        format!(
            "this runtime requires credentials (--auth) and this request carries none (plain \
             coap://, or coaps:// in certificate mode): {what} are not served there; use \
             coaps:// with a pre-shared key, or HTTP with credentials"
        )
    }
}

/// The security definition name opened CoAP forms refer to.
pub(crate) const NOSEC: &str = "nosec_sc";
/// The security definition name `coaps://` forms refer to (TD 1.1 PSKSecurityScheme).
pub(crate) const PSK: &str = "psk_sc";

/// The access kind of a TD operation over CoAP.
pub(crate) fn kind_of(op: &Op) -> Kind {
    match op {
        Op::ReadProperty | Op::ReadAllProperties | Op::ReadMultipleProperties => Kind::Read,
        Op::QueryAction | Op::QueryAllActions => Kind::Read,
        Op::ObserveProperty
        | Op::UnobserveProperty
        | Op::ObserveAllProperties
        | Op::UnobserveAllProperties
        | Op::SubscribeEvent
        | Op::UnsubscribeEvent
        | Op::SubscribeAllEvents
        | Op::UnsubscribeAllEvents => Kind::Observe,
        _ => Kind::Change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_can_never_be_opened() {
        assert_eq!(
            Opened::parse("read,write"),
            Err(OpenedError::Change("write".into()))
        );
        assert_eq!(Opened::parse("invoke"), Err(OpenedError::Change("invoke".into())));
        assert_eq!(Opened::parse("bogus"), Err(OpenedError::Unknown("bogus".into())));
        assert_eq!(
            OpenedError::Change("write".into()).to_string(),
            "'write' cannot be opened: plain CoAP carries no credentials, so writes, invocations \
             and cancellations never go unauthenticated (use coaps:// with a pre-shared key)"
        );
        let opened = Opened::parse("read, observe").unwrap();
        assert_eq!(
            opened,
            Opened {
                read: true,
                observe: true
            }
        );
        assert_eq!(Opened::parse("none").unwrap(), Opened::default());
        let access = Access::Restricted(opened);
        assert!(access.allows(Kind::Read) && access.allows(Kind::Observe));
        assert!(!access.allows(Kind::Change));
        assert!(Access::Open.allows(Kind::Change));
    }

    #[test]
    fn forms_follow_the_policy() {
        let read_only = Access::Restricted(Opened {
            read: true,
            observe: false,
        });
        assert!(read_only.allows_form(&[Op::ReadProperty]));
        assert!(!read_only.allows_form(&[Op::ObserveProperty, Op::UnobserveProperty]));
        assert!(!read_only.allows_form(&[Op::WriteProperty]));
        assert!(!read_only.allows_form(&[Op::InvokeAction]));
        assert_eq!(read_only.form_security(), Some(NOSEC));
        assert_eq!(Access::Restricted(Opened::default()).form_security(), None);
        assert!(!Opened::default().any());
        assert_eq!(Access::Open.form_security(), None);
    }
}
