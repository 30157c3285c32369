//! A thing defined in Rust through the library API, with custom async action handlers, served by
//! the same runtime as the bundled things.
//!
//!     cargo run --example custom_thing            # serves on http://127.0.0.1:8081
//!     curl -s localhost:8081/things/door/properties
//!     curl -si -X POST localhost:8081/things/door/actions/open
//!
//! The model is an ordinary TD without forms; the runtime adds forms, ids, security and base.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wot_runtime::core::{ActionContext, Error, ExposedThing, ThingBuilder};
use wot_runtime::runtime::{Config, Running};
use wot_runtime::things::Hosted;

/// A garage door: `open` and `close` move it a step every 50 ms; a locked door refuses to move.
pub fn door() -> Arc<ExposedThing> {
    let model = json!({
        "title": "Garage door",
        "description": "A door that takes its time",
        "properties": {
            "position": {"type": "integer", "minimum": 0, "maximum": 100, "unit": "percent",
                         "readOnly": true, "observable": true, "default": 0},
            "locked": {"type": "boolean", "default": false, "observable": true}
        },
        "actions": {
            "open": {"synchronous": false, "output": {"type": "integer"}},
            "close": {"synchronous": false, "output": {"type": "integer"}}
        },
        "events": {
            "arrived": {"data": {"type": "integer"}}
        }
    });
    ThingBuilder::new("door", model)
        .on_action("open", |ctx| travel(ctx, 100))
        .on_action("close", |ctx| travel(ctx, 0))
        .build()
        .expect("the door model is valid")
}

async fn travel(ctx: ActionContext, to: i64) -> Result<Option<Value>, Error> {
    let door = ctx.thing;
    if door.property("locked")?.value() == json!(true) {
        return Err(Error::ActionFailed("the door is locked".into()));
    }
    let mut at = door.property("position")?.value().as_i64().unwrap_or(0);
    while at != to {
        tokio::time::sleep(Duration::from_millis(50)).await;
        at += (to - at).signum() * 10;
        door.update_property("position", json!(at))?;
    }
    door.emit_event("arrived", Some(json!(at)))?;
    Ok(Some(json!(at)))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let config = Config {
        http_port: 8081,
        ..Config::loopback()
    };
    let hosted = vec![Hosted {
        thing: door(),
        behaviors: Default::default(),
    }];
    let running = Running::start(config, hosted).await.expect("runtime starts");
    println!("{}", running.ready_line());
    wot_runtime::runtime::wait_for_signal().await;
    running.stop().await;
}
