//! The library API over the wire: the example's Rust-defined door, with its custom async
//! handlers, served by the runtime and driven over HTTP; a start that fails, which leaves
//! nothing running; and a binding from another crate mounted on the HTTP port.

use crate::common;

#[path = "../../examples/custom_thing.rs"]
mod example;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wot_runtime::runtime::{Config, Running, StartError};
use wot_runtime::things::{self, Hosted, IdStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_defined_in_rust_is_served_like_any_other() {
    let hosted = vec![Hosted {
        thing: example::door(),
        behaviors: Default::default(),
    }];
    let running = Running::start(Config::loopback(), hosted).await.unwrap();
    let client = common::client();
    let base = running.http_url();
    let td: Value = common::get_json(&client, format!("{base}/things/door")).await;
    common::assert_valid_td(&td);
    let mut events = common::SseReader::new(
        client
            .get(format!("{base}/things/door/events/arrived"))
            .send()
            .await
            .unwrap(),
    );
    events.wait_for_text(": subscribed", Duration::from_secs(5)).await;
    let res = client
        .post(format!("{base}/things/door/actions/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let arrived = events.next(Duration::from_secs(10)).await;
    assert_eq!(arrived.data, "100");
    let status: Value = common::get_json(&client, &location).await;
    assert_eq!(
        (status["status"].clone(), status["output"].clone()),
        (json!("completed"), json!(100))
    );
    // The handler's own error reaches the client as a failed status.
    client
        .put(format!("{base}/things/door/properties/locked"))
        .json(&json!(true))
        .send()
        .await
        .unwrap();
    let res = client
        .post(format!("{base}/things/door/actions/close"))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let failed = loop {
        let s: Value = common::get_json(&client, &location).await;
        if s["status"] == "failed" || s["status"] == "completed" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]["detail"].as_str().unwrap().contains("locked"),
        "{failed}"
    );
    let position: Value = common::get_json(&client, format!("{base}/things/door/properties/position")).await;
    assert_eq!(position, 100);
    running.stop().await;
}

/// The HTTP port is taken: the start fails with a bind error, and nothing it began keeps
/// running. No behaviour, reloader or adapter task holds the thing it was given, and the
/// thing's command, which would run every 20 ms, never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_leaves_nothing_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("wot-failed-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ran = dir.join("ran");
    let file = dir.join("meter.json");
    let model = json!({
        "title": "Meter",
        "properties": {
            "reading": {"type": "number", "readOnly": true,
                "runtime": {"source": {"command": {
                    "argv": ["sh", "-c", "echo ran >> \"$0\"; echo 1", ran], "parse": "number", "pollMs": 20}}}}
        }
    });
    std::fs::write(&file, model.to_string()).unwrap();
    let definition = wot_runtime::td::definition::load_file(&file).unwrap_or_else(|p| panic!("{p:?}"));
    let hosted = things::expose(definition, &mut IdStore::new(None)).unwrap();
    let thing = std::sync::Arc::downgrade(&hosted.thing);
    let config = Config {
        http_port: taken.local_addr().unwrap().port(),
        watch_dir: Some(dir.clone()),
        ..Config::loopback()
    };
    match Running::start(config, vec![hosted]).await {
        Err(StartError::Bind { what: "HTTP", .. }) => {}
        Err(e) => panic!("the wrong error: {e}"),
        Ok(_) => panic!("started on a port that is taken"),
    }
    assert!(
        thing.upgrade().is_none(),
        "a task started by the failed start still holds the thing"
    );
    // Long enough for the command to have run many times, had its task been left behind.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ran.exists(), "the thing's command ran although the start failed");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A binding from another crate, as a user of the library writes one: its route is served on
/// the HTTP port behind the same credentials check as every other request, it reaches the thing
/// through the servient, and its form is in the thing's TD, which still validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_from_another_crate_serves_on_the_http_port_and_adds_its_forms() {
    use std::sync::Arc;

    use actix_web::{HttpResponse, web};
    use tokio::sync::watch;
    use wot_runtime::binding::http::{Mount, Security};
    use wot_runtime::core::{ExposedThing, Operation, Reply, Servient};
    use wot_runtime::runtime::Adapter;
    use wot_runtime::td::{Form, FormOperation, FormProvider, Origins, form};

    /// `GET /echo/{thing}`: the thing's properties.
    #[derive(Debug)]
    struct Echo;

    impl Adapter for Echo {
        fn mount(&self, servient: Arc<Servient>, _shutdown: watch::Receiver<bool>) -> Mount {
            Arc::new(move |cfg: &mut web::ServiceConfig| {
                let servient = servient.clone();
                cfg.route(
                    "/echo/{thing}",
                    web::get().to(move |thing: web::Path<String>| {
                        let servient = servient.clone();
                        async move {
                            match servient.handle(&thing, Operation::ReadAllProperties).await {
                                Ok(Reply::Value(bytes)) => HttpResponse::Ok().body(bytes),
                                _ => HttpResponse::NotFound().finish(),
                            }
                        }
                    }),
                );
            })
        }

        fn forms(&self) -> Option<Arc<dyn FormProvider>> {
            Some(Arc::new(EchoForms))
        }
    }

    struct EchoForms;

    impl FormProvider for EchoForms {
        fn thing_forms(&self, thing: &ExposedThing, origins: &Origins, forms: &mut Vec<Form>) {
            if let Some(http) = &origins.http {
                let href = format!("{http}/echo/{}", thing.slug);
                forms.push(form(&[FormOperation::ReadAllProperties], href));
            }
        }
        fn property_forms(&self, _: &ExposedThing, _: &str, _: &Origins, _: &mut Vec<Form>) {}
        fn action_forms(&self, _: &ExposedThing, _: &str, _: &Origins, _: &mut Vec<Form>) {}
        fn event_forms(&self, _: &ExposedThing, _: &str, _: &Origins, _: &mut Vec<Form>) {}
    }

    let auth = wot_runtime::security::Auth::parse("bearer:adapter-test-token").unwrap();
    let config = Config {
        adapters: vec![Arc::new(Echo)],
        security: Security {
            auth: Some(Arc::new(auth)),
            ..Security::default()
        },
        ..Config::loopback()
    };
    let hosted = vec![Hosted {
        thing: example::door(),
        behaviors: Default::default(),
    }];
    let running = Running::start(config, hosted).await.unwrap();
    let client = common::client();
    let base = running.http_url();
    let echo = format!("{base}/echo/door");
    let refused = client.get(&echo).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let token = "Bearer adapter-test-token";
    let res = client
        .get(&echo)
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let properties: Value = res.json().await.unwrap();
    assert_eq!(properties, json!({"position": 0, "locked": false}));
    let td: Value = common::json_of(
        client
            .get(format!("{base}/things/door"))
            .header("Authorization", token),
    )
    .await;
    common::assert_valid_td(&td);
    let hrefs: Vec<&str> = td["forms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["href"].as_str())
        .collect();
    assert!(hrefs.contains(&echo.as_str()), "{hrefs:?}");
    running.stop().await;
}
