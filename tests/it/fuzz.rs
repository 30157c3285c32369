//! Bounded property tests over the input paths that take arbitrary bytes: DataSchema
//! validation, thing-file parsing (and the TD built from what parses) and the Web Thing
//! Protocol decoder. Each must answer with a value or an error, never a panic. The case count
//! follows PROPTEST_CASES (CI raises it; see .ci/run).

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use wot_runtime::core::schema::DataSchema;

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

/// DataSchemas with the TD terms, some of them nonsensical on purpose.
fn schema() -> impl Strategy<Value = Value> {
    let types = prop_oneof![
        Just("boolean"),
        Just("integer"),
        Just("number"),
        Just("string"),
        Just("object"),
        Just("array"),
        Just("null")
    ];
    (
        types,
        json_value(),
        json_value(),
        any::<bool>(),
        "[a-z\\[\\]\\(\\)\\*\\+\\.]{0,6}",
        0u32..4,
    )
        .prop_map(|(ty, a, b, flag, pattern, shape)| {
            let mut s = json!({"type": ty});
            match shape {
                0 => {
                    s["minimum"] = a;
                    s["maximum"] = b;
                }
                1 => {
                    s["enum"] = json!([a, b]);
                    s["readOnly"] = json!(flag);
                }
                2 => {
                    s["pattern"] = json!(pattern);
                    s["minLength"] = a;
                }
                _ => {
                    s["properties"] = json!({"x": {"type": ty, "writeOnly": flag}, "y": {"readOnly": !flag}});
                    s["required"] = json!(["x"]);
                    s["items"] = a;
                }
            }
            s
        })
}

proptest! {
    #[test]
    fn data_schema_validation_never_panics(schema in schema(), value in json_value()) {
        if let Ok(compiled) = DataSchema::compile(&schema) {
            let _ = compiled.check_write(value.clone());
            let _ = compiled.is_valid(&value);
            let mut copy = value.clone();
            compiled.strip_write_only(&mut copy);
            let _ = compiled.normalise(value);
        }
    }

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
                    let origins = wot_runtime::td::Origins { http: Some("http://h:1".into()), coap: None };
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

    #[test]
    fn web_thing_protocol_decoder_never_panics(raw in ".{0,200}", doc in json_value(), op in "[a-z]{0,24}") {
        let _ = wot_runtime::binding::ws::protocol::decode(&raw);
        let _ = wot_runtime::binding::ws::protocol::decode(&doc.to_string());
        let message = json!({"thingID": "urn:x", "messageID": "1", "messageType": "request", "operation": op, "name": doc.clone(), "value": doc.clone(), "input": doc});
        let _ = wot_runtime::binding::ws::protocol::decode(&message.to_string());
    }
}
