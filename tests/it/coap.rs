//! The CoAP binding over real loopback UDP, with a client built on coap-lite: every CoAP form
//! of every bundled TD exercised through its href and op, observe of a change made over HTTP,
//! TDs fetched block-wise and compared with the HTTP TD, Block1 writes, deduplication, separate
//! responses for slow actions, and bad input.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use wot_runtime::runtime::{Config, Running};

const WAIT: Duration = Duration::from_secs(10);

fn coap_config() -> Config {
    Config {
        no_coap: false,
        coap_port: 0,
        ..Config::loopback()
    }
}

async fn start() -> Running {
    common::start_with(coap_config()).await
}

/// A minimal CoAP client: CON requests, piggybacked or separate responses, Block2 reassembly,
/// observe notifications. Built on coap-lite and a tokio UDP socket.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    mid: std::cell::Cell<u16>,
    token: std::cell::Cell<u32>,
}

fn uint(value: u32) -> Vec<u8> {
    let b = value.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn read_uint(v: &[u8]) -> u32 {
    v.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

fn code(p: &Packet) -> String {
    p.header.code.to_string()
}

fn block_opt(num: u32, more: bool, szx: u8) -> Vec<u8> {
    uint((num << 4) | (u32::from(more) << 3) | u32::from(szx))
}

/// (num, more, szx) of a Block option.
fn parse_block(v: &[u8]) -> (u32, bool, u8) {
    let raw = read_uint(v);
    (raw >> 4, raw & 8 != 0, (raw & 7) as u8)
}

impl Client {
    async fn new(running: &Running) -> Client {
        let server = running.coap_addr.expect("CoAP runs");
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
        Client {
            socket,
            server,
            mid: std::cell::Cell::new(1000),
            token: std::cell::Cell::new(1),
        }
    }

    /// A request for a path (with an optional `?query`), CON, fresh MID and token.
    fn req(&self, method: RequestType, uri: &str) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        let mid = self.mid.get().wrapping_add(1);
        self.mid.set(mid);
        p.header.message_id = mid;
        let token = self.token.get() + 1;
        self.token.set(token);
        p.set_token(token.to_be_bytes().to_vec());
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        for s in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query.split('&').filter(|q| !q.is_empty()) {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p
    }

    async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.expect("send");
    }

    async fn send(&self, p: &Packet) {
        self.send_raw(&p.to_bytes().expect("encodable")).await;
    }

    async fn recv_within(&self, wait: Duration) -> Option<Packet> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(Packet::from_bytes(&buf[..n]).expect("the server sends valid CoAP"))
    }

    async fn recv(&self) -> Packet {
        self.recv_within(WAIT).await.expect("a message from the server")
    }

    /// Sends a CON request and returns its response (piggybacked, or separate: then the
    /// empty ACK is returned second and the CON response is acknowledged).
    async fn exchange(&self, p: &Packet) -> (Packet, Option<Packet>) {
        self.send(p).await;
        loop {
            let m = self.recv().await;
            if m.header.get_type() == MessageType::Acknowledgement
                && m.header.message_id == p.header.message_id
            {
                if m.header.code == MessageClass::Empty {
                    let separate = self.separate(p).await;
                    return (separate, Some(m));
                }
                assert_eq!(m.get_token(), p.get_token(), "token echoed");
                return (m, None);
            }
        }
    }

    async fn separate(&self, p: &Packet) -> Packet {
        loop {
            let m = self.recv().await;
            if m.get_token() == p.get_token() && m.header.code != MessageClass::Empty {
                if m.header.get_type() == MessageType::Confirmable {
                    self.ack(m.header.message_id).await;
                }
                return m;
            }
        }
    }

    async fn ack(&self, mid: u16) {
        let id = mid.to_be_bytes();
        self.send_raw(&[0x60, 0, id[0], id[1]]).await;
    }

    async fn call(&self, p: Packet) -> Packet {
        self.exchange(&p).await.0
    }

    /// A GET that follows Block2 to the end at the given SZX; returns the body and the
    /// first response.
    async fn get_blockwise(&self, uri: &str, szx: u8, accept: Option<u16>) -> (Vec<u8>, Packet) {
        let mut body = Vec::new();
        let mut first = None;
        let mut etag = None;
        for num in 0.. {
            let mut p = self.req(RequestType::Get, uri);
            p.add_option(CoapOption::Block2, block_opt(num, false, szx));
            if let Some(a) = accept {
                p.add_option(CoapOption::Accept, uint(u32::from(a)));
            }
            let r = self.call(p).await;
            assert_eq!(code(&r), "2.05", "block {num} of {uri}");
            let (got, more, got_szx) = parse_block(r.get_first_option(CoapOption::Block2).expect("Block2"));
            assert_eq!((got, got_szx), (num, szx));
            let tag = r.get_first_option(CoapOption::ETag).cloned();
            if etag.is_some() {
                assert_eq!(tag, etag, "the ETag stays the same across blocks");
            }
            etag = tag;
            if more {
                assert_eq!(r.payload.len(), 16 << szx, "every block but the last is full");
            }
            body.extend_from_slice(&r.payload);
            first.get_or_insert(r);
            if !more {
                break;
            }
        }
        (body, first.expect("one block"))
    }
}

fn path_of(href: &str) -> String {
    let rest = href.strip_prefix("coap://").expect("a coap:// href");
    let i = rest.find('/').unwrap_or(rest.len());
    rest[i..].to_owned()
}

