//! SSE observation and event subscription, and the asynchronous action lifecycle, over HTTP.

use crate::common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn sse(client: &reqwest::Client, url: String) -> common::SseReader {
    let res = client
        .get(url)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut reader = common::SseReader::new(res);
    reader.wait_for_text(": subscribed", WAIT).await;
    reader
}

async fn put(client: &reqwest::Client, url: String, body: Value) -> StatusCode {
    client.put(url).json(&body).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_a_property_write_it_receive_the_change() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let mut one = sse(&client, format!("{base}/things/lamp/properties/brightness")).await;
    let mut all = sse(&client, format!("{base}/things/lamp/properties")).await;
    assert_eq!(
        put(
            &client,
            format!("{base}/things/lamp/properties/brightness"),
            json!(77)
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let frame = one.next(WAIT).await;
    assert_eq!(frame.event.as_deref(), Some("brightness"));
    assert_eq!(frame.data, "77");
    // The id is the RFC 3339 time of the change, then the thing's notification sequence number.
    let id = frame.id.unwrap();
    let (time, seq) = id.rsplit_once('/').expect("time/sequence");
    assert!(time.ends_with('Z') && time.contains('T'), "{id}");
    assert!(seq.parse::<u64>().is_ok_and(|n| n > 0), "{id}");
    let frame = all.next(WAIT).await;
    assert_eq!(
        (frame.event.as_deref(), frame.data.as_str()),
        (Some("brightness"), "77")
    );
    // A write through writemultipleproperties reaches the single-property observer too.
    assert_eq!(
        put(
            &client,
            format!("{base}/things/lamp/properties"),
            json!({"brightness": 12, "on": true})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(one.next(WAIT).await.data, "12");
    // The readall observer sees both changes, named.
    let mut seen = [all.next(WAIT).await, all.next(WAIT).await];
    seen.sort_by(|a, b| a.event.cmp(&b.event));
    assert_eq!(seen[0].event.as_deref(), Some("brightness"));
    assert_eq!(
        (seen[1].event.as_deref(), seen[1].data.as_str()),
        (Some("on"), "true")
    );
    // Curl's default Accept still gets plain JSON.
    let plain = client
        .get(format!("{base}/things/lamp/properties/brightness"))
        .header("Accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.headers()["content-type"], "application/json");
    assert_eq!(plain.text().await.unwrap(), "12");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_fade_steps_arrive_as_notifications() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let mut event = sse(&client, format!("{base}/things/lamp/events/faded")).await;
    let mut all_events = sse(&client, format!("{base}/things/lamp/events")).await;
    let mut brightness = sse(&client, format!("{base}/things/lamp/properties/brightness")).await;
    let res = client
        .post(format!("{base}/things/lamp/actions/fade"))
        .json(&json!({"level": 100, "duration": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    // From 50 to 100 in 5 steps of 100 ms: every intermediate value is a notification.
    let mut steps = Vec::new();
    while steps.last() != Some(&100) {
        steps.push(brightness.next(WAIT).await.data.parse::<i64>().unwrap());
    }
    assert_eq!(steps, vec![60, 70, 80, 90, 100]);
    let frame = event.next(WAIT).await;
    assert_eq!(
        (frame.event.as_deref(), frame.data.as_str()),
        (Some("faded"), "100")
    );
    let frame = all_events.next(WAIT).await;
    assert_eq!(
        (frame.event.as_deref(), frame.data.as_str()),
        (Some("faded"), "100")
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thermostat_event_fires_when_the_temperature_crosses_its_limit() {
    // The bundled thermostat, drifting every 50 ms instead of every second.
    let running = common::start_at_test_speed(wot_runtime::runtime::Config::loopback()).await;
    let client = common::client();
    let base = running.http_url();
    let mut event = sse(&client, format!("{base}/things/thermostat/events/overheating")).await;
    let mut temperature = sse(
        &client,
        format!("{base}/things/thermostat/properties/temperature"),
    )
    .await;
    assert_eq!(
        put(
            &client,
            format!("{base}/things/thermostat/properties/target"),
            json!(35)
        )
        .await,
        StatusCode::NO_CONTENT
    );
    // The simulated temperature drifts toward the target and is observable on the way.
    let first: f64 = temperature.next(WAIT).await.data.parse().unwrap();
    assert!(first > 19.0, "{first}");
    let frame = event.next(WAIT).await;
    let at: f64 = frame.data.parse().unwrap();
    assert!(
        at > 25.0,
        "the event carries the temperature that crossed the limit: {at}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_readings_are_real() {
    // The bundled host thing, reading /proc every 50 ms.
    let running = common::start_at_test_speed(wot_runtime::runtime::Config::loopback()).await;
    let client = common::client();
    let base = running.http_url();
    let all: Value = common::get_json(&client, format!("{base}/things/host/properties")).await;
    let proc_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime = all["uptime"].as_i64().unwrap() as f64;
    assert!(
        (uptime - proc_uptime).abs() < 5.0,
        "uptime {uptime} vs /proc/uptime {proc_uptime}"
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        all["memoryTotal"].as_i64().unwrap(),
        (total_kib / 1024.0).round() as i64
    );
    assert!(all["loadAverage"].as_f64().unwrap() >= 0.0);
    // Uptime is observable and moves with the clock.
    let mut uptime_stream = sse(&client, format!("{base}/things/host/properties/uptime")).await;
    let next: i64 = uptime_stream.next(WAIT).await.data.parse().unwrap();
    assert!(next as f64 >= uptime, "{next} >= {uptime}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_action_lifecycle_and_cancel() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    // Invoke → 201 + Location + ActionStatus whose href is the Location.
    let res = client
        .post(format!("{base}/things/lamp/actions/fade"))
        .json(&json!({"level": 0, "duration": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let status: Value = res.json().await.unwrap();
    assert_eq!(status["href"], location);
    assert!(["pending", "running"].contains(&status["status"].as_str().unwrap()));
    assert!(status["timeRequested"].as_str().unwrap().ends_with('Z'));
    // Query shows it running, then completed with its output.
    let mut running_status: Value = common::get_json(&client, &location).await;
    for _ in 0..20 {
        if running_status["status"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        running_status = common::get_json(&client, &location).await;
    }
    assert_eq!(running_status["status"], "running", "{running_status}");
    let done = loop {
        let s: Value = common::get_json(&client, &location).await;
        if s["status"] != "running" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], 0);
    assert!(done["timeEnded"].is_string());
    let brightness: Value =
        common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
    assert_eq!(brightness, 0);

    // Cancel a long fade: 204, the status shows it stopped, and the ramp stops moving. From 0 to
    // 100 in 10 s, it moves by one every step (100 ms): cancelled once it moved.
    let res = client
        .post(format!("{base}/things/lamp/actions/fade"))
        .json(&json!({"level": 100, "duration": 10000}))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    common::eventually("the fade moves", WAIT, || async {
        let brightness: Value =
            common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
        brightness.as_i64().unwrap() > 0
    })
    .await;
    let cancel = client.delete(&location).send().await.unwrap();
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let stopped: Value = common::get_json(&client, &location).await;
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert_eq!(stopped["error"]["type"], "/problems/cancelled");
    let at_cancel: Value =
        common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later: Value = common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
    assert_eq!(
        at_cancel, later,
        "a cancelled fade no longer changes the brightness"
    );
    // Cancelling twice is a conflict, not a crash.
    assert_eq!(
        client.delete(&location).send().await.unwrap().status(),
        StatusCode::CONFLICT
    );
    // queryallactions lists both, newest first.
    let all: Value = common::get_json(&client, format!("{base}/things/lamp/actions")).await;
    let fades = all["fade"].as_array().unwrap();
    assert_eq!(fades.len(), 2);
    assert_eq!(fades[0]["href"], location);
    // A synchronous action answers 200 with its output.
    let toggled = client
        .post(format!("{base}/things/lamp/actions/toggle"))
        .send()
        .await
        .unwrap();
    assert_eq!(toggled.status(), StatusCode::OK);
    assert_eq!(toggled.json::<Value>().await.unwrap(), json!(true));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_keepalive_comments_and_ends_on_shutdown() {
    let config = wot_runtime::runtime::Config {
        sse_keepalive: Duration::from_millis(200),
        ..wot_runtime::runtime::Config::loopback()
    };
    let running = common::start_with(config).await;
    let client = common::client();
    let mut stream = sse(&client, format!("{}/things/lamp/events", running.http_url())).await;
    stream.wait_for_text(": keep-alive", WAIT).await;
    // The stop ends the stream: the body comes to its proper end (a broken-off connection
    // would be an error), with nothing but comments before it, and the stop itself finishes.
    let stop = tokio::spawn(running.stop());
    let mut response = stream.into_response();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = response.chunk().await.expect("the stream ends cleanly") {
            assert!(chunk.starts_with(b":"), "only comments before the end: {chunk:?}");
        }
    });
    ended.await.expect("the stream ends on shutdown");
    tokio::time::timeout(WAIT, stop)
        .await
        .expect("the stop finishes")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_the_changes_it_missed() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let url = format!("{base}/things/lamp/properties/brightness");
    let mut first = sse(&client, url.clone()).await;
    put(&client, url.clone(), json!(1)).await;
    let seen = first.next(WAIT).await;
    drop(first);
    put(&client, url.clone(), json!(2)).await;
    put(&client, url.clone(), json!(3)).await;
    let res = client
        .get(&url)
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", seen.id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut again = common::SseReader::new(res);
    assert_eq!(again.next(WAIT).await.data, "2");
    assert_eq!(again.next(WAIT).await.data, "3");
    put(&client, url.clone(), json!(4)).await;
    assert_eq!(
        again.next(WAIT).await.data,
        "4",
        "live changes follow the replay, none twice"
    );
    running.stop().await;
}
