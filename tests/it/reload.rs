//! Hot reload: adding, changing and removing files in the things directory adds, updates (with
//! a bumped TD version) and removes things while serving, and other things' connections stay up.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wot_runtime::runtime::Config;

const WAIT: Duration = Duration::from_secs(10);

fn bundled(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("things").join(name)).unwrap()
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::eventually(what, WAIT, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_modify_and_remove_things_while_serving() {
    let dir: PathBuf = std::env::temp_dir().join(format!("wot-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lamp.json"), bundled("lamp.json")).unwrap();
    std::fs::write(dir.join("thermostat.json"), bundled("thermostat.json")).unwrap();
    let config = Config {
        watch_period: Duration::from_millis(100),
        ..Config::loopback()
    };
    let running = common::serve_dir(&dir, config).await;
    let client = common::client();
    let base = running.http_url();
    // A connection to a thing that is not touched.
    let mut target = common::SseReader::new(
        client
            .get(format!("{base}/things/thermostat/properties/target"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );
    target.wait_for_text(": subscribed", WAIT).await;
    let lamp_before: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    client
        .put(format!("{base}/things/lamp/properties/brightness"))
        .json(&json!(64))
        .send()
        .await
        .unwrap();

    // Add.
    std::fs::write(dir.join("host.json"), bundled("host.json")).unwrap();
    let status = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    };
    eventually("host added", || async {
        status(format!("{base}/things/host")).await == StatusCode::OK
    })
    .await;
    let host_td: Value = common::get_json(&client, format!("{base}/things/host")).await;
    common::assert_valid_td(&host_td);
    // Hubs see it too, on the WebThings API.
    eventually("host on /webthing", || async {
        status(format!("{base}/webthing/host")).await == StatusCode::OK
    })
    .await;

    // A broken edit leaves the running thing alone.
    std::fs::write(dir.join("lamp.json"), "{ broken").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(format!("{base}/things/lamp")).await, StatusCode::OK);

    // Modify: a new title, a bumped version, the same id, and the written value kept.
    let mut lamp: Value = serde_json::from_str(&bundled("lamp.json")).unwrap();
    lamp["title"] = json!("Desk lamp");
    std::fs::write(dir.join("lamp.json"), lamp.to_string()).unwrap();
    eventually("lamp updated", || async {
        let td: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
        td["title"] == "Desk lamp"
    })
    .await;
    let lamp_after: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    common::assert_valid_td(&lamp_after);
    assert_eq!(lamp_after["id"], lamp_before["id"]);
    assert!(lamp_before.get("version").is_none());
    let bumped = lamp_after["version"]["instance"].as_str().unwrap();
    assert!(bumped == "1.0.1" || bumped == "1.0.2", "{bumped}");
    let kept: Value = common::get_json(&client, format!("{base}/things/lamp/properties/brightness")).await;
    assert_eq!(kept, json!(64));
    eventually("lamp updated on /webthing", || async {
        let d: Value = common::get_json(&client, format!("{base}/webthing/lamp")).await;
        d["title"] == "Desk lamp"
    })
    .await;

    // Remove.
    std::fs::remove_file(dir.join("host.json")).unwrap();
    eventually("host removed", || async {
        status(format!("{base}/things/host")).await == StatusCode::NOT_FOUND
    })
    .await;
    let listed: Vec<Value> = common::get_json(&client, format!("{base}/things")).await;
    assert_eq!(listed.len(), 2);
    eventually("host gone from /webthing", || async {
        status(format!("{base}/webthing/host")).await == StatusCode::NOT_FOUND
    })
    .await;
    let hub_list: Vec<Value> = common::get_json(&client, format!("{base}/webthing")).await;
    assert_eq!(hub_list.len(), 2);

    // The untouched thing's subscriber never noticed: it still receives changes.
    client
        .put(format!("{base}/things/thermostat/properties/target"))
        .json(&json!(23))
        .send()
        .await
        .unwrap();
    assert_eq!(target.next(WAIT).await.data, "23");
    running.stop().await;
}

/// TDs requested all along while their thing is reloaded, for more origins than the cache keeps
/// (so some TD is always being built when the reload lands): once the reload is in place and the
/// requests under way have ended, every origin gets the new TD, never the one built from the
/// thing it replaced. Whether a reload lands mid-build is up to the scheduler; the unit tests of
/// `td::publish` interleave that race deterministically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_td_requests_serves_the_new_td() {
    const ORIGINS: u16 = 64;
    let dir: PathBuf = std::env::temp_dir().join(format!("wot-reload-td-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lamp: Value = serde_json::from_str(&bundled("lamp.json")).unwrap();
    std::fs::write(dir.join("lamp.json"), lamp.to_string()).unwrap();
    let config = Config {
        watch_period: Duration::from_millis(50),
        workers: 2,
        ..Config::loopback()
    };
    let running = common::serve_dir(&dir, config).await;
    let client = common::client();
    let url = format!("{}/things/lamp", running.http_url());
    let title_for = move |origin: u16| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let td: Value = common::json_of(
                client
                    .get(url)
                    .header("Host", format!("localhost:{}", 1000 + origin)),
            )
            .await;
            td["title"].as_str().unwrap_or_default().to_owned()
        }
    };
    for round in 1..=8 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests: Vec<_> = (0..4)
            .map(|first| {
                let (stop, title_for) = (stop.clone(), title_for.clone());
                tokio::spawn(async move {
                    let mut origin = first;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        title_for(origin % ORIGINS).await;
                        origin += 1;
                    }
                })
            })
            .collect();
        // A longer title each round, so the file's length changes too.
        let title = format!("Lamp{}", "!".repeat(round));
        lamp["title"] = json!(title);
        std::fs::write(dir.join("lamp.json"), lamp.to_string()).unwrap();
        eventually("the reload", || async {
            running.servient.thing("lamp").is_ok_and(|t| t.title() == title)
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in requests {
            r.await.unwrap();
        }
        for origin in 0..ORIGINS {
            assert_eq!(title_for(origin).await, title, "round {round}, origin {origin}");
        }
    }
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
