//! The library API over the wire: the example's Rust-defined door, with its custom async
//! handlers, served by the runtime and driven over HTTP.

mod common;

#[path = "../examples/custom_thing.rs"]
mod example;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wot_runtime::runtime::{Config, Running};
use wot_runtime::things::Hosted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_defined_in_rust_is_served_like_any_other() {
    let hosted = vec![Hosted {
        thing: example::door(),
        behaviors: Default::default(),
    }];
    let running = Running::start(Config::loopback(), hosted).await.unwrap();
    let client = common::client();
    let base = running.http_url();
    let td: Value = common::get_json(&client, format!("{base}/things/door")).await;
    common::assert_valid_td(&td);
    let mut events = common::SseReader::new(
        client
            .get(format!("{base}/things/door/events/arrived"))
            .send()
            .await
            .unwrap(),
    );
    events.wait_for_text(": subscribed", Duration::from_secs(5)).await;
    let res = client
        .post(format!("{base}/things/door/actions/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let arrived = events.next(Duration::from_secs(10)).await;
    assert_eq!(arrived.data, "100");
    let status: Value = common::get_json(&client, &location).await;
    assert_eq!(
        (status["status"].clone(), status["output"].clone()),
        (json!("completed"), json!(100))
    );
    // The handler's own error reaches the client as a failed status.
    client
        .put(format!("{base}/things/door/properties/locked"))
        .json(&json!(true))
        .send()
        .await
        .unwrap();
    let res = client
        .post(format!("{base}/things/door/actions/close"))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let failed = loop {
        let s: Value = common::get_json(&client, &location).await;
        if s["status"] == "failed" || s["status"] == "completed" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]["detail"].as_str().unwrap().contains("locked"),
        "{failed}"
    );
    let position: Value = common::get_json(&client, format!("{base}/things/door/properties/position")).await;
    assert_eq!(position, 100);
    running.stop().await;
}
