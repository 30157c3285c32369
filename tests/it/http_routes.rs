//! The HTTP binding's URL contract (DESIGN.md §1.2) over the wire: every URL answers the
//! methods it lists and 405 with that exact `Allow` to the others, paths that name nothing are
//! 404, path parameters are percent-decoded, and the origin of TD links follows `Host` and the
//! forwarding headers. `binding::http::table` is the table these URLs are read from.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"];

#[tokio::test]
async fn every_url_takes_its_methods_and_refuses_the_others_with_its_allow() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    // An action to query and cancel.
    let started = client
        .post(format!("{base}/things/lamp/actions/fade"))
        .json(&serde_json::json!({"level": 10, "duration": 60_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::CREATED);
    let status_url = started.headers()["location"].to_str().unwrap().to_owned();
    let status_path = status_url.strip_prefix(&base).unwrap().to_owned();

    // (path, the methods it takes, the methods checked to be taken: a GET on a stream or a
    // longpoll would wait, and DELETE would cancel the action queried here).
    let table: Vec<(String, &str, &[&str])> = vec![
        ("/.well-known/wot".into(), "GET, HEAD", &["GET", "HEAD"]),
        ("/things".into(), "GET, HEAD", &["GET", "HEAD"]),
        ("/things/lamp".into(), "GET, HEAD", &["GET", "HEAD"]),
        ("/things/lamp/properties".into(), "GET, PUT", &["GET", "PUT"]),
        (
            "/things/lamp/properties/brightness".into(),
            "GET, PUT",
            &["GET", "PUT"],
        ),
        ("/things/lamp/actions".into(), "GET", &["GET"]),
        ("/things/lamp/actions/toggle".into(), "POST", &["POST"]),
        (status_path.clone(), "GET, DELETE", &["GET"]),
        ("/things/lamp/events".into(), "GET", &[]),
        ("/things/lamp/events/faded".into(), "GET", &[]),
        ("/things/lamp/longpoll/properties".into(), "GET, HEAD", &["HEAD"]),
        (
            "/things/lamp/longpoll/properties/on".into(),
            "GET, HEAD",
            &["HEAD"],
        ),
        ("/things/lamp/longpoll/events".into(), "GET, HEAD", &["HEAD"]),
        (
            "/things/lamp/longpoll/events/faded".into(),
            "GET, HEAD",
            &["HEAD"],
        ),
    ];
    for (path, allow, taken) in &table {
        for method in METHODS {
            let request = client.request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}{path}"),
            );
            let request = match (method, path.as_str()) {
                ("PUT", "/things/lamp/properties") => request.json(&serde_json::json!({"brightness": 40})),
                ("PUT", _) => request.json(&40),
                _ => request,
            };
            if allow.split(", ").any(|m| m == method) {
                if !taken.contains(&method) {
                    continue;
                }
                let res = request.send().await.unwrap();
                assert!(res.status().is_success(), "{method} {path}: {}", res.status());
            } else {
                let res = request.send().await.unwrap();
                assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(res.headers()["allow"], *allow, "{method} {path}");
                assert_eq!(
                    res.headers()["content-type"],
                    "application/problem+json",
                    "{method} {path}"
                );
            }
        }
    }
    // The action queried above was running all along; DELETE cancels it.
    let cancelled = client.delete(&status_url).send().await.unwrap();
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    // The streams answer GET with their event stream.
    for path in ["/things/lamp/events", "/things/lamp/events/faded"] {
        let res = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn paths_that_name_nothing_are_404_problems() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    for path in [
        "/things/",
        "/things/lamp/",
        "/things//properties",
        "/things/lamp/properties/",
        "/things/lamp/properties/on/extra",
        "/things/lamp/props",
        "/things/lamp/actions/fade/1/extra",
        "/things/lamp/longpoll",
        "/things/lamp/longpoll/actions",
        "/thingsx",
        "/nothing/here",
    ] {
        let res = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], 404, "{path}: {problem}");
    }
    // A thing or an affordance that does not exist is a 404 too, named in the problem.
    let res = client
        .get(format!("{base}/things/nope/properties/on"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.text().await.unwrap().contains("nope"));
    running.stop().await;
}

