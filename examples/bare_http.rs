//! The bare handler `benches/http.sh` measures the runtime against: one actix-web service that
//! answers every request (any method and path) with a constant JSON body, and nothing else (no
//! routing, middleware or state).
//! A benchmark fixture, not a test: nothing here is asserted.
//!
//!     cargo run --release --example bare_http [-- --port 0] [--body-bytes N]
//!
//! `--body-bytes N` answers a JSON string of N bytes instead of `50`: the bare cost of sending
//! as much as a TD, to tell the runtime's own work apart from the size of what it sends.
//!
//! It prints `{"http":"http://127.0.0.1:PORT"}` on one line once it listens, as `wot serve`
//! prints its ready line, so the bench reads both the same way.
//!
//! The ratio is fair only if the stack is the same: actix-web's `HttpServer` is the actix-http
//! service on actix-server that `binding::http::server` builds (without its upgrade service, which
//! a request that does not ask to upgrade never reaches), with the settings `wot serve` gives it:
//! one worker per available core, a 5 s request-head timeout, 15 s keep-alive and a 1 s
//! disconnect timeout (`binding::http::Timeouts::default()`, `runtime::Config::default()`).

use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::StreamExt;

/// What the handler answers by default: the size of a property value
/// (`GET /things/lamp/properties/...`).
const BODY: &[u8] = b"50";

fn main() -> std::io::Result<()> {
    let mut port = 0u16;
    let mut body = bytes::Bytes::from_static(BODY);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().map(|v| v.parse::<usize>())) {
            ("--port", Some(Ok(p))) if p <= usize::from(u16::MAX) => port = p as u16,
            ("--body-bytes", Some(Ok(n))) if n >= 2 => {
                body = format!("\"{}\"", "x".repeat(n - 2)).into();
            }
            _ => {
                eprintln!("usage: bare_http [--port N] [--body-bytes N]");
                std::process::exit(2);
            }
        }
    }
    // The same defaults as `wot serve`, read from the library so that they cannot drift apart.
    let timeouts = wot_runtime::binding::http::Timeouts::default();
    let workers = wot_runtime::runtime::Config::default().workers;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let addr = listener.local_addr()?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let answer = body.clone();
            App::new().default_service(web::to(move |mut body: web::Payload| {
                let answer = answer.clone();
                async move {
                    // A body (a PUT's) is read to its end, or actix-http closes the connection after
                    // the answer; a GET has none, and this costs it nothing.
                    while let Some(chunk) = body.next().await {
                        chunk?;
                    }
                    Ok::<_, actix_web::Error>(
                        HttpResponse::Ok()
                            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
                            .body(answer),
                    )
                }
            }))
        })
        .workers(workers)
        .client_request_timeout(timeouts.head)
        .keep_alive(timeouts.idle)
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals()
        .listen(listener)?
        .run();
        println!("{{\"http\":\"http://{addr}\"}}");
        server.await
    })
}
