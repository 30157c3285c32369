//! Behaviours declared in a thing file, driven over HTTP: command-backed properties and actions
//! (timeout, cancel, garbage), line events from a long-running command, file sources that
//! notify observers, and simulated signals.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wot_runtime::runtime::{Config, Running};
use wot_runtime::things::{self, IdStore};

const WAIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wot-behaviours-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn serve(file: &Path, model: &Value) -> Running {
    std::fs::write(file, serde_json::to_vec_pretty(model).unwrap()).unwrap();
    let definition = wot_runtime::td::definition::load_file(file).unwrap_or_else(|p| panic!("{p:?}"));
    let hosted = things::expose(definition, &mut IdStore::new(None)).unwrap();
    Running::start(Config::loopback(), vec![hosted]).await.unwrap()
}

async fn status_until_done(client: &reqwest::Client, location: &str) -> Value {
    loop {
        let s: Value = common::get_json(client, location).await;
        if s["status"] == "completed" || s["status"] == "failed" {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_bridge_properties_and_actions() {
    let dir = temp("commands");
    let reading = dir.join("reading");
    std::fs::write(&reading, "12.5").unwrap();
    let pid_file = dir.join("slow.pid");
    let model = json!({
        "title": "Bridge",
        "properties": {
            "reading": {"type": "number", "readOnly": true, "observable": true,
                "runtime": {"source": {"command": {"argv": ["cat", reading], "parse": "number", "pollMs": 50}}}},
            "broken": {"type": "number", "readOnly": true, "default": 0,
                "runtime": {"source": {"command": {"argv": ["echo", "garbage"], "pollMs": 50}}}}
        },
        "actions": {
            "sum": {"synchronous": true,
                "input": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
                "output": {"type": "object", "properties": {"sum": {"type": "number"}}, "required": ["sum"]},
                "runtime": {"effect": {"command": {"argv": [fixture("sum.sh")], "timeoutMs": 5000}}}},
            "hang": {"synchronous": true,
                "runtime": {"effect": {"command": {"argv": ["sleep", "30"], "timeoutMs": 300}}}},
            "lies": {"synchronous": true, "output": {"type": "integer"},
                "runtime": {"effect": {"command": {"argv": ["echo", "\"a string\""]}}}},
            "slow": {"synchronous": false,
                "runtime": {"effect": {"command": {"argv": [fixture("slow.sh"), pid_file], "timeoutMs": 60000}}}}
        }
    });
    let running = serve(&dir.join("bridge.json"), &model).await;
    let client = common::client();
    let base = format!("{}/things/bridge", running.http_url());
    let td: Value = common::get_json(&client, &base).await;
    common::assert_valid_td(&td);
    assert!(
        td.to_string().find("runtime").is_none(),
        "runtime keys never reach the TD"
    );

    // A command-backed property follows its command's output, and observers hear the change.
    let mut sse = common::SseReader::new(
        client
            .get(format!("{base}/properties/reading"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );
    sse.wait_for_text(": subscribed", WAIT).await;
    // The first poll (every 50 ms) gives the command's output.
    common::eventually("the reading is the command's output", WAIT, || async {
        let value: Value = common::get_json(&client, format!("{base}/properties/reading")).await;
        value == json!(12.5)
    })
    .await;
    std::fs::write(&reading, "13.25").unwrap();
    loop {
        if sse.next(WAIT).await.data == "13.25" {
            break;
        }
    }
    // A command printing garbage leaves the value alone and the runtime running.
    assert_eq!(
        client
            .get(format!("{base}/properties/broken"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!(0)
    );

    // A command as an action: input on stdin, output parsed and validated.
    let res = client
        .post(format!("{base}/actions/sum"))
        .json(&json!({"a": 2, "b": 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"sum": 42}));
    // A hanging command is killed at its timeout; the action fails with a clear message.
    let res = client.post(format!("{base}/actions/hang")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("killed"),
        "{problem}"
    );
    // Output that does not fit the output schema is refused.
    let res = client.post(format!("{base}/actions/lies")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("output schema")
    );

    // Cancelling an action kills its command.
    let res = client.post(format!("{base}/actions/slow")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file)
            && !pid.trim().is_empty()
        {
            break pid.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        client.delete(&location).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let gone = async {
        // A killed child stays a zombie until reaped; either way it no longer runs.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("the cancelled command was killed");
    assert_eq!(status_until_done(&client, &location).await["status"], "failed");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_files_and_simulations_drive_events_and_properties() {
    let dir = temp("sources");
    let level = dir.join("level");
    std::fs::write(&level, "level: 3\n").unwrap();
    let model = json!({
        "title": "Sensors",
        "properties": {
            "level": {"type": "integer", "readOnly": true, "observable": true,
                "runtime": {"source": {"file": {"path": level, "pattern": "level: (\\d+)", "pollMs": 50, "decimals": 0}}}},
            "wave": {"type": "number", "minimum": 10, "maximum": 20, "readOnly": true, "observable": true,
                "runtime": {"source": {"simulated": {"kind": "sine", "min": 10, "max": 20, "periodMs": 20, "cycleMs": 400}}}},
            "walk": {"type": "number", "minimum": 0, "maximum": 5, "readOnly": true,
                "runtime": {"source": {"simulated": {"kind": "randomWalk", "min": 0, "max": 5, "step": 2, "periodMs": 10}}}},
            "mode": {"type": "string", "enum": ["eco", "boost"], "readOnly": true, "observable": true,
                "runtime": {"source": {"simulated": {"kind": "steps", "values": ["eco", "boost"], "periodMs": 50}}}}
        },
        "events": {
            "tick": {"data": {"type": "object", "properties": {"tick": {"type": "integer"}}, "required": ["tick"]},
                "runtime": {"lines": {"argv": [fixture("ticker.sh")], "restartMs": 100}}}
        }
    });
    let running = serve(&dir.join("sensors.json"), &model).await;
    let client = common::client();
    let base = format!("{}/things/sensors", running.http_url());
    let sse = |path: &str| {
        let request = client
            .get(format!("{base}/{path}"))
            .header("Accept", "text/event-stream");
        async move {
            let mut reader = common::SseReader::new(request.send().await.unwrap());
            reader.wait_for_text(": subscribed", WAIT).await;
            reader
        }
    };
    // Each line of the long-running command is an event; garbage lines are skipped.
    let mut ticks = sse("events/tick").await;
    let first: Value = serde_json::from_str(&ticks.next(WAIT).await.data).unwrap();
    let second: Value = serde_json::from_str(&ticks.next(WAIT).await.data).unwrap();
    assert_eq!(
        second["tick"].as_i64().unwrap(),
        first["tick"].as_i64().unwrap() + 1
    );
    // A file source updated by the test triggers an observe notification.
    let mut levels = sse("properties/level").await;
    // The file's first value is in, so that 7 comes as a change.
    common::eventually("the level is the file's", WAIT, || async {
        let value: Value = common::get_json(&client, format!("{base}/properties/level")).await;
        value == json!(3)
    })
    .await;
    std::fs::write(&level, "level: 7\n").unwrap();
    loop {
        if levels.next(WAIT).await.data == "7" {
            break;
        }
    }
    // Simulations stay within their bounds and move.
    let mut waves = sse("properties/wave").await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 5 {
        let v: f64 = waves.next(WAIT).await.data.parse().unwrap();
        assert!((10.0..=20.0).contains(&v), "{v}");
        seen.insert((v * 100.0) as i64);
    }
    // The random walk stays within its bounds, and moves.
    let walked = std::cell::RefCell::new(std::collections::BTreeSet::new());
    common::eventually("the walk takes 5 values", WAIT, || {
        let (walk, walked) = (client.get(format!("{base}/properties/walk")), &walked);
        async move {
            let v: f64 = walk
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
                .as_f64()
                .unwrap();
            assert!((0.0..=5.0).contains(&v), "{v}");
            walked.borrow_mut().insert(v.to_bits());
            walked.borrow().len() >= 5
        }
    })
    .await;
    let mut modes = sse("properties/mode").await;
    let a = modes.next(WAIT).await.data;
    let b = modes.next(WAIT).await.data;
    assert_ne!(a, b);
    assert!(["\"eco\"", "\"boost\""].contains(&a.as_str()));
    running.stop().await;
}
