//! Validation of documents against the W3C TD 1.1 and TM JSON Schemas (vendored in `w3c/`,
//! compiled once, never resolved by their remote `$id`), plus the spot checks of TD §6.5.1 the
//! schema cannot express. Used by `wot validate`, by the loader for every thing file, and by
//! tests for every served TD.

use std::sync::OnceLock;

use serde_json::Value;

use crate::core::SchemaViolation;

const TD_SCHEMA: &str = include_str!("w3c/td-json-schema-validation.json");
const TM_SCHEMA: &str = include_str!("w3c/tm-json-schema-validation.json");

fn compile(text: &str) -> Option<jsonschema::Validator> {
    let mut schema: Value = serde_json::from_str(text).ok()?;
    if let Value::Object(map) = &mut schema {
        // The `$id` names the TD 2.0 draft on `main`; the embedded REC copy is the one we want.
        map.remove("$id");
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .ok()
}

fn td_validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| compile(TD_SCHEMA)).as_ref()
}

fn tm_validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| compile(TM_SCHEMA)).as_ref()
}

fn violations(validator: Option<&jsonschema::Validator>, doc: &Value) -> Vec<SchemaViolation> {
    let Some(validator) = validator else {
        return vec![SchemaViolation {
            pointer: String::new(),
            rule: "schema".into(),
            message: "the embedded W3C schema failed to compile".into(),
        }];
    };
    validator
        .iter_errors(doc)
        .map(|e| SchemaViolation {
            pointer: e.instance_path().to_string(),
            rule: e.kind().keyword().to_owned(),
            message: e.to_string(),
        })
        .collect()
}

/// Every way `doc` breaks the TD 1.1 schema or the security spot check (empty: valid).
pub fn td_violations(doc: &Value) -> Vec<SchemaViolation> {
    let mut found = violations(td_validator(), doc);
    found.extend(undefined_security_names(doc));
    found
}

/// Every way `doc` breaks the TM schema.
pub fn tm_violations(doc: &Value) -> Vec<SchemaViolation> {
    violations(tm_validator(), doc)
}

/// TD §5.3.3: every security name used must be a key of `securityDefinitions`.
fn undefined_security_names(doc: &Value) -> Vec<SchemaViolation> {
    let defined = doc.get("securityDefinitions").and_then(Value::as_object);
    let names = match doc.get("security") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    names
        .into_iter()
        .filter(|n| !defined.is_some_and(|d| d.contains_key(*n)))
        .map(|n| SchemaViolation {
            pointer: "/security".into(),
            rule: "security".into(),
            message: format!("security name '{n}' is not defined in securityDefinitions"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_compiles_and_judges() {
        let good = json!({
            "@context": "https://www.w3.org/2022/wot/td/v1.1",
            "title": "t",
            "securityDefinitions": {"nosec_sc": {"scheme": "nosec"}},
            "security": "nosec_sc"
        });
        assert!(td_violations(&good).is_empty(), "{:?}", td_violations(&good));
        let mut bad = good.clone();
        bad["security"] = json!("missing");
        assert_eq!(td_violations(&bad)[0].rule, "security");
        bad.as_object_mut().unwrap().remove("title");
        assert!(td_violations(&bad).iter().any(|v| v.rule == "required"));
    }
}
