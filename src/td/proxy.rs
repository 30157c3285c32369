//! Proxy thing files: `{"proxy": {"td": "coap://device/things/lamp"}}` names a remote Thing
//! that `wot serve` consumes and serves again as a local thing (the bridge). This module reads
//! and checks the file's few keys into a [`Proxy`]; it fetches nothing (that is the bridge's
//! work, when the runtime starts or reloads the file).

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::problem::Problem;

/// Where a proxied thing's remote TD is, and how to talk to the remote.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// The remote TD's URL: `http://`, `https://` or `coap://`.
    pub td: String,
    /// The protocol whose forms to prefer (`http`, `coap` or `ws`); None: the TD's own order.
    pub via: Option<String>,
    /// How long one request to the remote may take.
    pub timeout: Duration,
    /// How often a reachable remote is checked (its TD fetched again), so that a remote that
    /// went away or restarted is noticed even when no client asks.
    pub probe: Duration,
}

const KEYS: &[&str] = &["td", "via", "timeout", "probe"];

/// Whether a thing file's document is a proxy file.
pub(crate) fn is_proxy(doc: &Value) -> bool {
    doc.get("proxy").is_some()
}

/// The proxy of a file whose document [`is_proxy`]: only `proxy` at the top, its `td` an
/// absolute URL of a scheme the consumer speaks, `timeout` and `probe` positive seconds.
pub(crate) fn parse(path: &Path, doc: &Value) -> Result<Proxy, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem = |pointer: &str, rule: &str, message: String| Problem::new(path, pointer, rule, message);
    if let Some(root) = doc.as_object() {
        for key in root.keys().filter(|k| k.as_str() != "proxy") {
            problems.push(problem(
                &format!("/{key}"),
                "proxy",
                format!("a proxy file takes its description from the remote TD; remove '{key}'"),
            ));
        }
    }
    let Some(proxy) = doc.get("proxy").and_then(Value::as_object) else {
        return Err(vec![problem(
            "/proxy",
            "type",
            "'proxy' is an object: {\"td\": \"coap://host/things/name\"}".into(),
        )]);
    };
    for key in proxy.keys().filter(|k| !KEYS.contains(&k.as_str())) {
        problems.push(problem(
            &format!("/proxy/{key}"),
            "proxy",
            format!("unknown key '{key}' (known: {})", KEYS.join(", ")),
        ));
    }
    let td = match td_url(proxy) {
        Ok(td) => Some(td),
        Err(message) => {
            problems.push(problem("/proxy/td", "td", message));
            None
        }
    };
    let via = match proxy.get("via") {
        None => None,
        Some(Value::String(v)) if ["http", "coap", "ws"].contains(&v.as_str()) => Some(v.clone()),
        Some(other) => {
            problems.push(problem(
                "/proxy/via",
                "enum",
                format!("'via' is one of \"http\", \"coap\", \"ws\", not {other}"),
            ));
            None
        }
    };
    let timeout = seconds(proxy, "timeout", 5.0).map_err(|m| problem("/proxy/timeout", "seconds", m));
    let probe = seconds(proxy, "probe", 5.0).map_err(|m| problem("/proxy/probe", "seconds", m));
    let (timeout, probe) = match (timeout, probe) {
        (Ok(t), Ok(p)) => (t, p),
        (t, p) => {
            problems.extend(t.err());
            problems.extend(p.err());
            (Duration::ZERO, Duration::ZERO)
        }
    };
    match td {
        Some(td) if problems.is_empty() => Ok(Proxy {
            td,
            via,
            timeout,
            probe,
        }),
        _ => Err(problems),
    }
}

fn td_url(proxy: &Map<String, Value>) -> Result<String, String> {
    let Some(td) = proxy.get("td").and_then(Value::as_str) else {
        return Err("'td' is the remote TD's URL, e.g. \"coap://host/things/name\"".into());
    };
    let url = reqwest::Url::parse(td).map_err(|e| format!("'{td}' is not an absolute URL: {e}"))?;
    match url.scheme() {
        "http" | "https" | "coap" if url.host().is_some() => Ok(td.to_owned()),
        "http" | "https" | "coap" => Err(format!("'{td}' names no host")),
        other => Err(format!(
            "'{td}': the bridge fetches TDs over http, https or coap, not {other}"
        )),
    }
}

fn seconds(proxy: &Map<String, Value>, key: &str, default: f64) -> Result<Duration, String> {
    let secs = match proxy.get(key) {
        None => default,
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.05 && *s <= 3600.0)
            .ok_or_else(|| format!("'{key}' is seconds between 0.05 and 3600, not {v}"))?,
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(doc: Value) -> Result<Proxy, Vec<String>> {
        parse(Path::new("things/x.json"), &doc).map_err(|ps| {
            ps.into_iter()
                .map(|p| format!("{} {}", p.pointer, p.rule))
                .collect()
        })
    }

    #[test]
    fn a_proxy_names_a_remote_td_and_may_tune_the_bridge() {
        let proxy = parsed(json!({"proxy": {"td": "coap://127.0.0.1:5683/things/lamp"}})).expect("parses");
        assert_eq!(proxy.td, "coap://127.0.0.1:5683/things/lamp");
        assert_eq!((proxy.via, proxy.timeout), (None, Duration::from_secs(5)));
        let proxy =
            parsed(json!({"proxy": {"td": "http://h/things/a", "via": "ws", "timeout": 0.5, "probe": 2}}))
                .expect("parses");
        assert_eq!(proxy.via.as_deref(), Some("ws"));
        assert_eq!(
            (proxy.timeout, proxy.probe),
            (Duration::from_millis(500), Duration::from_secs(2))
        );
    }

    #[test]
    fn every_mistake_is_named_with_its_pointer() {
        let errors = parsed(json!({
            "title": "Lamp",
            "proxy": {"td": "ftp://h/x", "via": "mqtt", "timeout": 0, "color": 1}
        }))
        .expect_err("refused");
        assert_eq!(
            errors,
            [
                "/title proxy",
                "/proxy/color proxy",
                "/proxy/td td",
                "/proxy/via enum",
                "/proxy/timeout seconds"
            ]
        );
        assert_eq!(
            parsed(json!({"proxy": "coap://h/x"})).expect_err("refused"),
            ["/proxy type"]
        );
        assert_eq!(
            parsed(json!({"proxy": {}})).expect_err("refused"),
            ["/proxy/td td"]
        );
        assert_eq!(
            parsed(json!({"proxy": {"td": "things/x"}})).expect_err("refused"),
            ["/proxy/td td"]
        );
    }
}
