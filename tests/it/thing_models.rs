//! Thing Models: one model (extending another, with tm:ref and placeholders) instantiated into
//! three things, each served with a TD that validates; broken instances are named precisely.

use crate::common;

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wot_runtime::runtime::{Config, Running};
use wot_runtime::things::{self, IdStore};

fn models_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/things-tm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_model_three_lamps() {
    let mut ids = IdStore::new(None);
    let hosted: Vec<_> = wot_runtime::td::definition::load_dir(&models_dir())
        .unwrap()
        .into_iter()
        .map(|d| things::expose(d.unwrap_or_else(|p| panic!("{p:?}")), &mut ids).unwrap())
        .collect();
    let slugs: Vec<_> = hosted.iter().map(|h| h.thing.slug.clone()).collect();
    assert_eq!(
        slugs,
        ["hall", "kitchen", "porch"],
        "models themselves are not served"
    );
    let running = Running::start(Config::loopback(), hosted).await.unwrap();
    let client = common::client();
    let base = running.http_url();
    let mut ids = std::collections::BTreeSet::new();
    for (slug, max, default) in [("hall", 60, 30), ("kitchen", 100, 80), ("porch", 40, 10)] {
        let td: Value = common::get_json(&client, format!("{base}/things/{slug}")).await;
        common::assert_valid_td(&td);
        assert!(
            ids.insert(td["id"].as_str().unwrap().to_owned()),
            "each instance has its own id"
        );
        assert_eq!(td["title"], format!("{slug} lamp"));
        assert_eq!(
            td["properties"]["brightness"]["maximum"], max,
            "placeholder retyped to a number"
        );
        assert_eq!(td["version"], json!({"instance": "1.0.0", "model": "1.0.0"}));
        assert!(
            td["links"]
                .as_array()
                .unwrap()
                .contains(&json!({"rel": "type", "href": "dimmer.tm.json", "type": "application/tm+json"}))
        );
        assert!(!td.to_string().contains("tm:"), "no tm: term is left: {td}");
        assert_eq!(
            td["properties"]["on"]["type"], "boolean",
            "extended from switch.tm.json"
        );
        let value: Value =
            common::get_json(&client, format!("{base}/things/{slug}/properties/brightness")).await;
        assert_eq!(value, default);
        let too_bright = client
            .put(format!("{base}/things/{slug}/properties/brightness"))
            .json(&json!(max + 1))
            .send()
            .await
            .unwrap();
        assert_eq!(too_bright.status(), StatusCode::BAD_REQUEST);
        let toggled = client
            .post(format!("{base}/things/{slug}/actions/toggle"))
            .send()
            .await
            .unwrap();
        assert_eq!(toggled.json::<Value>().await.unwrap(), json!(true));
    }
    let porch: Value = common::get_json(&client, format!("{base}/things/porch")).await;
    assert!(
        porch["description"].as_str().unwrap().contains("override"),
        "instance members override the model"
    );
    running.stop().await;
}

#[test]
fn broken_instances_name_file_pointer_and_rule() {
    let dir = std::env::temp_dir().join(format!("wot-tm-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for model in ["dimmer.tm.json", "switch.tm.json"] {
        std::fs::copy(models_dir().join(model), dir.join(model)).unwrap();
    }
    let cases = [
        (
            "no-value.json",
            json!({"instance": {"model": "dimmer.tm.json", "placeholders": {"ROOM": "x", "MAX_LEVEL": 5}}}),
            "/instance/placeholders/DEFAULT_LEVEL",
            "tm-placeholder-replacement",
        ),
        (
            "dangling.json",
            json!({"instance": {"model": "nowhere.tm.json"}}),
            "/",
            "tm:ref",
        ),
        (
            "bad-type.json",
            json!({"instance": {"model": "dimmer.tm.json", "placeholders": {"ROOM": "x", "MAX_LEVEL": "high", "DEFAULT_LEVEL": 1}}}),
            "/properties/brightness",
            "type",
        ),
    ];
    for (name, doc, pointer, rule) in cases {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wot"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        assert!(stdout.contains(path.to_str().unwrap()), "{name}: {stdout}");
        assert!(
            stdout.contains(&format!("at {pointer}")),
            "{name}: expected {pointer}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("[{rule}]")),
            "{name}: expected [{rule}]: {stdout}"
        );
    }
}
