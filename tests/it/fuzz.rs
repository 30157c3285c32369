//! Bounded property tests over thing-file parsing (and the TD built from what parses), an input
//! path that takes arbitrary bytes: it must answer with a value or an error, never a panic. The
//! case count follows PROPTEST_CASES (CI raises it; see .ci/run). DataSchema validation and the
//! Web Thing Protocol decoder have theirs next to them (`core::schema`, `binding::ws::protocol`).

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn thing_file_parsing_never_panics(
        file in prop::sample::select(vec!["lamp.json", "thermostat.json", "host.json"]),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        truncate in any::<prop::sample::Index>(),
        shorten in any::<bool>(),
    ) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("things").join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, byte) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if shorten {
            bytes.truncate(truncate.index(bytes.len() + 1));
        }
        let text = String::from_utf8_lossy(&bytes);
        match wot_runtime::td::definition::parse(&path, &text) {
            Ok(definition) => {
                // Whatever parses must build and publish without a panic too.
                let mut ids = wot_runtime::things::IdStore::new(None);
                if let Ok(hosted) = wot_runtime::things::expose(definition, &mut ids) {
                    let publisher = wot_runtime::td::TdPublisher::new(vec![
                        std::sync::Arc::new(wot_runtime::binding::http::HttpForms),
                    ]);
                    let origins = wot_runtime::td::Origins { http: Some("http://h:1".into()), coap: None, coaps: None };
                    let _ = publisher.build(&hosted.thing, &origins);
                }
            }
            Err(problems) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(p.pointer.is_empty() || p.pointer.starts_with('/'), "{}", p);
                }
            }
        }
    }

    #[test]
    fn json_shaped_thing_files_never_panic(doc in json_value()) {
        let _ = wot_runtime::td::definition::parse(Path::new("fuzz.json"), &doc.to_string());
        let wrapped = json!({"title": "t", "properties": {"p": doc.clone()}, "actions": {"a": doc.clone()}, "events": {"e": doc}});
        let _ = wot_runtime::td::definition::parse(Path::new("fuzz.json"), &wrapped.to_string());
    }
}
