//! What the runtime announces over DNS-SD, as plain data (DESIGN.md §1.4, HUBS.md §2g): one
//! instance per thing under `_wot._tcp` (TXT td, type, scheme, path), `_webthing._tcp` (TXT path)
//! and, when CoAP runs, `_wot._udp` (TXT td, type, scheme=coap; with coaps a second instance,
//! named with ` (coaps)`, on the coaps port with scheme=coaps); plus one
//! `_directory._sub._wot._tcp` instance when several things run. Also the naming rules: friendly
//! instance names of at most 63 bytes, a DNS-legal host label, TXT records within ~200 bytes.
//!
//! Sans-IO: no socket and no mdns-sd type here; `mdns` turns these into registrations.

/// One announced service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The DNS-SD type with domain, e.g. `_wot._tcp.local.`; a subtype reads
    /// `_directory._sub._wot._tcp.local.`.
    pub(crate) service_type: &'static str,
    /// The instance name, without the type.
    pub(crate) instance: String,
    pub(crate) port: u16,
    pub(crate) txt: Vec<(&'static str, String)>,
    /// The thing this instance stands for; None for the runtime's directory.
    pub(crate) thing: Option<String>,
}

impl Announcement {
    /// The instance's DNS-SD full name as the daemon registers it: the instance, then the type
    /// without any subtype.
    pub(crate) fn fullname(&self) -> String {
        let ty = self
            .service_type
            .split_once("._sub.")
            .map_or(self.service_type, |(_, ty)| ty);
        format!("{}.{ty}", self.instance)
    }
}

pub(crate) const WOT_TCP: &str = "_wot._tcp.local.";
pub(crate) const WOT_UDP: &str = "_wot._udp.local.";
pub(crate) const WEBTHING_TCP: &str = "_webthing._tcp.local.";
pub(crate) const DIRECTORY: &str = "_directory._sub._wot._tcp.local.";

/// A DNS-SD instance name is at most 63 bytes (RFC 6763 §4.1.1).
pub(crate) const MAX_INSTANCE: usize = 63;
/// HUBS.md §2g: keep each TXT record under about 200 bytes.
#[cfg(test)]
pub(crate) const MAX_TXT: usize = 200;

/// What the announcer needs to know of one thing.
#[derive(Debug, Clone)]
pub struct ThingInfo {
    /// The thing's slug (its path is `/things/{slug}`).
    pub slug: String,
    /// The TD title, which the instance name is made from.
    pub title: String,
    /// The TD `id` (a `urn:uuid:`); six of its hex digits make the name unique per thing.
    pub id: String,
}

/// The ports (and transport security) of the bindings that run.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The HTTP port.
    pub http: u16,
    /// The CoAP port when CoAP runs: then `_wot._udp` is announced too.
    pub coap: Option<u16>,
    /// The coaps (DTLS) port when it runs: a second `_wot._udp` instance, `scheme=coaps`.
    pub coaps: Option<u16>,
    /// HTTP is served over TLS: `scheme=https` and `tls=1`.
    pub tls: bool,
}

/// What tells a thing's coaps instance from its coap one under `_wot._udp`.
const SECURE_SUFFIX: &str = " (coaps)";

/// Cuts a string to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `<Title>-<id6>`: readable in a hub's list, distinct for two things with one title.
pub(crate) fn instance_name(title: &str, id: &str) -> String {
    let hex: String = id
        .rsplit(':')
        .next()
        .unwrap_or(id)
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(6)
        .collect();
    let clean: String = title.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    let clean = if clean.is_empty() { "Thing" } else { clean };
    let suffix = if hex.is_empty() {
        String::new()
    } else {
        format!("-{hex}")
    };
    format!("{}{suffix}", truncate(clean, MAX_INSTANCE - suffix.len()))
}

/// A DNS label for `<host>.local`: lower-case letters, digits and '-', 1 to 63 bytes.
pub(crate) fn host_label(raw: &str) -> String {
    let first = raw.trim().split('.').next().unwrap_or("");
    let mut label: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    label = label.trim_matches('-').to_owned();
    label.truncate(63);
    let label = label.trim_end_matches('-').to_owned();
    if label.is_empty() {
        "wot-runtime".into()
    } else {
        label
    }
}

