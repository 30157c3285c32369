//! DataSchema validation, done once in the core for every protocol.
//!
//! A TD DataSchema is (nearly) a JSON Schema draft-07 document, so validation is delegated to the
//! `jsonschema` crate; this module compiles each affordance's schema once, reports the first
//! violation as a [`SchemaViolation`] (JSON pointer + keyword), and adds what JSON Schema does not
//! do for WoT: nested `readOnly` members refused on writes, nested `writeOnly` members hidden on
//! reads, and integer values normalised so `5.0` is stored and emitted as `5`.
//! It must not know about any binding or about where values come from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Map, Value};

use super::error::{Error, SchemaViolation};

/// A compiled DataSchema. Cloning shares it.
///
/// Compiled validators are shared by the schema's JSON text: a bridge's thousand lamps of one
/// kind have a thousand identical brightness schemas and one validator (a compiled validator
/// takes kilobytes; the text that finds it, a few hundred bytes, once per distinct schema).
#[derive(Clone)]
pub struct DataSchema(Arc<Compiled>);

struct Compiled {
    raw: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for DataSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSchema").field("raw", &self.0.raw).finish()
    }
}

/// Keys of an affordance that are not DataSchema terms but share its JSON object (a
/// PropertyAffordance is an InteractionAffordance and a DataSchema at once).
const AFFORDANCE_ONLY_KEYS: &[&str] = &["forms", "observable", "uriVariables", "titles", "descriptions"];

/// Annotations that no validation, normalisation or readOnly/writeOnly rule reads: left out of
/// the schema at its top level so that affordances told apart only by them share a validator.
const ANNOTATIONS: &[&str] = &["title", "description", "@type", "unit", "$comment"];

/// The compiled schemas alive, by JSON text. Entries of dropped schemas are swept when the map
/// has doubled since the last sweep, so it holds at most twice the distinct schemas alive.
struct Interner {
    by_text: HashMap<String, Weak<Compiled>>,
    sweep_at: usize,
}

static INTERNER: Mutex<Option<Interner>> = Mutex::new(None);

fn interned(text: &str) -> Option<Arc<Compiled>> {
    let interner = INTERNER.lock().unwrap_or_else(|p| p.into_inner());
    interner.as_ref()?.by_text.get(text)?.upgrade()
}

/// Keeps `compiled` under `text`, unless a schema with that text was kept meanwhile: then that one.
fn intern(text: String, compiled: Arc<Compiled>) -> Arc<Compiled> {
    let mut guard = INTERNER.lock().unwrap_or_else(|p| p.into_inner());
    let interner = guard.get_or_insert_with(|| Interner {
        by_text: HashMap::new(),
        sweep_at: 64,
    });
    if let Some(kept) = interner.by_text.get(&text).and_then(Weak::upgrade) {
        return kept;
    }
    interner.by_text.insert(text, Arc::downgrade(&compiled));
    if interner.by_text.len() >= interner.sweep_at {
        interner.by_text.retain(|_, c| c.strong_count() > 0);
        interner.sweep_at = (2 * interner.by_text.len()).max(64);
    }
    compiled
}

impl DataSchema {
    /// Compiles a TD DataSchema. Fails when the schema itself is not valid JSON Schema; the
    /// violation's pointer is relative to the schema.
    pub fn compile(raw: &Value) -> Result<Self, SchemaViolation> {
        let mut schema = raw.clone();
        if let Value::Object(map) = &mut schema {
            for key in AFFORDANCE_ONLY_KEYS.iter().chain(ANNOTATIONS) {
                map.remove(*key);
            }
            // readOnly/writeOnly on the affordance itself are handled by the operation check.
            map.remove("readOnly");
            map.remove("writeOnly");
        }
        let text = schema.to_string();
        if let Some(compiled) = interned(&text) {
            return Ok(DataSchema(compiled));
        }
        // Compiled outside the interner's lock; two threads compiling the same text keep one.
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .build(&schema)
            .map_err(|e| SchemaViolation {
                pointer: e.instance_path().to_string(),
                rule: e.kind().keyword().to_owned(),
                message: format!("invalid DataSchema: {e}"),
            })?;
        let compiled = Arc::new(Compiled {
            raw: schema,
            validator,
        });
        Ok(DataSchema(intern(text, compiled)))
    }

    /// The schema it validates with: the model's, without the affordance's own terms and the
    /// annotations at its top level.
    pub fn raw(&self) -> &Value {
        &self.0.raw
    }

