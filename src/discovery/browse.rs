//! The client side of discovery, for `wot discover`: browse `_wot._tcp`, `_wot._udp` and
//! `_webthing._tcp` with mdns-sd, turn each resolved instance into the URL its TXT record points
//! to (dart_wot's rule: TXT `scheme` + SRV address:port + TXT `td`, or `path` for the legacy
//! type), fetch what is there over HTTP, and merge the instances of one thing by its id.
//!
//! Browsing joins the mDNS multicast group: run it only where multicast may be sent (under
//! `../shared/tools/netns-run` in tests). URL building and merging are pure and unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};
use serde::Serialize;
use serde_json::Value;

use super::records::{WEBTHING_TCP, WOT_TCP, WOT_UDP};

/// The service types `wot discover` browses.
pub(crate) const BROWSED: &[&str] = &[WOT_TCP, WOT_UDP, WEBTHING_TCP];

/// One resolved service instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Found {
    pub(crate) service_type: String,
    pub(crate) fullname: String,
    pub(crate) host: String,
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) port: u16,
    pub(crate) txt: BTreeMap<String, String>,
}

impl Found {
    /// The instance name (the full name without its type).
    pub(crate) fn instance(&self) -> &str {
        self.fullname
            .strip_suffix(&self.service_type)
            .map(|s| s.trim_end_matches('.'))
            .unwrap_or(&self.fullname)
    }

    /// The TD's (or legacy description's) URL. IPv4 literals are preferred over IPv6 and over
    /// the `.local` name, so it works where `.local` does not resolve (Docker, HUBS.md §1 #9).
    pub(crate) fn url(&self) -> Option<String> {
        let udp = self.service_type.contains("._udp");
        let legacy = self.service_type == WEBTHING_TCP;
        let scheme = match self.txt.get("scheme") {
            Some(s) if !legacy => s.clone(),
            _ if legacy && self.txt.get("tls").is_some_and(|t| t == "1") => "https".into(),
            _ if udp => "coap".into(),
            _ => "http".into(),
        };
        let path = if legacy {
            self.txt.get("path").cloned().unwrap_or_else(|| "/".into())
        } else {
            self.txt
                .get("td")
                .cloned()
                .unwrap_or_else(|| "/.well-known/wot".into())
        };
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let v4 = self.addresses.iter().find(|a| a.is_ipv4());
        let v6 = self
            .addresses
            .iter()
            .find(|a| matches!(a, IpAddr::V6(v6) if !v6.is_unicast_link_local()));
        let host = match (v4, v6) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(ip)) => format!("[{ip}]"),
            (None, None) if !self.host.is_empty() => self.host.trim_end_matches('.').to_owned(),
            _ => return None,
        };
        Some(format!("{scheme}://{host}:{}{path}", self.port))
    }

    /// `Thing` unless the TXT says otherwise (`Directory`).
    pub(crate) fn kind(&self) -> &str {
        if self.service_type == WEBTHING_TCP {
            return "Thing";
        }
        self.txt.get("type").map(String::as_str).unwrap_or("Thing")
    }

    /// The protocol this instance offers, as `wot discover` names it.
    pub(crate) fn protocol(&self) -> &'static str {
        if self.service_type == WEBTHING_TCP {
            "webthing"
        } else if self.service_type == WOT_UDP {
            "coap"
        } else {
            "http"
        }
    }
}

/// Why `wot discover` found nothing at all (a document that cannot be fetched is not one: it is
/// reported with its instance).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The mDNS daemon did not start.
    #[error("cannot start mDNS: {0}")]
    Start(mdns_sd::Error),
    /// A service type could not be browsed.
    #[error("cannot browse {service_type}: {source}")]
    Browse {
        /// The type, e.g. `_wot._tcp.local.`.
        service_type: String,
        /// What the daemon said.
        source: mdns_sd::Error,
    },
    /// The blocking browse task panicked or was cancelled.
    #[error("browsing failed: {0}")]
    Join(tokio::task::JoinError),
    /// The HTTP client that fetches the documents could not be made.
    #[error("no HTTP client: {0}")]
    Client(reqwest::Error),
}