/// A value that satisfies a DataSchema, different from `current` where possible.
fn sample(schema: &Value, current: Option<&Value>) -> Value {
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e.last().cloned().unwrap_or(Value::Null);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => json!(!current.and_then(Value::as_bool).unwrap_or(false)),
        Some("integer") | Some("number") => {
            let min = schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let max = schema
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(min + 100.0);
            let mid = ((min + max) / 2.0).floor();
            let v = if current.and_then(Value::as_f64) == Some(mid) {
                mid + 1.0
            } else {
                mid
            };
            json!(v as i64)
        }
        Some("string") => json!("coap"),
        Some("object") => {
            let mut o = serde_json::Map::new();
            for (k, s) in schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                o.insert(k.clone(), sample(s, None));
            }
            Value::Object(o)
        }
        Some("array") => json!([]),
        _ => Value::Null,
    }
}

fn json_body(p: &Packet) -> Value {
    serde_json::from_slice(&p.payload).unwrap_or_else(|e| panic!("JSON payload ({e}): {:?}", p.payload))
}

fn has_observe(p: &Packet) -> bool {
    p.get_first_option(CoapOption::Observe).is_some()
}

fn default_method(op: &str) -> RequestType {
    match op {
        "writeproperty" | "writemultipleproperties" | "writeallproperties" => RequestType::Put,
        "invokeaction" | "cancelaction" => RequestType::Post,
        _ => RequestType::Get,
    }
}

fn method_of(form: &Value, op: &str) -> RequestType {
    match form.get("cov:method").and_then(Value::as_str) {
        Some("GET") => RequestType::Get,
        Some("PUT") => RequestType::Put,
        Some("POST") => RequestType::Post,
        Some("DELETE") => RequestType::Delete,
        Some(other) => panic!("unexpected cov:method {other}"),
        None => default_method(op),
    }
}