    /// Validates a value that a client wants to write or send as input. On success returns the
    /// value normalised (integers without fraction).
    pub fn check_write(&self, value: Value) -> Result<Value, Error> {
        if let Some(err) = self.0.validator.iter_errors(&value).next() {
            return Err(Error::Schema(SchemaViolation {
                pointer: err.instance_path().to_string(),
                rule: err.kind().keyword().to_owned(),
                message: err.to_string(),
            }));
        }
        if let Some(pointer) = find_read_only_member(&self.0.raw, &value, String::new()) {
            return Err(Error::Schema(SchemaViolation {
                message: format!("member {pointer} is read-only and cannot be written"),
                pointer,
                rule: "readOnly".into(),
            }));
        }
        Ok(normalise_integers(&self.0.raw, value))
    }

    /// Validates without the write-side rules (used for values produced by the thing itself).
    pub fn is_valid(&self, value: &Value) -> bool {
        self.0.validator.is_valid(value)
    }

    /// Normalises a value the thing produced (integers emitted without fraction).
    pub(crate) fn normalise(&self, value: Value) -> Value {
        normalise_integers(&self.0.raw, value)
    }

    /// True when reads must hide nested writeOnly members.
    pub(crate) fn has_write_only_members(&self) -> bool {
        has_nested(&self.0.raw, "writeOnly")
    }

    /// Removes nested writeOnly members from a value about to be read.
    pub(crate) fn strip_write_only(&self, value: &mut Value) {
        strip_write_only(&self.0.raw, value);
    }
}

fn member_schemas(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn find_read_only_member(schema: &Value, value: &Value, at: String) -> Option<String> {
    let (Some(members), Some(object)) = (member_schemas(schema), value.as_object()) else {
        return None;
    };
    for (name, member_value) in object {
        let Some(member_schema) = members.get(name) else {
            continue;
        };
        let pointer = format!("{at}/{}", escape_pointer(name));
        if member_schema.get("readOnly") == Some(&Value::Bool(true)) {
            return Some(pointer);
        }
        if let Some(found) = find_read_only_member(member_schema, member_value, pointer) {
            return Some(found);
        }
    }
    None
}

fn has_nested(schema: &Value, flag: &str) -> bool {
    member_schemas(schema).is_some_and(|members| {
        members
            .values()
            .any(|m| m.get(flag) == Some(&Value::Bool(true)) || has_nested(m, flag))
    })
}

fn strip_write_only(schema: &Value, value: &mut Value) {
    let (Some(members), Some(object)) = (member_schemas(schema), value.as_object_mut()) else {
        return;
    };
    object.retain(|name, _| members.get(name).and_then(|m| m.get("writeOnly")) != Some(&Value::Bool(true)));
    for (name, member_value) in object.iter_mut() {
        if let Some(member_schema) = members.get(name) {
            strip_write_only(member_schema, member_value);
        }
    }
}

fn normalise_integers(schema: &Value, value: Value) -> Value {
    match value {
        Value::Number(n) if schema.get("type").and_then(Value::as_str) == Some("integer") => {
            match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ => Value::Number(n),
            }
        }
        Value::Object(map) => match member_schemas(schema) {
            Some(members) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = match members.get(&k) {
                            Some(s) => normalise_integers(s, v),
                            None => v,
                        };
                        (k, v)
                    })
                    .collect(),
            ),
            None => Value::Object(map),
        },
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) if item_schema.is_object() => Value::Array(
                items
                    .into_iter()
                    .map(|v| normalise_integers(item_schema, v))
                    .collect(),
            ),
            _ => Value::Array(items),
        },
        other => other,
    }
}

