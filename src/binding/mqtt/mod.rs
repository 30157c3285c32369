//! The MQTT binding: the runtime as a client of a broker (Mosquitto, EMQX, HiveMQ, ...), with
//! the topic scheme of `topics` under a prefix. Property values are published retained on
//! change (readproperty and observeproperty are subscriptions), writes and invocations arrive
//! on request topics and are performed through the servient like any other protocol's, events
//! are published as they occur, and each thing's TD is published retained on `{prefix}{thing}/td`
//! so that subscribers find things through the broker.
//!
//! `forms` describes it in every TD (the binding template's `mqv:` terms); `outbox` bounds what
//! waits for the broker; `client` is the one task that talks to it (rumqttc, MQTT 5), and
//! reconnects with backoff while every other binding keeps serving. No other binding is used,
//! and none uses this one.

mod client;
mod forms;
mod outbox;
mod topics;

use std::time::Duration;

#[cfg(test)]
pub(crate) use client::problem;
pub(crate) use client::{Mqtt, start};

pub use forms::MqttForms;

/// How the runtime reaches its broker.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`; `user:password@` in it are credentials.
    pub broker: String,
    /// The prefix of every topic (default `wot/`).
    pub prefix: String,
    /// Trusted certificates (PEM) for `mqtts://`; None: the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM) for `mqtts://`.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
    /// The MQTT client id (default: `wot-` and the host name and process id).
    pub client_id: Option<String>,
    /// How many events and replies may wait for a slow or absent broker (the oldest go first);
    /// retained state waits as one message per topic.
    pub queue: usize,
    /// The longest wait between reconnection attempts (they start at 250 ms and double).
    pub max_backoff: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker: "mqtt://127.0.0.1:1883".into(),
            prefix: "wot/".into(),
            ca_pem: None,
            client_auth: None,
            client_id: None,
            queue: 1024,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What is wrong with a broker URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--mqtt {url}: {reason}")]
pub struct BrokerError {
    url: String,
    reason: String,
}

/// A broker URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<(String, String)>,
}

impl Broker {
    pub(crate) fn parse(url: &str) -> Result<Broker, BrokerError> {
        let error = |reason: &str| BrokerError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| error(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(error("the broker URL starts with mqtt:// or mqtts://")),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| error("the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
        let credentials = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| percent_decode(s);
            (
                decode(parsed.username()),
                decode(parsed.password().unwrap_or_default()),
            )
        });
        Ok(Broker {
            tls,
            host,
            port,
            credentials,
        })
    }

    /// The broker's URL as forms name it (no credentials).
    pub(crate) fn origin(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_scheme_host_port_and_credentials() {
        let b = Broker::parse("mqtt://127.0.0.1").expect("parses");
        assert_eq!(
            (b.tls, b.host.as_str(), b.port, b.credentials),
            (false, "127.0.0.1", 1883, None)
        );
        let b = Broker::parse("mqtts://user:p%40ss@broker.example:9000").expect("parses");
        assert_eq!((b.tls, b.port), (true, 9000));
        assert_eq!(b.credentials, Some(("user".into(), "p@ss".into())));
        assert_eq!(b.origin(), "mqtts://broker.example:9000");
        assert_eq!(
            Broker::parse("mqtt://[::1]:1884").expect("v6").origin(),
            "mqtt://[::1]:1884"
        );
        assert!(Broker::parse("http://broker").is_err());
        assert!(Broker::parse("broker:1883").is_err());
    }
}