#[tokio::test]
async fn every_coap_form_of_every_td_works() {
    let running = start().await;
    let http = common::client();
    let base = running.http_url();
    let client = Client::new(&running).await;
    let mut exercised: BTreeSet<String> = BTreeSet::new();
    let mut total_forms = 0;
    for slug in running.servient.slugs() {
        let td: Value = common::json_of(http.get(format!("{base}/things/{slug}"))).await;
        common::assert_valid_td(&td);
        assert!(
            td["@context"]
                .to_string()
                .contains("https://www.w3.org/2019/wot/coap#")
        );
        // Collect (op, form, affordance kind, name, affordance).
        let mut forms: Vec<(String, Value, &str, String, Value)> = Vec::new();
        for f in td["forms"].as_array().into_iter().flatten() {
            for op in f["op"].as_array().into_iter().flatten() {
                forms.push((
                    op.as_str().unwrap().into(),
                    f.clone(),
                    "thing",
                    String::new(),
                    td.clone(),
                ));
            }
        }
        for kind in ["properties", "actions", "events"] {
            for (name, a) in td[kind].as_object().into_iter().flatten() {
                for f in a["forms"].as_array().into_iter().flatten() {
                    let ops: Vec<String> = match &f["op"] {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().map(|o| o.as_str().unwrap().to_owned()).collect(),
                        _ => panic!("form without op"),
                    };
                    for op in ops {
                        forms.push((op, f.clone(), kind, name.clone(), a.clone()));
                    }
                }
            }
        }
        let mut fade_id: Option<String> = None;
        // Invocations first, so query and cancel have an instance to address.
        forms.sort_by_key(|(op, ..)| (op != "invokeaction", op.starts_with("cancel")));
        for (op, form, kind, name, affordance) in forms {
            let href = form["href"].as_str().unwrap();
            if !href.starts_with("coap://") {
                continue;
            }
            total_forms += 1;
            assert_eq!(
                href.split('/').nth(2),
                running.coap_url().unwrap().strip_prefix("coap://"),
                "absolute href on our CoAP origin"
            );
            let method = method_of(&form, &op);
            let path = path_of(href);
            let what = format!("{slug} {kind} {name} {op} {href}");
            match op.as_str() {
                "readproperty" => {
                    let r = client.call(client.req(method, &path)).await;
                    assert_eq!(code(&r), "2.05", "{what}");
                    let over_http: Value =
                        common::json_of(http.get(format!("{base}/things/{slug}/properties/{name}"))).await;
                    let value = json_body(&r);
                    assert_eq!(
                        value.is_number(),
                        over_http.is_number(),
                        "{what}: same kind of value as HTTP"
                    );
                    if affordance.get("readOnly") != Some(&json!(true)) {
                        assert_eq!(value, over_http, "{what}");
                    }
                }
                "writeproperty" => {
                    let current: Value =
                        common::json_of(http.get(format!("{base}/things/{slug}/properties/{name}"))).await;
                    let value = sample(&affordance, Some(&current));
                    let mut p = client.req(method, &path);
                    p.add_option(CoapOption::ContentFormat, uint(50));
                    p.payload = value.to_string().into_bytes();
                    let r = client.call(p).await;
                    assert_eq!(
                        code(&r),
                        "2.04",
                        "{what}: {}",
                        String::from_utf8_lossy(&r.payload)
                    );
                    let after: Value =
                        common::json_of(http.get(format!("{base}/things/{slug}/properties/{name}"))).await;
                    assert_eq!(after, value, "{what}: the write is visible over HTTP");
                }
                "observeproperty" | "observeallproperties" | "subscribeevent" | "subscribeallevents" => {
                    assert_eq!(form["subprotocol"], "cov:observe", "{what}");
                    let mut p = client.req(method, &path);
                    p.add_option(CoapOption::Observe, vec![]);
                    let r = client.call(p.clone()).await;
                    assert_eq!(code(&r), "2.05", "{what}");
                    assert!(has_observe(&r), "{what}: registered");
                    // Deregister actively with Observe=1 and the same token.
                    let mut d = client.req(method, &path);
                    d.set_token(p.get_token().to_vec());
                    d.clear_option(CoapOption::Observe);
                    d.add_option(CoapOption::Observe, vec![1]);
                    let (r, _) = client.exchange(&d).await;
                    assert!(r.header.code.to_string().starts_with("2."), "{what}");
                    assert!(!has_observe(&r), "{what}: deregistered");
                }
                "unobserveproperty"
                | "unobserveallproperties"
                | "unsubscribeevent"
                | "unsubscribeallevents" => {
                    // Covered together with its observe/subscribe op (same form).
                    let mut d = client.req(method, &path);
                    d.add_option(CoapOption::Observe, vec![1]);
                    let r = client.call(d).await;
                    assert!(code(&r).starts_with("2."), "{what}");
                    assert!(!has_observe(&r), "{what}");
                }
                "readallproperties" => {
                    let r = client.call(client.req(method, &path)).await;
                    assert_eq!(code(&r), "2.05", "{what}");
                    assert!(json_body(&r).is_object(), "{what}");
                }
                "writemultipleproperties" => {
                    let mut values = serde_json::Map::new();
                    for (n, a) in td["properties"].as_object().unwrap() {
                        if a.get("readOnly") != Some(&json!(true)) {
                            values.insert(n.clone(), sample(a, None));
                        }
                    }
                    let mut p = client.req(method, &path);
                    p.payload = Value::Object(values.clone()).to_string().into_bytes();
                    let r = client.call(p).await;
                    assert_eq!(
                        code(&r),
                        "2.04",
                        "{what}: {}",
                        String::from_utf8_lossy(&r.payload)
                    );
                    let all: Value =
                        common::json_of(http.get(format!("{base}/things/{slug}/properties"))).await;
                    for (n, v) in values {
                        assert_eq!(all[&n], v, "{what}: {n}");
                    }
                }
                "invokeaction" => {
                    let mut p = client.req(method, &path);
                    if let Some(input) = affordance.get("input") {
                        let mut v = sample(input, None);
                        if name == "fade" {
                            v = json!({"level": 10, "duration": 60000});
                        }
                        p.payload = v.to_string().into_bytes();
                    }
                    let r = client.call(p).await;
                    if affordance["synchronous"] == json!(true) {
                        assert_eq!(
                            code(&r),
                            "2.04",
                            "{what}: {}",
                            String::from_utf8_lossy(&r.payload)
                        );
                    } else {
                        assert_eq!(
                            code(&r),
                            "2.01",
                            "{what}: {}",
                            String::from_utf8_lossy(&r.payload)
                        );
                        let location: Vec<String> = r
                            .get_option(CoapOption::LocationPath)
                            .expect("Location-Path")
                            .iter()
                            .map(|s| String::from_utf8(s.clone()).unwrap())
                            .collect();
                        assert_eq!(location[..4], ["things", slug.as_str(), "actions", name.as_str()]);
                        let status = json_body(&r);
                        assert!(status["href"].as_str().unwrap().starts_with("coap://"), "{what}");
                        fade_id = Some(location[4].clone());
                    }
                }
                "queryaction" => {
                    let id = fade_id.clone().expect("an instance was started");
                    let r = client
                        .call(client.req(
                            method,
                            &path.replace("%7BactionID%7D", &id).replace("{actionID}", &id),
                        ))
                        .await;
                    assert_eq!(code(&r), "2.05", "{what}");
                    assert!(json_body(&r)["status"].is_string(), "{what}");
                }
                "cancelaction" => {
                    let id = fade_id.clone().expect("an instance was started");
                    let r = client
                        .call(client.req(
                            method,
                            &path.replace("%7BactionID%7D", &id).replace("{actionID}", &id),
                        ))
                        .await;
                    assert_eq!(
                        code(&r),
                        if method == RequestType::Delete {
                            "2.02"
                        } else {
                            "2.04"
                        },
                        "{what}"
                    );
                    let status: Value =
                        common::json_of(http.get(format!("{base}/things/{slug}/actions/{name}/{id}"))).await;
                    assert_eq!(status["status"], "failed", "{what}: cancelled: {status}");
                }
                "queryallactions" => {
                    let r = client.call(client.req(method, &path)).await;
                    assert_eq!(code(&r), "2.05", "{what}");
                    assert!(json_body(&r).is_object(), "{what}");
                }
                other => panic!("{what}: no test for op {other}"),
            }
            exercised.insert(format!("{slug}:{kind}:{name}:{op}"));
        }
    }
    assert!(
        total_forms > 20,
        "the bundled TDs carry CoAP forms ({total_forms})"
    );
    for must in [
        "lamp:properties:on:readproperty",
        "lamp:properties:on:writeproperty",
        "lamp:properties:on:observeproperty",
        "lamp:actions:fade:queryaction",
        "lamp:actions:fade:cancelaction",
        "lamp:events:faded:subscribeevent",
        "lamp:thing::readallproperties",
    ] {
        assert!(exercised.contains(must), "{must} not exercised: {exercised:#?}");
    }
    running.stop().await;
}