/// Escapes a member name for use in a JSON pointer (RFC 6901).
pub(crate) fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn violation(schema: Value, value: Value) -> SchemaViolation {
        match DataSchema::compile(&schema).unwrap().check_write(value) {
            Err(Error::Schema(v)) => v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn identical_schemas_share_one_validator_while_one_is_alive() {
        let brightness = |title: &str| {
            json!({"title": title, "description": "level", "@type": "x:Level", "unit": "percent",
                   "observable": true, "type": "integer", "minimum": 0, "maximum": 100})
        };
        let a = DataSchema::compile(&brightness("Kitchen")).unwrap();
        let b = DataSchema::compile(&brightness("Hall")).unwrap();
        assert!(
            Arc::ptr_eq(&a.0, &b.0),
            "annotations alone do not make another schema"
        );
        let other = DataSchema::compile(&json!({"type": "integer", "minimum": 1, "maximum": 100})).unwrap();
        assert!(!Arc::ptr_eq(&a.0, &other.0));
        // Shared, each still validates as its own.
        assert!(matches!(b.check_write(json!(101)), Err(Error::Schema(_))));
        assert!(matches!(other.check_write(json!(0)), Err(Error::Schema(_))));
        assert_eq!(b.check_write(json!(0)).unwrap(), json!(0));
        // Once every holder is gone the validator goes too; the next compile makes a new one.
        let text = a.raw().to_string();
        drop((a, b));
        assert!(interned(&text).is_none());
        assert!(
            DataSchema::compile(&brightness("Porch"))
                .unwrap()
                .is_valid(&json!(5))
        );
    }

    #[test]
    fn the_interner_keeps_no_more_than_twice_the_schemas_alive() {
        let alive: Vec<DataSchema> = (0..10)
            .map(|i| DataSchema::compile(&json!({"type": "integer", "maximum": 1_000_000 + i})).unwrap())
            .collect();
        for i in 0..1000 {
            drop(DataSchema::compile(&json!({"type": "integer", "maximum": 2_000_000 + i})).unwrap());
        }
        let kept = INTERNER.lock().unwrap().as_ref().unwrap().by_text.len();
        // Other tests compile at the same time; their schemas count as alive too.
        assert!(kept < 200, "{kept} entries kept");
        assert!(alive.iter().all(|s| s.is_valid(&json!(1))));
    }

    #[test]
    fn reports_keyword_and_pointer() {
        let v = violation(json!({"type":"integer","minimum":0,"maximum":100}), json!(101));
        assert_eq!((v.rule.as_str(), v.pointer.as_str()), ("maximum", ""));
        let v = violation(
            json!({"type":"object","properties":{"level":{"type":"integer"}},"required":["level"]}),
            json!({"level":"high"}),
        );
        assert_eq!((v.rule.as_str(), v.pointer.as_str()), ("type", "/level"));
        let v = violation(json!({"type":"object","required":["level"]}), json!({}));
        assert_eq!(v.rule, "required");
    }

    #[test]
    fn covers_the_td_terms() {
        let cases = [
            (json!({"enum":[1,2]}), json!(3), "enum"),
            (json!({"const":"a"}), json!("b"), "const"),
            (json!({"exclusiveMinimum":0}), json!(0), "exclusiveMinimum"),
            (json!({"exclusiveMaximum":1}), json!(1), "exclusiveMaximum"),
            (json!({"multipleOf":5}), json!(7), "multipleOf"),
            (json!({"minLength":2}), json!("a"), "minLength"),
            (json!({"maxLength":1}), json!("ab"), "maxLength"),
            (json!({"pattern":"^[a-z]+$"}), json!("A1"), "pattern"),
            (json!({"type":"array","minItems":1}), json!([]), "minItems"),
            (json!({"type":"array","maxItems":1}), json!([1, 2]), "maxItems"),
            (
                json!({"type":"array","items":{"type":"string"}}),
                json!([1]),
                "type",
            ),
            (
                json!({"oneOf":[{"type":"string"},{"type":"integer"}]}),
                json!(true),
                "oneOf",
            ),
        ];
        for (schema, value, rule) in cases {
            assert_eq!(violation(schema, value).rule, rule);
        }
    }

    #[test]
    fn read_only_members_are_refused_and_write_only_hidden() {
        let schema = json!({"type":"object","properties":{
            "id":{"type":"string","readOnly":true},
            "secret":{"type":"string","writeOnly":true},
            "name":{"type":"string"}}});
        let v = violation(schema.clone(), json!({"id":"x"}));
        assert_eq!((v.rule.as_str(), v.pointer.as_str()), ("readOnly", "/id"));
        let compiled = DataSchema::compile(&schema).unwrap();
        assert!(compiled.has_write_only_members());
        let mut value = json!({"secret":"s","name":"n"});
        compiled.strip_write_only(&mut value);
        assert_eq!(value, json!({"name":"n"}));
    }

    #[test]
    fn integers_lose_their_fraction() {
        let schema = DataSchema::compile(&json!({"type":"integer"})).unwrap();
        assert_eq!(schema.check_write(json!(5.0)).unwrap().to_string(), "5");
        assert!(schema.check_write(json!(5.5)).is_err());
    }
}

/// Arbitrary JSON values and TD DataSchemas, for the property tests of every input path that
/// takes them (here and in the bindings' decoders).
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    pub(crate) fn json_value() -> impl Strategy<Value = Value> {
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
    pub(crate) fn schema() -> impl Strategy<Value = Value> {
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
                        s["properties"] =
                            json!({"x": {"type": ty, "writeOnly": flag}, "y": {"readOnly": !flag}});
                        s["required"] = json!(["x"]);
                        s["items"] = a;
                    }
                }
                s
            })
    }
}

/// Bounded property test: validation answers with a value or an error, never a panic. The case
/// count follows PROPTEST_CASES (CI raises it; see .ci/run).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::DataSchema;
    use super::arbitrary::{json_value, schema};

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
    }
}