/// Bytes a TXT record takes on the wire: a length byte and `key=value` per entry.
#[cfg(test)]
pub(crate) fn txt_size(txt: &[(&'static str, String)]) -> usize {
    txt.iter().map(|(k, v)| 1 + k.len() + 1 + v.len()).sum()
}

/// Every instance to announce for these things.
pub fn plan(things: &[ThingInfo], ports: Ports, host: &str) -> Vec<Announcement> {
    let scheme = if ports.tls { "https" } else { "http" };
    let mut out = Vec::new();
    for t in things {
        let instance = instance_name(&t.title, &t.id);
        let td = format!("/things/{}", t.slug);
        let mut wot = vec![
            ("td", td.clone()),
            ("type", "Thing".to_owned()),
            ("scheme", scheme.to_owned()),
            ("path", td.clone()),
        ];
        let mut webthing = vec![("path", format!("/webthing/{}", t.slug))];
        if ports.tls {
            wot.push(("tls", "1".into()));
            webthing.push(("tls", "1".into()));
        }
        out.push(Announcement {
            service_type: WOT_TCP,
            instance: instance.clone(),
            port: ports.http,
            txt: wot,
            thing: Some(t.slug.clone()),
        });
        if let Some(coap) = ports.coap {
            out.push(Announcement {
                service_type: WOT_UDP,
                instance: instance.clone(),
                port: coap,
                txt: vec![
                    ("td", td.clone()),
                    ("type", "Thing".to_owned()),
                    ("scheme", "coap".to_owned()),
                ],
                thing: Some(t.slug.clone()),
            });
        }
        if let Some(coaps) = ports.coaps {
            out.push(Announcement {
                service_type: WOT_UDP,
                instance: format!(
                    "{}{SECURE_SUFFIX}",
                    truncate(&instance, MAX_INSTANCE - SECURE_SUFFIX.len())
                ),
                port: coaps,
                txt: vec![
                    ("td", td),
                    ("type", "Thing".to_owned()),
                    ("scheme", "coaps".to_owned()),
                ],
                thing: Some(t.slug.clone()),
            });
        }
        out.push(Announcement {
            service_type: WEBTHING_TCP,
            instance,
            port: ports.http,
            txt: webthing,
            thing: Some(t.slug.clone()),
        });
    }
    if things.len() > 1 {
        out.push(Announcement {
            service_type: DIRECTORY,
            instance: instance_name(&format!("WoT directory on {host}"), ""),
            port: ports.http,
            txt: vec![
                ("td", "/.well-known/wot".to_owned()),
                ("type", "Directory".to_owned()),
                ("scheme", scheme.to_owned()),
            ],
            thing: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing(slug: &str, title: &str) -> ThingInfo {
        ThingInfo {
            slug: slug.into(),
            title: title.into(),
            id: "urn:uuid:0a1b2c3d-0000-4000-8000-000000000000".into(),
        }
    }

    #[test]
    fn one_instance_per_thing_and_type_with_every_txt_key() {
        let plan = plan(
            &[thing("lamp", "Lamp"), thing("host", "Host")],
            Ports {
                http: 8080,
                coap: Some(5683),
                coaps: None,
                tls: false,
            },
            "box",
        );
        let lamp: Vec<_> = plan
            .iter()
            .filter(|a| a.thing.as_deref() == Some("lamp"))
            .collect();
        assert_eq!(
            lamp.iter().map(|a| a.service_type).collect::<Vec<_>>(),
            [WOT_TCP, WOT_UDP, WEBTHING_TCP]
        );
        assert!(lamp.iter().all(|a| a.instance == "Lamp-0a1b2c"));
        let keys = |a: &Announcement| a.txt.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(
            keys(lamp[0]),
            [
                "td=/things/lamp",
                "type=Thing",
                "scheme=http",
                "path=/things/lamp"
            ]
        );
        assert_eq!(keys(lamp[1]), ["td=/things/lamp", "type=Thing", "scheme=coap"]);
        assert_eq!(lamp[1].port, 5683);
        assert_eq!(keys(lamp[2]), ["path=/webthing/lamp"]);
        let directory = plan.iter().find(|a| a.thing.is_none()).unwrap();
        assert_eq!(directory.service_type, DIRECTORY);
        assert_eq!(
            keys(directory),
            ["td=/.well-known/wot", "type=Directory", "scheme=http"]
        );
    }

    #[test]
    fn coaps_is_a_second_udp_instance_with_its_scheme_and_port() {
        let title = "A title that is long enough to be cut to sixty-three bytes, and then some";
        let plan = plan(
            &[thing("lamp", title)],
            Ports {
                http: 8080,
                coap: Some(5683),
                coaps: Some(5684),
                tls: false,
            },
            "box",
        );
        let udp: Vec<_> = plan.iter().filter(|a| a.service_type == WOT_UDP).collect();
        assert_eq!(udp.len(), 2);
        assert_eq!((udp[0].port, udp[1].port), (5683, 5684));
        assert!(udp[1].txt.contains(&("scheme", "coaps".into())));
        assert!(udp[1].instance.ends_with(" (coaps)"), "{}", udp[1].instance);
        assert!(udp[1].instance.len() <= MAX_INSTANCE);
        assert_ne!(udp[0].instance, udp[1].instance);
    }

    #[test]
    fn no_udp_without_coap_no_directory_for_one_thing_and_tls_keys() {
        let plan = plan(
            &[thing("lamp", "Lamp")],
            Ports {
                http: 443,
                coap: None,
                coaps: None,
                tls: true,
            },
            "box",
        );
        assert_eq!(plan.len(), 2);
        assert!(plan[0].txt.contains(&("scheme", "https".into())));
        assert!(plan[0].txt.contains(&("tls", "1".into())));
        assert!(plan[1].txt.contains(&("tls", "1".into())));
    }

    #[test]
    fn names_and_txt_stay_within_their_limits() {
        let slug = "a".repeat(63);
        let title = "Ünïcode title that is much longer than sixty-three bytes, really quite long indeed";
        let plan = plan(
            &[thing(&slug, title), thing("b", "\u{7}")],
            Ports {
                http: 1,
                coap: Some(2),
                coaps: None,
                tls: true,
            },
            "h",
        );
        for a in &plan {
            assert!(a.instance.len() <= MAX_INSTANCE, "{}", a.instance);
            assert!(txt_size(&a.txt) <= MAX_TXT, "{} bytes", txt_size(&a.txt));
        }
        assert!(plan[0].instance.ends_with("-0a1b2c"));
        assert_eq!(plan[3].instance, "Thing-0a1b2c");
        assert_eq!(host_label("My_Box.example.org"), "my-box");
        assert_eq!(host_label("--"), "wot-runtime");
        assert_eq!(host_label(&"x".repeat(80)).len(), 63);
    }
}
