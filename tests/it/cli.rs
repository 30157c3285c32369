//! The `wot` binary as scripts use it: the ready line, `--base-url`, `--state-dir`, the bundled
//! things when ./things is absent, graceful SIGTERM, the open-file limit `wot serve` raises, the
//! WebSocket flags, and `wot validate`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WOT: &str = env!("CARGO_BIN_EXE_wot");

struct Server {
    child: Child,
    ready: Value,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str], cwd: &std::path::Path) -> Server {
    let child = Command::new(WOT)
        .arg("serve")
        .args([
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--no-coap",
            "--no-mdns",
        ])
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wot starts");
    started(child)
}

/// The running server once it has printed its ready line.
fn started(mut child: Child) -> Server {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("a ready line");
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
    Server { child, ready }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wot-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `wot serve` raises its soft open-file limit to the hard one: started under a soft limit of
/// 512, it runs with the hard limit.
#[test]
fn serve_raises_its_open_file_limit_to_the_hard_one() {
    let dir = temp_dir("nofile");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 512 && exec '{WOT}' serve --host 127.0.0.1 --http-port 0 --no-coap --no-mdns"
        ))
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts");
    let server = started(child);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a limit line");
    // "Max open files  <soft>  <hard>  files"
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "512", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_line_and_bundled_things_without_setup() {
    // An empty working directory: no ./things, so the embedded ones are served.
    let dir = temp_dir("bundled");
    let server = serve(&[], &dir);
    assert_eq!(server.ready["event"], "ready");
    let http = server.ready["http"].as_str().unwrap();
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    assert_eq!(
        server.ready["things"],
        serde_json::json!(["lamp", "thermostat", "host"])
    );
    let td: Value = common::get_json(&common::client(), format!("{http}/things/lamp")).await;
    common::assert_valid_td(&td);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_url_sets_td_base_and_state_dir_keeps_ids() {
    let dir = temp_dir("state");
    let things = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("things");
    let state = dir.join("state");
    let args = [
        things.to_str().unwrap(),
        "--base-url",
        "https://lamp.example:8443/",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let first_id = {
        let server = serve(&args, &dir);
        let http = server.ready["http"].as_str().unwrap().to_owned();
        let td: Value = common::get_json(&common::client(), format!("{http}/things/lamp")).await;
        assert_eq!(td["base"], "https://lamp.example:8443/");
        common::assert_valid_td(&td);
        let res = common::client()
            .post(format!("{http}/things/lamp/actions/fade"))
            .json(&serde_json::json!({"level": 1, "duration": 10000}))
            .send()
            .await
            .unwrap();
        assert!(
            res.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("https://lamp.example:8443/things/lamp/actions/fade/")
        );
        td["id"].as_str().unwrap().to_owned()
    };
    let server = serve(&args, &dir);
    let http = server.ready["http"].as_str().unwrap().to_owned();
    let td: Value = common::get_json(&common::client(), format!("{http}/things/lamp")).await;
    assert_eq!(td["id"], first_id, "the TD id survives a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_sse_client_exits_zero_within_two_seconds() {
    let dir = temp_dir("sigterm");
    let mut server = serve(&[], &dir);
    let http = server.ready["http"].as_str().unwrap().to_owned();
    let res = common::client()
        .get(format!("{http}/things/lamp/properties/brightness"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut stream = common::SseReader::new(res);
    stream.wait_for_text(": subscribed", Duration::from_secs(5)).await;
    let started = Instant::now();
    sigterm(&server.child);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn validate_names_file_pointer_and_rule() {
    let ok = Command::new(WOT)
        .arg("validate")
        .args(
            ["lamp.json", "thermostat.json", "host.json"]
                .map(|f| format!("{}/things/{f}", env!("CARGO_MANIFEST_DIR"))),
        )
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let dir = temp_dir("validate");
    // Semantic annotations: `@type` on the thing and its affordances, with the file's own
    // `@context` entries (the TD URI among them or not).
    let typed = [
        r#"{"@context": [{"saref": "https://saref.etsi.org/core/"}], "@type": ["saref:Switch", "OnOffSwitch"], "title": "x",
            "properties": {"on": {"@type": "saref:OnOffState", "type": "boolean"}},
            "actions": {"flip": {"@type": ["saref:Command"], "input": {"type": "object", "properties": {"v": {"type": "integer", "@type": "saref:Level", "unit": "percent"}}}}},
            "events": {"e": {"@type": "saref:Event", "data": {"type": "string"}}}}"#,
        r#"{"@context": ["https://www.w3.org/2022/wot/td/v1.1", "https://example.org/vocab"], "@type": "Light", "title": "x"}"#,
        r#"{"@context": {"wt": "https://webthings.io/schemas#"}, "@type": "wt:Light", "title": "x"}"#,
    ];
    for (i, text) in typed.iter().enumerate() {
        let path = dir.join(format!("typed{i}.json"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(WOT).arg("validate").arg(&path).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "typed{i}: {stdout}");
        assert!(stdout.contains("ok (thing definition)"), "typed{i}: {stdout}");
    }
    let cases = [
        (
            "broken.json",
            r#"{"title": "x", "properties": {"p": {"type": "integer", "minimum": "zero"}}}"#,
            "/properties/p/minimum",
        ),
        (
            "typo.json",
            r#"{"title": "x", "properties": {"p": {"type": "number", "runtime": {"source": {"file": {"pth": "/x"}}}}}}"#,
            "/properties/p/runtime/source/file/pth",
        ),
        (
            "forms.json",
            r#"{"title": "x", "actions": {"a": {"forms": []}}}"#,
            "/actions/a/forms",
        ),
        ("notjson.json", "{\"title\": ", "/"),
        (
            "context.json",
            r#"{"@context": ["https://www.w3.org/2022/wot/td/v1.1", {"saref": 7}], "@type": "saref:Switch", "title": "x"}"#,
            "/@context/1/saref",
        ),
        (
            "type.json",
            r#"{"@type": ["Light", 7], "title": "x"}"#,
            "/@type/1",
        ),
        (
            "td.json",
            r#"{"@context": "https://www.w3.org/2022/wot/td/v1.1", "title": "t", "security": "nosec_sc", "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}}, "properties": {"p": {"type": "integer", "forms": []}}}"#,
            "/properties/p/forms",
        ),
    ];
    for (name, text, pointer) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(WOT).arg("validate").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(path.to_str().unwrap()),
            "{name}: names the file: {stdout}"
        );
        assert!(
            stdout.contains(&format!("at {pointer}:")),
            "{name}: names {pointer}: {stdout}"
        );
        assert!(stdout.contains('['), "{name}: names the rule: {stdout}");
    }
}

/// The WebSocket settings reach both sockets: `--ws-ping-interval` (a quiet client is pinged
/// within a second, where the default would wait 30 s) and `--ws-max-message` (a 300-byte
/// message is answered 413, where the default takes 64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_flags_set_keepalive_and_the_message_limit() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let dir = temp_dir("ws-flags");
    let server = serve(&["--ws-ping-interval", "0.3", "--ws-max-message", "200"], &dir);
    let ws = server.ready["http"].as_str().unwrap().replacen("http", "ws", 1);
    for path in ["/things/lamp", "/webthing/lamp"] {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws}{path}"))
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .unwrap_or_else(|_| panic!("{path}: no ping within 5 s"));
        assert!(matches!(first, Some(Ok(Message::Ping(_)))), "{path}: {first:?}");
    }
    let mut request = format!("{ws}/things/lamp").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "webthingprotocol".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let big = serde_json::json!({"messageType": "request", "operation": "readproperty",
        "name": "on", "correlationID": "big", "pad": "x".repeat(300)});
    socket.send(Message::text(big.to_string())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Ok(Message::Text(text))) = socket.next().await {
                return serde_json::from_str::<Value>(&text).unwrap();
            }
        }
    })
    .await
    .expect("an answer");
    assert_eq!(answer["error"]["status"], 413, "{answer}");
    assert_eq!(answer["correlationID"], "big");
}
