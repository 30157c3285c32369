//! The web explorer over the wire: `/` answers HTML to browsers only (every other `Accept` keeps
//! the API's 404), with a strict Content-Security-Policy; every asset the page loads is served
//! with its content type; under `--auth` the page and its assets load without credentials while
//! the API stays guarded. What the page does in a browser is `.ci/interop/explorer.sh`.

use crate::common;

use std::collections::BTreeSet;
use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap};
use serde_json::Value;
use wot_runtime::binding::http::Security;
use wot_runtime::runtime::Config;
use wot_runtime::security::{Auth, HostPolicy};

const CHROMIUM_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

fn header(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The policy forbids inline script and style and any script or style from elsewhere.
fn assert_strict_csp(headers: &HeaderMap) {
    let csp = header(headers, CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp:?}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
}

/// The files the page loads: `explorer/…` references in the page, then the modules' imports.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("explorer/").chain(text.match_indices("'./")) {
        let rest = &text[i..];
        let rest = rest
            .strip_prefix("'./")
            .map(|r| format!("explorer/{r}"))
            .unwrap_or(rest.to_owned());
        let end = rest.find(['"', '\'']).unwrap_or(rest.len());
        found.insert(rest[..end].to_owned());
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_for_browsers_and_the_api_answers_everyone_else() {
    let running = common::start().await;
    let base = running.http_url();
    let client = common::client();

    let res = client
        .get(format!("{base}/"))
        .header("Accept", CHROMIUM_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(res.headers(), "vary"), "Accept");
    assert_strict_csp(res.headers());
    let page = res.text().await.unwrap();
    assert!(
        page.contains(r#"<script type="module" src="explorer/app.js"></script>"#),
        "{page}"
    );
    assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains(" style="));

    let head = client
        .head(format!("{base}/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // Everyone else gets what `/` always answered: a 404 problem.
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("text/html;q=0, application/json"),
    ] {
        let mut req = client.get(format!("{base}/"));
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "Accept {accept:?}");
        assert_eq!(header(res.headers(), CONTENT_TYPE), "application/problem+json");
        assert_eq!(
            header(res.headers(), "vary"),
            "Accept",
            "no cache may give it to a browser"
        );
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], 404);
    }
    let post = client
        .post(format!("{base}/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::NOT_FOUND);

    // A browser that navigates to the API gets the API, not the page.
    for path in ["/things", "/.well-known/wot", "/things/lamp"] {
        let res = client
            .get(format!("{base}{path}"))
            .header("Accept", CHROMIUM_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(header(res.headers(), CONTENT_TYPE).contains("json"), "{path}");
        assert!(res.headers().get(CONTENT_SECURITY_POLICY).is_none(), "{path}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_asset_the_page_loads_is_served_with_its_type() {
    let running = common::start().await;
    let base = running.http_url();
    let client = common::client();
    let page = client
        .get(format!("{base}/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut todo: Vec<String> = references(&page).into_iter().collect();
    let mut seen = BTreeSet::new();
    let mut total = page.len();
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let res = client.get(format!("{base}/{path}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_strict_csp(res.headers());
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset {path} ({other:?})"),
        };
        assert_eq!(header(res.headers(), CONTENT_TYPE), expected, "{path}");
        let text = res.text().await.unwrap();
        total += text.len();
        if path.ends_with(".js") {
            // Values from thing files go in as text; nothing is evaluated or parsed as HTML.
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(banned), "{path} uses {banned}");
            }
            // The page follows forms: no affordance path of this server is written into it.
            for path_part in ["/properties", "/actions", "/events", "/longpoll"] {
                assert!(!text.contains(path_part), "{path} hard-codes {path_part}");
            }
            todo.extend(references(&text));
        }
    }
    for expected in [
        "explorer/app.js",
        "explorer/style.css",
        "explorer/icon.svg",
        "explorer/thing.js",
        "explorer/net.js",
    ] {
        assert!(seen.contains(expected), "{expected} not loaded: {seen:?}");
    }
    assert!(total < 64 * 1024, "the page and its assets weigh {total} bytes");

    let missing = client
        .get(format!("{base}/explorer/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(missing.headers(), CONTENT_TYPE),
        "application/problem+json"
    );
    let put = client
        .put(format!("{base}/explorer/app.js"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_auth_the_page_loads_and_the_api_stays_guarded() {
    let running = common::start_with(Config {
        security: Security {
            auth: Some(Arc::new(Auth::parse("bearer:explorer-token").unwrap())),
            hosts: HostPolicy::local(&[], None),
            ..Security::default()
        },
        ..Config::loopback()
    })
    .await;
    let base = running.http_url();
    let client = common::client();
    let page = client
        .get(format!("{base}/"))
        .header("Accept", CHROMIUM_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_strict_csp(page.headers());
    for asset in ["app.js", "net.js", "style.css"] {
        let res = client
            .get(format!("{base}/explorer/{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
    }
    // Only the page and known assets are open: the API, `/` for the API and unknown files want
    // the token.
    for (path, accept) in [
        ("/", "application/json"),
        ("/things", CHROMIUM_ACCEPT),
        ("/things/lamp/properties/on", "application/json"),
        ("/explorer/secret.js", "*/*"),
    ] {
        let res = client
            .get(format!("{base}{path}"))
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            header(res.headers(), "www-authenticate").starts_with("Bearer"),
            "{path}"
        );
    }
    let write = client
        .put(format!("{base}/things/lamp/properties/on"))
        .header("Accept", "text/html")
        .json(&true)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::UNAUTHORIZED);
    let things: Value =
        common::json_of(client.get(format!("{base}/things")).bearer_auth("explorer-token")).await;
    assert_eq!(things.as_array().map(Vec::len), Some(3));
    // The Host check still holds for the page (DNS rebinding).
    let rebound = client
        .get(format!("{base}/"))
        .header("Accept", "text/html")
        .header("Host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    running.stop().await;
}