/// Browses the given types for `timeout` and returns every instance resolved meanwhile.
/// Blocking; run it off the async runtime.
pub(crate) fn browse(types: &[&str], timeout: Duration) -> Result<Vec<Found>, DiscoverError> {
    let daemon = ServiceDaemon::new().map_err(DiscoverError::Start)?;
    let receivers = types
        .iter()
        .map(|t| {
            daemon.browse(t).map_err(|source| DiscoverError::Browse {
                service_type: (*t).to_owned(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = Instant::now() + timeout;
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    while Instant::now() < deadline {
        let mut idle = true;
        for rx in &receivers {
            while let Ok(event) = rx.try_recv() {
                idle = false;
                if let ServiceEvent::ServiceResolved(r) = event {
                    let ty = r.ty_domain.clone();
                    let entry = Found {
                        service_type: ty.clone(),
                        fullname: r.fullname.clone(),
                        host: r.host.clone(),
                        addresses: r.addresses.iter().map(|a| a.to_ip_addr()).collect(),
                        port: r.port,
                        txt: r
                            .txt_properties
                            .iter()
                            .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_owned()))
                            .collect(),
                    };
                    found.insert((ty, r.fullname.clone()), entry);
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_secs(1));
    }
    Ok(found.into_values().collect())
}

/// One thing as `wot discover` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discovered {
    /// The title announced (or the document's).
    pub title: String,
    /// The TD `id`, when the document could be fetched.
    pub id: Option<String>,
    /// `Thing` or `Directory`.
    pub kind: String,
    /// The W3C TD URL if one was announced, else the legacy description's.
    pub url: String,
    /// The protocols it was found on (`http`, `coap`, `webthing`), sorted.
    pub protocols: Vec<String>,
    /// Every instance's URL, by protocol.
    pub urls: BTreeMap<String, String>,
    /// Why a document could not be fetched, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What fetching one instance's URL gave.
#[derive(Debug, Clone)]
pub(crate) enum Fetched {
    Document(Value),
    Failed(String),
}

/// Merges instances into things: those whose documents share an `id` are one thing (the
/// `_wot._tcp`, `_wot._udp` and `_webthing._tcp` instances of one thing carry one id), and an
/// instance that could not be fetched (CoAP) joins the fetched one of the same name and host.
pub(crate) fn merge(results: Vec<(Found, Fetched)>) -> Vec<Discovered> {
    let id_of = |fetched: &Fetched| match fetched {
        Fetched::Document(doc) => doc.get("id").and_then(Value::as_str).map(str::to_owned),
        Fetched::Failed(_) => None,
    };
    let known: BTreeMap<(String, String), String> = results
        .iter()
        .filter_map(|(f, d)| id_of(d).map(|id| ((f.host.clone(), f.instance().to_owned()), id)))
        .collect();
    let mut by_key: BTreeMap<String, Discovered> = BTreeMap::new();
    for (found, fetched) in results {
        let Some(url) = found.url() else { continue };
        let id = id_of(&fetched);
        let key = id
            .clone()
            .or_else(|| {
                known
                    .get(&(found.host.clone(), found.instance().to_owned()))
                    .cloned()
            })
            .unwrap_or_else(|| format!("instance:{}", found.fullname));
        let protocol = found.protocol().to_owned();
        let entry = by_key.entry(key).or_insert_with(|| Discovered {
            title: found.instance().to_owned(),
            id: None,
            kind: found.kind().to_owned(),
            url: url.clone(),
            protocols: Vec::new(),
            urls: BTreeMap::new(),
            error: None,
        });
        match &fetched {
            Fetched::Document(doc) => {
                if let Some(title) = doc.get("title").and_then(Value::as_str) {
                    entry.title = title.to_owned();
                }
                entry.id = id;
                entry.error = None;
            }
            Fetched::Failed(e) if entry.id.is_none() => entry.error = Some(e.clone()),
            Fetched::Failed(_) => {}
        }
        // The W3C TD over HTTP is the URL to show; else CoAP's; the legacy one last.
        let rank = |p: &str| match p {
            "http" => 0,
            "coap" => 1,
            _ => 2,
        };
        if entry.protocols.iter().all(|p| rank(p) > rank(&protocol)) {
            entry.url = url.clone();
        }
        if !entry.protocols.contains(&protocol) {
            entry.protocols.push(protocol.clone());
            entry.protocols.sort();
        }
        entry.urls.insert(protocol, url);
    }
    let mut out: Vec<Discovered> = by_key.into_values().collect();
    out.sort_by(|a, b| (a.kind != "Thing", &a.title).cmp(&(b.kind != "Thing", &b.title)));
    out
}

/// Fetches the JSON document at an http(s) URL.
pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> Fetched {
    if !url.starts_with("http://") {
        return Fetched::Failed(format!(
            "not fetched: {} is not plain HTTP",
            url.split(':').next().unwrap_or("")
        ));
    }
    let response = match client
        .get(url)
        .header("Accept", "application/td+json, application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Fetched::Failed(format!("cannot fetch {url}: {e}")),
    };
    if !response.status().is_success() {
        return Fetched::Failed(format!("{url} answered {}", response.status()));
    }
    match response.json::<Value>().await {
        Ok(doc) => Fetched::Document(doc),
        Err(e) => Fetched::Failed(format!("{url} did not return JSON: {e}")),
    }
}

/// Browses, fetches every instance's document and merges them into things.
pub async fn discover(timeout: Duration) -> Result<Vec<Discovered>, DiscoverError> {
    let found = tokio::task::spawn_blocking(move || browse(BROWSED, timeout))
        .await
        .map_err(DiscoverError::Join)??;
    // reqwest carries no TLS provider of its own; use ring, as the rest of the runtime does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(DiscoverError::Client)?;
    let mut results = Vec::with_capacity(found.len());
    for f in found {
        let fetched = match f.url() {
            Some(url) => fetch(&client, &url).await,
            None => Fetched::Failed("no address".into()),
        };
        results.push((f, fetched));
    }
    Ok(merge(results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(ty: &str, txt: &[(&str, &str)], addresses: &[&str]) -> Found {
        Found {
            service_type: ty.into(),
            fullname: format!("Lamp-0a1b2c.{ty}"),
            host: "box.local.".into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            port: 8080,
            txt: txt.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn urls_follow_the_txt_record() {
        let wot = found(
            WOT_TCP,
            &[("td", "/things/lamp"), ("scheme", "http")],
            &["fe80::1", "10.0.0.5"],
        );
        assert_eq!(wot.url().unwrap(), "http://10.0.0.5:8080/things/lamp");
        assert_eq!(wot.instance(), "Lamp-0a1b2c");
        // node-wot's td=<slug> without '/', and the udp default scheme.
        let udp = found(WOT_UDP, &[("td", "lamp")], &["2001:db8::1"]);
        assert_eq!(udp.url().unwrap(), "coap://[2001:db8::1]:8080/lamp");
        let legacy = found(WEBTHING_TCP, &[("path", "/webthing/lamp"), ("tls", "1")], &[]);
        assert_eq!(legacy.url().unwrap(), "https://box.local:8080/webthing/lamp");
        let bare = found(WOT_TCP, &[], &["10.0.0.5"]);
        assert_eq!(bare.url().unwrap(), "http://10.0.0.5:8080/.well-known/wot");
    }

    #[test]
    fn instances_of_one_thing_merge_by_id() {
        let td = json!({"id": "urn:uuid:1", "title": "Lamp"});
        let merged = merge(vec![
            (
                found(WEBTHING_TCP, &[("path", "/webthing/lamp")], &["10.0.0.5"]),
                Fetched::Document(td.clone()),
            ),
            (
                found(WOT_TCP, &[("td", "/things/lamp")], &["10.0.0.5"]),
                Fetched::Document(td),
            ),
            (
                found(WOT_UDP, &[("td", "/things/lamp")], &["10.0.0.5"]),
                Fetched::Failed("coap".into()),
            ),
        ]);
        assert_eq!(merged.len(), 1, "{merged:?}");
        let lamp = &merged[0];
        assert_eq!(lamp.id.as_deref(), Some("urn:uuid:1"));
        assert_eq!(lamp.protocols, ["coap", "http", "webthing"]);
        assert_eq!(lamp.urls["coap"], "coap://10.0.0.5:8080/things/lamp");
        assert!(lamp.error.is_none());
        assert_eq!(lamp.url, "http://10.0.0.5:8080/things/lamp");
        assert_eq!(lamp.title, "Lamp");
    }
}
