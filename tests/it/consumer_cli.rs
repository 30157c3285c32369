//! `wot` as a client (issue #18): the verbs `td`, `read`, `write`, `invoke`, `observe` and
//! `events` run as a child process against a `wot serve` child process, over each of
//! `--via http`, `--via coap` and `--via ws`; each checks stdout, the exit code and the effect
//! on the server (read back over plain HTTP). Bad input gets one line on stderr and its exit code.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

const WOT: &str = env!("CARGO_BIN_EXE_wot");

use common::WotServe as Server;

/// A `wot serve` child on loopback (any free ports), serving the repository's things/.
fn serve(extra: &[&str]) -> Server {
    let things = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/things"));
    let args: Vec<&str> = ["--coap-port", "0"].iter().chain(extra).copied().collect();
    Server::start(things, &args, None)
}

use common::{CliRun as Run, ok, wot};

/// A failure: no data on stdout, one line on stderr starting with `wot: `, the exit code.
fn failed(run: &Run, code: i32, says: &str) {
    assert_eq!(run.code, code, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line on stderr: {run:?}");
    assert!(
        run.stderr.starts_with("wot: ") && run.stderr.contains(says),
        "{run:?}"
    );
}

async fn server_value(server: &Server, property: &str) -> Value {
    common::get_json(
        &common::client(),
        format!("{}/things/lamp/properties/{property}", server.http),
    )
    .await
}

/// Runs a streaming verb with --count 1 and `--json`, doing `change` on the server every 200 ms
/// until the child has printed its line (the subscription is in place some time after the
/// child starts, which the test cannot see from outside); returns the line.
async fn first_notice<F, Fut>(args: &[&str], mut change: F) -> Value
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut child = tokio::process::Command::new(WOT)
        .args(args)
        .args(["--count", "1", "--json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wot runs");
    let started = Instant::now();
    let mut round = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} printed nothing in 20 s"
        );
        round += 1;
        change(round).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = child.wait_with_output().await.expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "{args:?}: {status}, {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout:?}: {e}"))
}

/// Every verb over one protocol, each against its own server.
async fn every_verb(via: &str) {
    let server = serve(&[]);
    // Over CoAP the TD itself comes over CoAP too (some 6 kB: several Block2 blocks).
    let lamp = match via {
        "coap" => format!("{}/things/lamp", server.coap.as_deref().expect("a coap URL")),
        _ => format!("{}/things/lamp", server.http),
    };
    let v = ["--via", via];

    let td: Value = serde_json::from_str(ok(&wot(&["td", &lamp, "--json"]).await)).expect("a TD");
    assert_eq!(td["title"], "Lamp");
    if via == "coap" {
        assert!(td.to_string().len() > 2048, "the TD needs several blocks");
    }

    assert_eq!(
        ok(&wot(&[&["write", &lamp, "brightness", "42"][..], &v].concat()).await),
        ""
    );
    assert_eq!(server_value(&server, "brightness").await, json!(42));
    assert_eq!(
        ok(&wot(&[&["read", &lamp, "brightness", "--json"][..], &v].concat()).await),
        "42\n"
    );
    let all: Value =
        serde_json::from_str(ok(&wot(&[&["read", &lamp, "--json"][..], &v].concat()).await)).unwrap();
    assert_eq!(all, json!({"on": false, "brightness": 42}));
    // The readable default: one `name: value` line per property.
    assert_eq!(
        ok(&wot(&[&["read", &lamp][..], &v].concat()).await),
        "on: false\nbrightness: 42\n"
    );

    // A synchronous action's output, and its effect.
    assert_eq!(
        ok(&wot(&[&["invoke", &lamp, "toggle", "--json"][..], &v].concat()).await),
        "true\n"
    );
    assert_eq!(server_value(&server, "on").await, json!(true));
    // An asynchronous one, followed to its end.
    let fade = wot(&[
        &[
            "invoke",
            &lamp,
            "fade",
            r#"{"level": 7, "duration": 300}"#,
            "--json",
        ][..],
        &v,
    ]
    .concat())
    .await;
    assert_eq!(ok(&fade), "7\n");
    assert_eq!(server_value(&server, "brightness").await, json!(7));

    let client = common::client();
    let http = server.http.clone();
    let observed = first_notice(&[&["observe", &lamp, "brightness"][..], &v].concat(), |round| {
        let (client, http) = (client.clone(), http.clone());
        async move {
            let put = client
                .put(format!("{http}/things/lamp/properties/brightness"))
                .json(&json!(10 + round))
                .send()
                .await
                .expect("PUT");
            assert!(put.status().is_success());
        }
    })
    .await;
    assert_eq!(observed["name"], "brightness");
    assert!(observed["value"].as_u64().is_some_and(|v| v > 10), "{observed}");

    for events in [&["events", &lamp, "faded"][..], &["events", &lamp][..]] {
        let event = first_notice(&[events, &v].concat(), |round| {
            let (client, http) = (client.clone(), http.clone());
            async move {
                let post = client
                    .post(format!("{http}/things/lamp/actions/fade"))
                    .json(&json!({"level": 50 + round, "duration": 0}))
                    .send()
                    .await
                    .expect("POST");
                assert!(post.status().is_success());
            }
        })
        .await;
        assert_eq!(event["name"], "faded");
        assert!(event["value"].as_u64().is_some_and(|v| v > 50), "{event}");
    }
}