#[tokio::test]
async fn observe_receives_a_change_made_over_http() {
    let running = start().await;
    let http = common::client();
    let client = Client::new(&running).await;
    let mut p = client.req(RequestType::Get, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::Observe, vec![]);
    let first = client.call(p.clone()).await;
    assert_eq!(code(&first), "2.05");
    let seq0 = read_uint(first.get_first_option(CoapOption::Observe).expect("registered"));
    assert_eq!(json_body(&first), json!(50));
    let put = http
        .put(format!(
            "{}/things/lamp/properties/brightness",
            running.http_url()
        ))
        .json(&json!(77))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let n = client.recv().await;
    assert_eq!(n.get_token(), p.get_token(), "same token");
    assert_eq!(json_body(&n), json!(77));
    let seq1 = read_uint(
        n.get_first_option(CoapOption::Observe)
            .expect("Observe on notifications"),
    );
    assert!(seq1 > seq0 && seq1 < (1 << 24));
    if n.header.get_type() == MessageType::Confirmable {
        client.ack(n.header.message_id).await;
    }
    // An event, observed over CoAP, fired by an action invoked over HTTP.
    let mut e = client.req(RequestType::Get, "/things/lamp/events/faded");
    e.add_option(CoapOption::Observe, vec![]);
    let r = client.call(e.clone()).await;
    assert!(has_observe(&r));
    let resp = http
        .post(format!("{}/things/lamp/actions/fade", running.http_url()))
        .json(&json!({"level": 12, "duration": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    loop {
        let n = client.recv().await;
        if n.get_token() == e.get_token() {
            assert_eq!(json_body(&n), json!(12));
            break;
        }
    }
    // Passive deregistration: RST the next notification; afterwards nothing more arrives.
    http.put(format!(
        "{}/things/lamp/properties/brightness",
        running.http_url()
    ))
    .json(&json!(78))
    .send()
    .await
    .unwrap();
    let n = loop {
        let n = client.recv().await;
        if n.get_token() == p.get_token() {
            break n;
        }
    };
    let id = n.header.message_id.to_be_bytes();
    client.send_raw(&[0x70, 0, id[0], id[1]]).await;
    // A ping round trip orders the RST before the next change.
    client.send_raw(&[0x40, 0, 0, 1]).await;
    let pong = client.recv().await;
    assert_eq!(pong.header.get_type(), MessageType::Reset);
    http.put(format!(
        "{}/things/lamp/properties/brightness",
        running.http_url()
    ))
    .json(&json!(79))
    .send()
    .await
    .unwrap();
    // Prove the server is alive and that no notification for the old token came before it.
    let r = client
        .call(client.req(RequestType::Get, "/things/lamp/properties/brightness"))
        .await;
    assert_eq!(json_body(&r), json!(79));
    while let Some(m) = client.recv_within(Duration::from_millis(300)).await {
        assert_ne!(m.get_token(), p.get_token(), "no notification after RST");
    }
    running.stop().await;
}

#[tokio::test]
async fn td_over_block2_is_byte_identical_to_http() {
    let running = start().await;
    let http = common::client();
    let client = Client::new(&running).await;
    // The CoAP server builds TDs for the origins a client of its bound addresses sees: the
    // HTTP origin http://127.0.0.1:PORT and the CoAP origin. Fetched over HTTP from that same
    // origin, the TD must be the same bytes (a different Host header would change `base`).
    for uri in ["/things/lamp", "/things/host", "/.well-known/wot"] {
        let over_http = http
            .get(format!("{}{uri}", running.http_url()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            over_http.len() > 900,
            "{uri} needs several blocks at 16 and 64 bytes"
        );
        assert!(
            over_http.len() < 8192,
            "{uri}: keep CoAP TDs under Californium's 8 KiB"
        );
        for szx in [0u8, 2, 6] {
            let (body, first) = client.get_blockwise(uri, szx, None).await;
            assert_eq!(body, over_http.to_vec(), "{uri} at {} bytes per block", 16 << szx);
            let cf = first
                .get_first_option(CoapOption::ContentFormat)
                .map(|v| read_uint(v));
            assert_eq!(cf, Some(432), "{uri}: application/td+json");
        }
    }
    // Size2 on request, and a TD fetched with no Block2 option gets block 0 of 1024 bytes.
    let mut p = client.req(RequestType::Get, "/things/lamp");
    p.add_option(CoapOption::Size2, vec![]);
    let r = client.call(p).await;
    let (num, more, szx) = parse_block(r.get_first_option(CoapOption::Block2).expect("block-wise"));
    assert_eq!((num, more, szx), (0, true, 6));
    let whole = http
        .get(format!("{}/things/lamp", running.http_url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        read_uint(r.get_first_option(CoapOption::Size2).expect("Size2")),
        whole.len() as u32
    );
    // Random access.
    let mut p = client.req(RequestType::Get, "/things/lamp");
    p.add_option(CoapOption::Block2, block_opt(3, false, 4));
    let r = client.call(p).await;
    assert_eq!(r.payload, whole[768..1024].to_vec());
    // /.well-known/core lists the TDs, filtered by rt.
    let (links, first) = client
        .get_blockwise("/.well-known/core?rt=wot.thing", 6, None)
        .await;
    let links = String::from_utf8(links).unwrap();
    assert_eq!(
        first
            .get_first_option(CoapOption::ContentFormat)
            .map(|v| read_uint(v)),
        Some(40)
    );
    assert!(
        links.contains("</things/lamp>;rt=\"wot.thing\";ct=432"),
        "{links}"
    );
    assert!(!links.contains("/properties"), "filtered: {links}");
    let (all, _) = client.get_blockwise("/.well-known/core", 2, None).await;
    let all = String::from_utf8(all).unwrap();
    assert!(all.contains("</things/lamp/properties/on>;ct=50;obs"), "{all}");
    // The TD served over HTTP carries the coap:// forms too and validates.
    let td: Value = serde_json::from_slice(&whole).unwrap();
    common::assert_valid_td(&td);
    running.stop().await;
}

#[tokio::test]
async fn block1_write_in_16_byte_blocks() {
    let running = start().await;
    let http = common::client();
    let client = Client::new(&running).await;
    // A writemultipleproperties body padded to several blocks.
    let body = format!("{{\"on\": true, {}\"brightness\": 33}}", " ".repeat(70)).into_bytes();
    let chunks: Vec<&[u8]> = body.chunks(16).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let more = i + 1 < chunks.len();
        let mut p = client.req(RequestType::Put, "/things/lamp/properties");
        p.add_option(CoapOption::Block1, block_opt(i as u32, more, 0));
        p.add_option(CoapOption::ContentFormat, uint(50));
        p.payload = chunk.to_vec();
        let r = client.call(p).await;
        let expected = if more { "2.31" } else { "2.04" };
        assert_eq!(
            code(&r),
            expected,
            "block {i}: {}",
            String::from_utf8_lossy(&r.payload)
        );
        let (num, m, _) = parse_block(r.get_first_option(CoapOption::Block1).expect("Block1 echoed"));
        assert_eq!((num, m), (i as u32, more));
    }
    let all: Value =
        common::json_of(http.get(format!("{}/things/lamp/properties", running.http_url()))).await;
    assert_eq!(
        (all["on"].clone(), all["brightness"].clone()),
        (json!(true), json!(33))
    );
    // Too large: 4.13 with Size1, nothing changes.
    let mut p = client.req(RequestType::Put, "/things/lamp/properties");
    p.add_option(CoapOption::Block1, block_opt(0, true, 0));
    p.add_option(CoapOption::Size1, uint(10 << 20));
    p.payload = vec![b' '; 16];
    let r = client.call(p).await;
    assert_eq!(code(&r), "4.13");
    assert!(r.get_first_option(CoapOption::Size1).is_some());
    // A block out of order: 4.08.
    let mut p = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::Block1, block_opt(2, false, 0));
    p.payload = b"1".to_vec();
    assert_eq!(code(&client.call(p).await), "4.08");
    running.stop().await;
}

#[tokio::test]
async fn the_same_message_id_twice_executes_once() {
    let running = start().await;
    let http = common::client();
    let client = Client::new(&running).await;
    let before: Value =
        common::json_of(http.get(format!("{}/things/lamp/properties/on", running.http_url()))).await;
    let p = client.req(RequestType::Post, "/things/lamp/actions/toggle");
    let first = client.call(p.clone()).await;
    let second = client.call(p.clone()).await;
    assert_eq!(first, second, "the duplicate gets the same answer");
    let after: Value =
        common::json_of(http.get(format!("{}/things/lamp/properties/on", running.http_url()))).await;
    assert_eq!(
        after,
        json!(!before.as_bool().unwrap()),
        "toggled once, not twice"
    );
    assert_eq!(json_body(&first), after);
    // A NON request is answered NON, and a NON duplicate does not run again either.
    let mut non = client.req(RequestType::Post, "/things/lamp/actions/toggle");
    non.header.set_type(MessageType::NonConfirmable);
    client.send(&non).await;
    let r = client.recv().await;
    assert_eq!(r.header.get_type(), MessageType::NonConfirmable);
    client.send(&non).await;
    let _ = client.recv_within(Duration::from_millis(500)).await;
    let last: Value =
        common::json_of(http.get(format!("{}/things/lamp/properties/on", running.http_url()))).await;
    assert_eq!(last, before);
    running.stop().await;
}

#[tokio::test]
async fn a_slow_action_gets_a_separate_response() {
    use wot_runtime::core::ThingBuilder;
    // The action brews until the test lets it finish, which it does only once the empty ACK
    // came: slower than `separate_after` whatever the machine's speed, with no time spent.
    let brewed = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = brewed.clone();
    let thing = ThingBuilder::new(
        "slow",
        json!({"title": "Slow", "actions": {"brew": {"synchronous": true, "output": {"type": "string"}}}}),
    )
    .on_action("brew", move |_| {
        let held = held.clone();
        async move {
            let _done = held.acquire().await;
            Ok(Some(json!("coffee")))
        }
    })
    .build()
    .unwrap();
    let hosted = vec![wot_runtime::things::Hosted {
        thing,
        behaviors: Default::default(),
    }];
    let mut config = coap_config();
    config.coap.separate_after = Duration::from_millis(100);
    let running = Running::start(config, hosted).await.unwrap();
    let client = Client::new(&running).await;
    let p = client.req(RequestType::Post, "/things/slow/actions/brew");
    client.send(&p).await;
    let ack = client.recv().await;
    assert_eq!(
        (ack.header.get_type(), ack.header.code),
        (MessageType::Acknowledgement, MessageClass::Empty),
        "an empty ACK first"
    );
    assert_eq!(ack.header.message_id, p.header.message_id);
    brewed.add_permits(1);
    let response = client.separate(&p).await;
    assert_eq!(
        response.header.get_type(),
        MessageType::Confirmable,
        "then a CON response"
    );
    assert_ne!(response.header.message_id, p.header.message_id);
    assert_eq!(response.get_token(), p.get_token());
    assert_eq!(code(&response), "2.04");
    assert_eq!(json_body(&response), json!("coffee"));
    // A retransmission of the request after the empty ACK gets the empty ACK again.
    client.send(&p).await;
    let again = client.recv().await;
    assert_eq!(
        (again.header.code, again.header.message_id),
        (MessageClass::Empty, p.header.message_id)
    );
    running.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_prescribed_answer_and_changes_nothing() {
    let running = start().await;
    let http = common::client();
    let client = Client::new(&running).await;
    let brightness = || async {
        http.get(format!(
            "{}/things/lamp/properties/brightness",
            running.http_url()
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
    };
    let before = brightness().await;
    // Garbage, a truncated header and a wrong version: silence.
    for junk in [&b"hello world"[..], &[0x40, 1], &[0x80, 1, 0, 1], &[]] {
        client.send_raw(junk).await;
    }
    assert!(
        client.recv_within(Duration::from_millis(300)).await.is_none(),
        "silence"
    );
    // A CON with a format error (TKL 9): RST.
    client
        .send_raw(&[0x49, 1, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .await;
    let r = client.recv().await;
    assert_eq!(
        (r.header.get_type(), r.header.message_id),
        (MessageType::Reset, 0x1234)
    );
    // Ping: RST.
    client.send_raw(&[0x40, 0, 0x22, 0x22]).await;
    assert_eq!(client.recv().await.header.get_type(), MessageType::Reset);
    // Unknown critical option: 4.02.
    let mut p = client.req(RequestType::Get, "/things/lamp/properties/on");
    p.add_option(CoapOption::Unknown(65001), vec![1]);
    assert_eq!(code(&client.call(p).await), "4.02");
    // Bad Content-Format: 4.15; bad Accept: 4.06.
    let mut p = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::ContentFormat, uint(41));
    p.payload = b"<x/>".to_vec();
    assert_eq!(code(&client.call(p).await), "4.15");
    let mut p = client.req(RequestType::Get, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::Accept, uint(41));
    assert_eq!(code(&client.call(p).await), "4.06");
    // Schema violations: 4.00 with a diagnostic that names the field.
    let mut p = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    p.payload = b"101".to_vec();
    let r = client.call(p).await;
    assert_eq!(code(&r), "4.00");
    assert!(
        String::from_utf8_lossy(&r.payload).contains("maximum"),
        "{:?}",
        r.payload
    );
    let mut p = client.req(RequestType::Post, "/things/lamp/actions/fade");
    p.payload = br#"{"level": 500, "duration": 1}"#.to_vec();
    let r = client.call(p).await;
    assert_eq!(code(&r), "4.00");
    let diag = String::from_utf8_lossy(&r.payload).to_string();
    assert!(diag.contains("/level"), "names the field: {diag}");
    let mut p = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    p.payload = b"{not json".to_vec();
    assert_eq!(code(&client.call(p).await), "4.00");
    // Read-only property, unknown path, wrong method.
    let mut p = client.req(RequestType::Put, "/things/thermostat/properties/temperature");
    p.payload = b"30".to_vec();
    assert_eq!(code(&client.call(p).await), "4.05");
    assert_eq!(
        code(&client.call(client.req(RequestType::Get, "/nothing/here")).await),
        "4.04"
    );
    assert_eq!(
        code(&client.call(client.req(RequestType::Get, "/things/nope")).await),
        "4.04"
    );
    assert_eq!(
        code(&client.call(client.req(RequestType::Delete, "/things/lamp")).await),
        "4.05"
    );
    assert_eq!(
        code(&client.call(client.req(RequestType::Fetch, "/things/lamp")).await),
        "4.05"
    );
    assert_eq!(
        code(
            &client
                .call(client.req(RequestType::Get, "/things/lamp/actions/fade/nope"))
                .await
        ),
        "4.04"
    );
    // Nothing changed, and the next request is served.
    assert_eq!(brightness().await, before);
    let r = client
        .call(client.req(RequestType::Get, "/things/lamp/properties/brightness"))
        .await;
    assert_eq!(json_body(&r), before);
    running.stop().await;
}

/// RFC 7252 §3/§4.1 message format errors, each sent as a real datagram: a CON is rejected with
/// an RST of its message ID, a NON is met with silence, and neither is processed (a PUT with a
/// format error changes nothing).
#[tokio::test]
async fn message_format_errors_reset_a_con_and_are_silence_for_a_non() {
    let running = start().await;
    let client = Client::new(&running).await;
    let read = |uri: &'static str| {
        let client = &client;
        async move { json_body(&client.call(client.req(RequestType::Get, uri)).await) }
    };
    let brightness = read("/things/lamp/properties/brightness").await;
    let target = if brightness == json!(7) { 8 } else { 7 };
    // A well-formed request's bytes with a payload marker and no payload: coap-lite itself
    // parses this (as an empty payload), which is how it used to be answered 4.04.
    let marker_only = |method: RequestType, uri: &str| {
        let mut bytes = client.req(method, uri).to_bytes().expect("encodable");
        bytes.push(0xff);
        bytes
    };
    let get = marker_only(RequestType::Get, "/things/lamp/properties/on");
    assert!(Packet::from_bytes(&get).is_ok_and(|p| p.payload.is_empty()));
    let put = marker_only(RequestType::Put, "/things/lamp/properties/brightness");
    // "PUT brightness <target>" behind an option of reserved length 15: the value must not land.
    let mut reserved_put = client
        .req(RequestType::Put, "/things/lamp/properties/brightness")
        .to_bytes()
        .expect("encodable");
    reserved_put.extend_from_slice(&[0x0f, 0xff]);
    reserved_put.extend_from_slice(target.to_string().as_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("payload marker, zero-length payload (GET)", get),
        ("payload marker, zero-length payload (PUT)", put),
        ("option length 15 in a PUT with a payload", reserved_put),
        ("token length 9", vec![0x49, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ("token length 15", [&[0x4f, 1, 0, 0][..], &[7; 15]].concat()),
        ("token longer than the datagram", vec![0x48, 1, 0, 0, 1, 2, 3]),
        (
            "option delta 15 outside the marker",
            vec![0x40, 1, 0, 0, 0xf1, b'x'],
        ),
        ("option length 15", vec![0x40, 1, 0, 0, 0xbf, b'x']),
        (
            "option delta 15, length 15 after an option",
            vec![0x40, 1, 0, 0, 0xb1, b'x', 0x3f],
        ),
        ("option value past the end", vec![0x40, 1, 0, 0, 0xb5, b'x']),
        ("empty message with a token", vec![0x41, 0, 0, 0, 0xaa]),
        ("empty message with an option", vec![0x40, 0, 0, 0, 0xb1, b'x']),
        ("empty message with a payload", vec![0x40, 0, 0, 0, 0xff, 1]),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mid = 0x5000 + i as u16;
        let mut con = bytes.clone();
        con[0] &= 0xcf;
        con[2..4].copy_from_slice(&mid.to_be_bytes());
        client.send_raw(&con).await;
        let r = client.recv().await;
        assert_eq!(
            (r.header.get_type(), r.header.message_id, code(&r)),
            (MessageType::Reset, mid, "0.00".to_owned()),
            "CON, {what}"
        );
        assert!(
            r.get_token().is_empty() && r.payload.is_empty(),
            "{what}: an empty RST"
        );
        let mut non = con.clone();
        non[0] |= 0x10;
        non[2..4].copy_from_slice(&(mid + 0x100).to_be_bytes());
        client.send_raw(&non).await;
        assert!(
            client.recv_within(Duration::from_millis(200)).await.is_none(),
            "NON, {what}: silence"
        );
    }
    // The same PUT with its payload is served; the rejected ones changed nothing.
    assert_eq!(read("/things/lamp/properties/brightness").await, brightness);
    let mut p = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    p.payload = target.to_string().into_bytes();
    assert_eq!(code(&client.call(p).await), "2.04");
    assert_eq!(read("/things/lamp/properties/brightness").await, json!(target));
    running.stop().await;
}

#[tokio::test]
async fn cbor_and_ready_line() {
    let running = start().await;
    let client = Client::new(&running).await;
    let mut p = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::ContentFormat, uint(60));
    p.payload = vec![0x18, 0x2a]; // CBOR 42
    assert_eq!(code(&client.call(p).await), "2.04");
    let mut p = client.req(RequestType::Get, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::Accept, uint(60));
    let r = client.call(p).await;
    assert_eq!(r.payload, vec![0x18, 0x2a]);
    assert_eq!(
        r.get_first_option(CoapOption::ContentFormat)
            .map(|v| read_uint(v)),
        Some(60)
    );
    let line: Value = serde_json::from_str(&running.ready_line()).unwrap();
    assert_eq!(line["coap"], json!(running.coap_url().unwrap()));
    assert!(line["coap"].as_str().unwrap().starts_with("coap://127.0.0.1:"));
    running.stop().await;
}

/// A runtime with CoAP and a bearer token on the HTTP port, opening `open` over CoAP.
async fn start_with_auth(open: &str) -> Running {
    let auth = wot_runtime::security::Auth::parse("bearer:coap-test-token").unwrap();
    let mut config = coap_config();
    config.security.auth = Some(std::sync::Arc::new(auth));
    config.coap.open = wot_runtime::binding::coap::Opened::parse(open).unwrap();
    common::start_with(config).await
}

async fn authorized_json(running: &Running, path: &str) -> Value {
    common::json_of(
        common::client()
            .get(format!("{}{path}", running.http_url()))
            .bearer_auth("coap-test-token"),
    )
    .await
}

/// Every `coap://` form of a TD, with its operations.
fn coap_forms(td: &Value) -> Vec<(Vec<String>, Value)> {
    let mut all = Vec::new();
    let mut collect = |forms: &Value| {
        for f in forms.as_array().into_iter().flatten() {
            if f["href"].as_str().is_some_and(|h| h.starts_with("coap://")) {
                let ops = match &f["op"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a.iter().filter_map(|o| o.as_str().map(str::to_owned)).collect(),
                    _ => vec![],
                };
                all.push((ops, f.clone()));
            }
        }
    };
    collect(&td["forms"]);
    for kind in ["properties", "actions", "events"] {
        for a in td[kind].as_object().into_iter().flatten().map(|(_, a)| a) {
            collect(&a["forms"]);
        }
    }
    all
}

#[tokio::test]
async fn under_auth_coap_serves_only_what_is_opened() {
    let running = start_with_auth("read").await;
    let client = Client::new(&running).await;
    // Reads are opened: a property, the TD, /.well-known/core.
    let r = client
        .call(client.req(RequestType::Get, "/things/lamp/properties/brightness"))
        .await;
    assert_eq!((code(&r), json_body(&r)), ("2.05".into(), json!(50)));
    let (td, _) = client.get_blockwise("/things/lamp", 6, None).await;
    let td: Value = serde_json::from_slice(&td).unwrap();
    common::assert_valid_td(&td);
    assert_eq!(
        td,
        authorized_json(&running, "/things/lamp").await,
        "CoAP and HTTP serve the same TD"
    );
    let r = client
        .call(client.req(RequestType::Get, "/.well-known/core"))
        .await;
    assert_eq!(code(&r), "2.05");
    // Observations are not opened; writes and invocations never are.
    let mut observe = client.req(RequestType::Get, "/things/lamp/properties/brightness");
    observe.add_option(CoapOption::Observe, vec![]);
    let mut put = client.req(RequestType::Put, "/things/lamp/properties/brightness");
    put.payload = b"7".to_vec();
    let mut invoke = client.req(RequestType::Post, "/things/lamp/actions/fade");
    invoke.payload = br#"{"level": 3, "duration": 0}"#.to_vec();
    for (what, p) in [
        ("observe", observe),
        ("write", put),
        ("invoke", invoke),
        (
            "toggle",
            client.req(RequestType::Post, "/things/lamp/actions/toggle"),
        ),
        ("event", client.req(RequestType::Get, "/things/lamp/events/faded")),
    ] {
        let r = client.call(p).await;
        assert_eq!(code(&r), "4.01", "{what}");
        assert!(!has_observe(&r), "{what}");
        let diagnostic = String::from_utf8_lossy(&r.payload).to_string();
        assert!(diagnostic.contains("--auth"), "{what}: {diagnostic}");
    }
    assert_eq!(
        authorized_json(&running, "/things/lamp/properties/brightness").await,
        json!(50),
        "the refused write changed nothing"
    );
    assert_eq!(
        authorized_json(&running, "/things/lamp/properties/on").await,
        json!(false)
    );
    // The TD says exactly that: bearer at the top; CoAP forms only for reads, each nosec.
    assert_eq!(td["security"], "bearer_sc");
    assert_eq!(td["securityDefinitions"]["nosec_sc"]["scheme"], "nosec");
    let forms = coap_forms(&td);
    assert!(!forms.is_empty());
    for (ops, form) in &forms {
        assert!(
            ops.iter().all(|op| matches!(
                op.as_str(),
                "readproperty" | "readallproperties" | "queryaction" | "queryallactions"
            )),
            "{form}"
        );
        // wot-td writes a one-name list as a plain string; the TD schema allows both.
        assert!(
            form["security"] == json!("nosec_sc") || form["security"] == json!(["nosec_sc"]),
            "{form}"
        );
    }
    assert!(forms.iter().any(|(ops, _)| ops == &["readproperty"]));
    // Every other form (HTTP, relative to `base`, and WebSocket) keeps the top-level security;
    // the coaps forms (coaps runs with the key derived from --auth) state the PSK scheme.
    let (secure, others): (Vec<&Value>, Vec<&Value>) = td["properties"]["brightness"]["forms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["href"].as_str().unwrap().starts_with("coap://"))
        .partition(|f| f["href"].as_str().unwrap().starts_with("coaps://"));
    assert!(!others.is_empty() && others.iter().all(|f| f.get("security").is_none()));
    assert!(!secure.is_empty() && secure.iter().all(|f| f["security"] == json!("psk_sc")));
    running.stop().await;
}

#[tokio::test]
async fn under_auth_with_nothing_opened_coap_refuses_everything() {
    let running = start_with_auth("none").await;
    let client = Client::new(&running).await;
    for uri in [
        "/things/lamp/properties/brightness",
        "/things/lamp",
        "/.well-known/core",
    ] {
        let r = client.call(client.req(RequestType::Get, uri)).await;
        assert_eq!(code(&r), "4.01", "{uri}");
    }
    let td = authorized_json(&running, "/things/lamp").await;
    common::assert_valid_td(&td);
    assert!(coap_forms(&td).is_empty(), "no CoAP form is offered: {td}");
    assert!(td["securityDefinitions"].get("nosec_sc").is_none());
    running.stop().await;
}

#[tokio::test]
async fn observers_per_endpoint_are_limited() {
    let mut config = coap_config();
    config.coap.engine.observers.per_peer = 2;
    let running = common::start_with(config).await;
    let client = Client::new(&running).await;
    let observe = |uri: &str| {
        let mut p = client.req(RequestType::Get, uri);
        p.add_option(CoapOption::Observe, vec![]);
        p
    };
    let first = client.call(observe("/things/lamp/properties/brightness")).await;
    let second = client.call(observe("/things/lamp/properties/on")).await;
    assert!(has_observe(&first) && has_observe(&second));
    // Over the limit: answered with the value, without Observe (RFC 7641 §4.1).
    let third = client.call(observe("/things/lamp/properties/brightness")).await;
    assert_eq!(code(&third), "2.05");
    assert_eq!(json_body(&third), json!(50));
    assert!(
        !has_observe(&third),
        "not registered beyond the per-endpoint limit"
    );
    // Another endpoint is not affected.
    let other = Client::new(&running).await;
    let mut p = other.req(RequestType::Get, "/things/lamp/properties/brightness");
    p.add_option(CoapOption::Observe, vec![]);
    assert!(has_observe(&other.call(p).await));
    running.stop().await;
}

/// More running actions than a thing allows: 5.03 with Max-Age, when to try again (RFC 7252
/// §5.9.3.4), and nothing started.
#[tokio::test]
async fn too_many_running_actions_answer_5_03_with_max_age() {
    let running = start().await;
    let client = Client::new(&running).await;
    let mut refused = None;
    for _ in 0..200 {
        let mut p = client.req(RequestType::Post, "/things/lamp/actions/fade");
        p.add_option(CoapOption::ContentFormat, uint(50));
        p.payload = br#"{"level": 1, "duration": 600000}"#.to_vec();
        let r = client.call(p).await;
        if code(&r) != "2.01" {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the running actions are limited");
    assert_eq!(code(&r), "5.03");
    let max_age = r.get_first_option(CoapOption::MaxAge).expect("Max-Age");
    assert_eq!(read_uint(max_age), 1);
    running.stop().await;
}
