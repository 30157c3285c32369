//! Durable state: acknowledged writes survive `kill -9`, values are restored on start, and a
//! stored value that no longer fits its schema falls back to the default.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const WOT: &str = env!("CARGO_BIN_EXE_wot");

struct Server {
    child: Child,
    http: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(things: &Path, state: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(WOT)
            .arg("serve")
            .arg(things)
            .args([
                "--host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--no-coap",
                "--no-mdns",
                "--state-dir",
            ])
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        Server {
            child,
            http: ready["http"].as_str().unwrap().to_owned(),
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wot-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bundled_things() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("things")
}

async fn read(client: &reqwest::Client, http: &str, thing: &str, property: &str) -> Value {
    common::get_json(client, format!("{http}/things/{thing}/properties/{property}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_survives_kill_9() {
    let state = temp("one");
    let client = common::client();
    let server = Server::start(&bundled_things(), &state, &[]);
    let res = client
        .put(format!("{}/things/thermostat/properties/target", server.http))
        .json(&json!(27.5))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // toggle's effect is durable too: a property changed by an action is stored like a write.
    let toggled: Value =
        common::json_of(client.post(format!("{}/things/lamp/actions/toggle", server.http))).await;
    assert_eq!(toggled, json!(true));
    server.kill9();
    let server = Server::start(&bundled_things(), &state, &[]);
    assert_eq!(
        read(&client, &server.http, "thermostat", "target").await,
        json!(27.5)
    );
    assert_eq!(read(&client, &server.http, "lamp", "on").await, json!(true));
    // Untouched properties start at their defaults.
    assert_eq!(read(&client, &server.http, "lamp", "brightness").await, json!(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_writes_then_kill_9_keep_every_last_acknowledged_value() {
    // `periodic` promises this only for clean shutdowns (see the next test).
    for durability in ["immediate"] {
        let state = temp(&format!("many-{durability}"));
        let client = common::client();
        let server = Server::start(&bundled_things(), &state, &["--durability", durability]);
        // One sequential writer per property, all at once: 10,000 acknowledged writes in total.
        let targets = [
            ("lamp", "brightness", 101i64),
            ("thermostat", "target", 31),
            ("lamp", "on", 2),
        ];
        let per_property = 10_000 / targets.len() + 1;
        let mut writers = Vec::new();
        for (thing, property, modulo) in targets {
            let client = client.clone();
            let url = format!("{}/things/{thing}/properties/{property}", server.http);
            writers.push(tokio::spawn(async move {
                let mut last = Value::Null;
                for i in 0..per_property {
                    let value = match property {
                        "on" => json!(i % 2 == 0),
                        "target" => json!(5 + (i as i64 % modulo)),
                        _ => json!(i as i64 % modulo),
                    };
                    let res = client.put(&url).json(&value).send().await.unwrap();
                    assert_eq!(res.status(), 204);
                    last = value;
                }
                (thing, property, last)
            }));
        }
        let mut acknowledged = Vec::new();
        for w in writers {
            acknowledged.push(w.await.unwrap());
        }
        server.kill9();
        let server = Server::start(&bundled_things(), &state, &["--durability", durability]);
        for (thing, property, last) in acknowledged {
            let stored = read(&client, &server.http, thing, property).await;
            // A target read back as a float is the same number.
            assert_eq!(stored.as_f64(), last.as_f64(), "{durability}: {thing}.{property}");
            assert_eq!(
                stored.as_bool(),
                last.as_bool(),
                "{durability}: {thing}.{property}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_durability_keeps_every_write_across_a_clean_shutdown() {
    let state = temp("periodic");
    let client = common::client();
    let mut server = Server::start(&bundled_things(), &state, &["--durability", "periodic"]);
    let url = format!("{}/things/lamp/properties/brightness", server.http);
    for i in 0..500 {
        assert_eq!(
            client
                .put(&url)
                .json(&json!(i % 101))
                .send()
                .await
                .unwrap()
                .status(),
            204
        );
    }
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(server.child.wait().unwrap().success());
    let server = Server::start(&bundled_things(), &state, &["--durability", "periodic"]);
    assert_eq!(
        read(&client, &server.http, "lamp", "brightness").await,
        json!(499 % 101)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_that_no_longer_validates_falls_back_to_the_default() {
    let dir = temp("schema");
    let things = dir.join("things");
    std::fs::create_dir_all(&things).unwrap();
    let lamp = std::fs::read_to_string(bundled_things().join("lamp.json")).unwrap();
    std::fs::write(things.join("lamp.json"), &lamp).unwrap();
    let state = dir.join("state");
    let client = common::client();
    let server = Server::start(&things, &state, &[]);
    client
        .put(format!("{}/things/lamp/properties/brightness", server.http))
        .json(&json!(90))
        .send()
        .await
        .unwrap();
    server.kill9();
    // The new version of the file caps brightness at 80: the stored 90 no longer fits.
    let mut model: Value = serde_json::from_str(&lamp).unwrap();
    model["properties"]["brightness"]["maximum"] = json!(80);
    std::fs::write(things.join("lamp.json"), model.to_string()).unwrap();
    let server = Server::start(&things, &state, &[]);
    assert_eq!(read(&client, &server.http, "lamp", "brightness").await, json!(50));
}