#[tokio::test]
async fn every_verb_over_http() {
    every_verb("http").await;
}

#[tokio::test]
async fn every_verb_over_coap() {
    every_verb("coap").await;
}

#[tokio::test]
async fn every_verb_over_ws() {
    every_verb("ws").await;
}

/// `--cbor`: CoAP requests send and ask for application/cbor.
#[tokio::test]
async fn coap_values_travel_as_cbor() {
    let server = serve(&[]);
    let lamp = format!("{}/things/lamp", server.http);
    let cbor = ["--via", "coap", "--cbor"];
    assert_eq!(
        ok(&wot(&[&["write", &lamp, "brightness", "61"][..], &cbor].concat()).await),
        ""
    );
    assert_eq!(server_value(&server, "brightness").await, json!(61));
    assert_eq!(
        ok(&wot(&[&["read", &lamp, "brightness"][..], &cbor].concat()).await),
        "61\n"
    );
}

/// Unreachable URL, not a TD, no usable form, a value that fails the schema, an unknown
/// property: one line on stderr, nothing on stdout, and the exit code of the kind.
#[tokio::test]
async fn bad_input_is_one_line_on_stderr_and_an_exit_code() {
    let server = serve(&["--no-coap"]);
    let lamp = format!("{}/things/lamp", server.http);

    failed(
        &wot(&["read", "http://127.0.0.1:1/things/lamp", "on"]).await,
        3,
        "unreachable",
    );
    failed(
        &wot(&["read", "coap://127.0.0.1:1/things/lamp", "on", "--timeout", "3"]).await,
        3,
        "",
    );
    failed(
        &wot(&["td", &format!("{lamp}/properties/on")]).await,
        4,
        "is not a Thing Description: it is not a JSON object",
    );
    failed(
        &wot(&["read", &lamp, "on", "--via", "coap"]).await,
        5,
        "no usable form for readproperty of 'on' via coap",
    );
    failed(
        &wot(&["read", &lamp, "colour"]).await,
        5,
        "no property named 'colour'",
    );
    for via in ["http", "ws"] {
        failed(
            &wot(&["write", &lamp, "brightness", "300", "--via", via]).await,
            2,
            "fails its schema: 300 is greater than the maximum of 100",
        );
        failed(
            &wot(&["invoke", &lamp, "fade", r#"{"level": 5}"#, "--via", via]).await,
            2,
            r#""duration" is a required property"#,
        );
    }
    // Nothing reached the thing.
    assert_eq!(server_value(&server, "brightness").await, json!(50));
    failed(&wot(&["td", "ftp://127.0.0.1/x"]).await, 2, "not ftp");
}

/// `--token` is sent as a bearer token over HTTP and the WebSocket; without it the server's 401
/// is the error.
#[tokio::test]
async fn the_token_opens_a_protected_thing() {
    let server = serve(&["--auth", "bearer:s3cret"]);
    let lamp = format!("{}/things/lamp", server.http);
    failed(&wot(&["read", &lamp, "on"]).await, 1, "answered 401");
    for via in ["http", "ws"] {
        let run = wot(&["read", &lamp, "on", "--token", "s3cret", "--via", via, "--json"]).await;
        assert_eq!(ok(&run), "false\n", "{via}");
    }
}

/// NAME instead of URL: `wot read Lamp on` finds the Thing by title (and by id) over mDNS, as
/// `wot discover` does. Multicast: only under netns-run with WOT_MDNS_TESTS=1.
#[tokio::test]
async fn a_name_is_found_by_discovery() {
    let Some(_one_at_a_time) = common::mdns_allowed_async().await else {
        return;
    };
    let things = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/things"));
    let server = Server::run(things, &["--host", "0.0.0.0", "--no-coap"], None);
    assert_eq!(ok(&wot(&["read", "Lamp", "brightness", "--json"]).await), "50\n");
    let td = server_value(&server, "on").await;
    assert_eq!(td, json!(false));
    let id = common::get_json::<Value>(&common::client(), format!("{}/things/lamp", server.http)).await["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(ok(&wot(&["read", &id, "on", "--json"]).await), "false\n");
    failed(
        &wot(&["read", "No Such Thing", "on"]).await,
        3,
        "no Thing titled or identified",
    );
}

/// The library's consumer on a TD whose only HTTP observation forms are longpoll (our TDs offer
/// SSE too, which the consumer prefers): each change comes back from one GET.
#[tokio::test]
async fn longpoll_forms_observe_when_there_is_no_sse() {
    use wot_runtime::consumer::{Consumer, ConsumerConfig, Protocol};

    let server = serve(&["--no-coap"]);
    let url = format!("{}/things/lamp", server.http);
    let mut td: Value = common::get_json(&common::client(), &url).await;
    let forms = td["properties"]["brightness"]["forms"]
        .as_array_mut()
        .expect("forms");
    forms.retain(|f| f["subprotocol"] != "sse");
    let config = ConsumerConfig {
        via: Some(Protocol::Http),
        ..Default::default()
    };
    let lamp = Consumer::new(config)
        .unwrap()
        .consume(td, url.parse().unwrap())
        .expect("a TD");
    let mut observation = lamp.observe_property("brightness").await.expect("observing");
    let client = common::client();
    let http = server.http.clone();
    let writer = tokio::spawn(async move {
        for level in 60..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = client
                .put(format!("{http}/things/lamp/properties/brightness"))
                .json(&json!(level))
                .send()
                .await;
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), observation.next())
        .await
        .expect("a change within 10 s")
        .expect("open")
        .expect("a notice");
    assert_eq!(first.name, "brightness");
    let second = observation.next().await.expect("open").expect("a notice");
    assert!(
        second.value.as_u64() > first.value.as_u64(),
        "{first:?} then {second:?}"
    );
    writer.abort();
}

/// An action input larger than one CoAP block (1024 bytes) reaches our CoAP server in Block1
/// blocks and is performed.
#[tokio::test]
async fn a_large_input_goes_over_coap_in_blocks() {
    let server = serve(&[]);
    let lamp = format!("{}/things/lamp", server.http);
    let input = json!({"level": 33, "duration": 0, "note": "x".repeat(3000)}).to_string();
    let run = wot(&["invoke", &lamp, "fade", &input, "--via", "coap", "--json"]).await;
    assert_eq!(ok(&run), "33\n");
    assert_eq!(server_value(&server, "brightness").await, json!(33));
}

/// https: the TD and the operations over TLS, trusting the server's self-signed certificate
/// with --cacert; without it the certificate is refused and nothing is read.
#[tokio::test]
async fn https_with_a_trusted_self_signed_certificate() {
    let state = std::env::temp_dir().join(format!("wot-consumer-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let server = serve(&[
        "--no-coap",
        "--tls-self-signed",
        "--state-dir",
        state.to_str().expect("a path"),
    ]);
    assert!(server.http.starts_with("https://"), "{}", server.http);
    let lamp = format!("{}/things/lamp", server.http);
    let cacert = state.join("tls/cert.pem");
    let cacert = cacert.to_str().expect("a path");
    let td: Value =
        serde_json::from_str(ok(&wot(&["td", &lamp, "--json", "--cacert", cacert]).await)).expect("a TD");
    assert_eq!(td["title"], "Lamp");
    assert_eq!(
        ok(&wot(&["write", &lamp, "brightness", "12", "--cacert", cacert]).await),
        ""
    );
    assert_eq!(
        ok(&wot(&["read", &lamp, "brightness", "--cacert", cacert]).await),
        "12\n"
    );
    failed(&wot(&["td", &lamp]).await, 3, "certificate");
    let _ = std::fs::remove_dir_all(&state);
}
