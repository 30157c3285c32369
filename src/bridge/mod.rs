//! The bridge: a proxy thing file (`{"proxy": {"td": "coap://device/things/lamp"}}`, read by
//! `td::proxy`) becomes a local thing that serves a remote Thing again on every enabled binding.
//! [`resolve`] fetches the remote TD through the consumer and turns it into the thing's model
//! (`model`: the description stays, the remote's endpoints go) and its behaviour
//! (`upstream`: reads, writes and actions forwarded after the local checks, one upstream
//! observation per affordance mirrored into the thing, reconnection with backoff).
//!
//! The bridge uses the consumer and the core's public methods; no binding knows it exists: to
//! them a proxied thing is a thing whose answers may be 502, 503 or 504.

mod model;
mod upstream;

use std::sync::Arc;

use crate::behavior::Behaviors;
use crate::consumer::{ConsumedThing, Consumer, ConsumerConfig, Protocol};
use crate::td::definition::{self, ThingDefinition};
use crate::td::{Problem, Proxy};

/// Fetches a proxy definition's remote TD and returns the definition with the remote's
/// description as its model and the link to the remote as its behaviour; any other definition
/// is returned as it is. A remote that cannot be reached, a document that is no TD, or a TD
/// that does not make a thing here is a problem of the proxy file.
pub async fn resolve(definition: ThingDefinition) -> Result<ThingDefinition, Vec<Problem>> {
    let Some(proxy) = definition.proxy.clone() else {
        return Ok(definition);
    };
    let path = definition.path.clone();
    let at_td = |message: String| vec![Problem::new(&path, "/proxy/td", "remote", message)];
    let consumer = Consumer::new(consumer_config(&proxy)).map_err(|e| at_td(e.to_string()))?;
    let remote = consumer
        .fetch(&proxy.td)
        .await
        .map_err(|e| at_td(e.to_string()))?;
    let text = model::thing_file(remote.td()).to_string();
    let described = definition::parse(&path, &text).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| {
                let message = format!("the remote TD at {}: {}", proxy.td, p.message);
                Problem::new(&path, p.pointer, &p.rule, message)
            })
            .collect::<Vec<_>>()
    })?;
    unusable_forms(&path, &proxy, &remote)?;
    let upstream = upstream::Upstream::new(proxy.clone(), consumer, remote);
    Ok(ThingDefinition {
        model: described.model,
        behaviors: Behaviors::driven(Arc::new(upstream)),
        ..definition
    })
}

/// The operations of the remote TD that no form of it can perform here (a protocol `via`
/// excludes, a scheme or subprotocol the consumer does not speak): each is a warning, and a TD
/// of which nothing at all can be used is a problem of the proxy file.
fn unusable_forms(path: &std::path::Path, proxy: &Proxy, remote: &ConsumedThing) -> Result<(), Vec<Problem>> {
    let td = remote.td();
    let flag = |kind: &str, name: &str, key: &str| td[kind][name][key].as_bool() == Some(true);
    let mut wanted: Vec<(&'static str, String, &'static str)> = Vec::new();
    for name in remote.names("properties") {
        if !flag("properties", &name, "writeOnly") {
            wanted.push(("properties", name.clone(), "readproperty"));
        }
        if !flag("properties", &name, "readOnly") {
            wanted.push(("properties", name.clone(), "writeproperty"));
        }
        if flag("properties", &name, "observable") {
            wanted.push(("properties", name, "observeproperty"));
        }
    }
    wanted.extend(
        remote
            .names("actions")
            .into_iter()
            .map(|n| ("actions", n, "invokeaction")),
    );
    wanted.extend(
        remote
            .names("events")
            .into_iter()
            .map(|n| ("events", n, "subscribeevent")),
    );
    let failed: Vec<String> = wanted
        .iter()
        .filter_map(|(kind, name, op)| remote.usable(kind, name, op).err())
        .map(|e| e.to_string())
        .collect();
    if !wanted.is_empty() && failed.len() == wanted.len() {
        let pointer = if proxy.via.is_some() {
            "/proxy/via"
        } else {
            "/proxy/td"
        };
        return Err(vec![Problem::new(
            path,
            pointer,
            "forms",
            format!(
                "no form of the remote TD at {} can be used: {}",
                proxy.td, failed[0]
            ),
        )]);
    }
    for why in failed {
        tracing::warn!(
            "{}: bridged with an operation it cannot forward: {why}",
            path.display()
        );
    }
    Ok(())
}

fn consumer_config(proxy: &Proxy) -> ConsumerConfig {
    ConsumerConfig {
        timeout: proxy.timeout,
        via: proxy.via.as_deref().map(|via| match via {
            "coap" => Protocol::Coap,
            "ws" => Protocol::Ws,
            _ => Protocol::Http,
        }),
        ..ConsumerConfig::default()
    }
}