#[tokio::test]
async fn path_parameters_are_percent_decoded() {
    let dir = std::env::temp_dir().join(format!("wot-http-routes-decoded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let thing = serde_json::json!({
        "title": "Odd",
        "properties": {
            "colour temp": {"type": "integer", "default": 3000},
            "été": {"type": "string", "default": "chaud"}
        }
    });
    std::fs::write(dir.join("odd.json"), thing.to_string()).unwrap();
    let running = common::serve_dir(&dir, wot_runtime::runtime::Config::loopback()).await;
    let client = common::client();
    let base = running.http_url();
    let url = format!("{base}/things/odd/properties/colour%20temp");
    assert_eq!(common::get_json::<Value>(&client, &url).await, 3000);
    let res = client.put(&url).json(&2700).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(common::get_json::<Value>(&client, &url).await, 2700);
    // The thing's id may be escaped as well, and a UTF-8 name is decoded from its bytes.
    let url = format!("{base}/things/%6Fdd/properties/%C3%A9t%C3%A9");
    assert_eq!(common::get_json::<Value>(&client, &url).await, "chaud");
    // The TD's forms name them percent-encoded (a space is not a URI character), and each
    // readproperty form, resolved against the TD's base, reads the property.
    let td: Value = common::get_json(&client, &format!("{base}/things/odd")).await;
    common::assert_valid_td(&td);
    let forms = |name: &str| td["properties"][name]["forms"].as_array().unwrap().clone();
    let hrefs: Vec<String> = forms("colour temp")
        .iter()
        .map(|f| f["href"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        hrefs.contains(&"things/odd/properties/colour%20temp".to_owned()),
        "{hrefs:?}"
    );
    assert!(hrefs.iter().all(|h| !h.contains(' ')), "{hrefs:?}");
    for (name, value) in [
        ("colour temp", serde_json::json!(2700)),
        ("été", serde_json::json!("chaud")),
    ] {
        let read = forms(name)
            .into_iter()
            .find(|f| {
                f["op"] == serde_json::json!(["readproperty"])
                    && f["href"].as_str().unwrap().starts_with("things/")
            })
            .unwrap();
        let url = format!(
            "{}{}",
            td["base"].as_str().unwrap(),
            read["href"].as_str().unwrap()
        );
        assert_eq!(common::get_json::<Value>(&client, &url).await, value, "{url}");
    }
    // An escape that is not UTF-8 names nothing.
    let res = client
        .get(format!("{base}/things/odd/properties/%FF"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `base` of the TD served for `GET /things/lamp` with the given request head lines.
async fn base_for(address: &str, head: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET /things/lamp HTTP/1.0\r\n{head}\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut response))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (status, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.0 200"), "{head:?}: {status}");
    let td: Value = serde_json::from_str(body).unwrap();
    td["base"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn td_links_follow_the_host_and_forwarding_headers_a_request_names() {
    let running = common::start().await;
    let base = running.http_url();
    let address = base.strip_prefix("http://").unwrap();
    // No Host at all (HTTP/1.0): the port's own address.
    assert_eq!(base_for(address, "").await, format!("{base}/"));
    assert_eq!(
        base_for(address, "Host: lamp.example:8080\r\n").await,
        "http://lamp.example:8080/"
    );
    assert_eq!(
        base_for(
            address,
            "Host: 10.0.0.2:8080\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: wot.example\r\n"
        )
        .await,
        "https://wot.example/"
    );
    assert_eq!(
        base_for(
            address,
            "Host: 10.0.0.2:8080\r\nForwarded: proto=https;host=proxy.example:8443\r\n"
        )
        .await,
        "https://proxy.example:8443/"
    );
    running.stop().await;
}
