//! Thing Models (TD 1.1 §9): a things/ file may be a W3C Thing Model (`@type` containing
//! `tm:ThingModel`), and an instance file names a model and supplies its `{{PLACEHOLDER}}`
//! values. Instantiation follows §9.4: resolve `tm:extends` and `tm:ref` (local files only,
//! loops refused), merge local members over imported ones by JSON Merge Patch (RFC 7396), drop
//! `tm:ThingModel` and every other `tm:` term, substitute every placeholder (retyping values that
//! stood alone in a string), and link the result to its model. What comes out is an ordinary
//! thing definition, checked and published like any other.
//!
//! It reads files relative to the instance; it never fetches anything remote.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::problem::Problem;
use crate::core::schema::escape_pointer;

/// Is this document a Thing Model?
pub(crate) fn is_thing_model(doc: &Value) -> bool {
    match doc.get("@type") {
        Some(Value::String(t)) => t == "tm:ThingModel",
        Some(Value::Array(a)) => a.iter().any(|t| t == "tm:ThingModel"),
        _ => false,
    }
}

/// The `instance` key of a thing file: which model, and the placeholder values.
pub(crate) fn instance_of(doc: &Value) -> Option<&Value> {
    doc.get("instance")
}

struct Resolver<'a> {
    /// Files being resolved, to refuse loops.
    stack: Vec<PathBuf>,
    instance: &'a Path,
}

impl Resolver<'_> {
    fn problem(&self, pointer: impl Into<String>, rule: &str, message: impl Into<String>) -> Problem {
        Problem::new(self.instance, pointer, rule, message)
    }

    fn load(&mut self, path: &Path) -> Result<Value, Problem> {
        let canonical = path
            .canonicalize()
            .map_err(|e| self.problem("", "tm:ref", format!("{}: {e}", path.display())))?;
        if self.stack.contains(&canonical) {
            return Err(self.problem(
                "",
                "tm-ref-recursive-extensions",
                format!("{} refers back to itself", path.display()),
            ));
        }
        let text = std::fs::read_to_string(&canonical)
            .map_err(|e| self.problem("", "io", format!("{}: {e}", path.display())))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| self.problem("", "json", format!("{}: not valid JSON: {e}", path.display())))?;
        self.stack.push(canonical.clone());
        let dir = canonical.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolved = self
            .extend(doc, &dir)
            .and_then(|d| self.refs(d.clone(), &d, &dir, String::new()));
        self.stack.pop();
        resolved
    }

    /// `links: [{"rel": "tm:extends", "href": ...}]`: the parent, with this model merged over it.
    fn extend(&mut self, mut doc: Value, dir: &Path) -> Result<Value, Problem> {
        let mut parents = Vec::new();
        if let Some(Value::Array(links)) = doc.get_mut("links") {
            links.retain(|link| {
                let extends = link.get("rel").and_then(Value::as_str) == Some("tm:extends");
                if extends && let Some(href) = link.get("href").and_then(Value::as_str) {
                    parents.push(href.to_owned());
                }
                !extends
            });
        }
        if doc
            .get("links")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            doc.as_object_mut().map(|o| o.shift_remove("links"));
        }
        let mut merged = Value::Object(Map::new());
        for href in parents {
            let parent = self.load(&dir.join(href))?;
            merge_patch(&mut merged, &parent);
        }
        merge_patch(&mut merged, &doc);
        Ok(merged)
    }

    /// Replaces every `{"tm:ref": "file#/pointer", ...local}` by its target with the local
    /// members merged over it.
    fn refs(&mut self, value: Value, root: &Value, dir: &Path, at: String) -> Result<Value, Problem> {
        match value {
            Value::Object(mut map) => {
                if let Some(reference) = map.shift_remove("tm:ref") {
                    let reference = reference
                        .as_str()
                        .ok_or_else(|| {
                            self.problem(format!("{at}/tm:ref"), "tm-tmRef1", "tm:ref must be a string")
                        })?
                        .to_owned();
                    let (file, pointer) = reference.split_once('#').unwrap_or((reference.as_str(), ""));
                    let document = if file.is_empty() {
                        root.clone()
                    } else {
                        self.load(&dir.join(file))?
                    };
                    let mut target = document.pointer(pointer).cloned().ok_or_else(|| {
                        self.problem(
                            format!("{at}/tm:ref"),
                            "tm-tmRef1",
                            format!("'{reference}' points at nothing"),
                        )
                    })?;
                    if !file.is_empty() || target.get("tm:ref").is_some() {
                        target = self.refs(target, &document, dir, at.clone())?;
                    }
                    let local = self.refs(Value::Object(map), root, dir, at)?;
                    merge_patch(&mut target, &local);
                    return Ok(target);
                }
                let mut out = Map::new();
                for (k, v) in map {
                    let child = format!("{at}/{}", escape_pointer(&k));
                    out.insert(k, self.refs(v, root, dir, child)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| self.refs(v, root, dir, format!("{at}/{i}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other),
        }
    }
}

/// RFC 7396 JSON Merge Patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            target.shift_remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn placeholder_name(s: &str) -> Option<&str> {
    s.strip_prefix("{{")?
        .strip_suffix("}}")
        .filter(|n| !n.is_empty() && !n.contains('{') && !n.contains('}'))
}

/// Substitutes placeholders; collects the pointer of every one without a value.
fn substitute(
    value: &mut Value,
    values: &Map<String, Value>,
    at: String,
    missing: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) => {
            if let Some(name) = placeholder_name(s) {
                match values.get(name) {
                    // A value that stood alone takes the supplied JSON type (tm-placeholder-retyping).
                    Some(v) => *value = v.clone(),
                    None => missing.push((at, name.to_owned())),
                }
                return;
            }
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                let Some(len) = rest[start..].find("}}") else {
                    break;
                };
                let name = &rest[start + 2..start + len];
                out.push_str(&rest[..start]);
                match values.get(name) {
                    Some(Value::String(v)) => out.push_str(v),
                    Some(v) => out.push_str(&v.to_string()),
                    None => {
                        missing.push((at.clone(), name.to_owned()));
                        out.push_str(&rest[start..start + len + 2]);
                    }
                }
                rest = &rest[start + len + 2..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                substitute(v, values, format!("{at}/{}", escape_pointer(k)), missing);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                substitute(v, values, format!("{at}/{i}"), missing);
            }
        }
        _ => {}
    }
}

fn strip_tm_terms(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with("tm:"));
            for v in map.values_mut() {
                strip_tm_terms(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_tm_terms),
        _ => {}
    }
}

/// Turns an instance file (`{"instance": {"model": "x.tm.json", "placeholders": {...}}, ...}`)
/// into a thing definition document, following the TM instantiation steps: the model is
/// resolved, stops being a Thing Model, gets every placeholder's value and loses its `tm:`
/// terms; then the members of the instance file other than `instance` are merged over it.
pub(crate) fn instantiate(instance_path: &Path, instance: &Value) -> Result<Value, Vec<Problem>> {
    let (model_ref, values) = instance_spec(instance_path, instance)?;
    let dir = instance_path.parent().unwrap_or(Path::new("."));
    let mut resolver = Resolver {
        stack: Vec::new(),
        instance: instance_path,
    };
    let mut doc = resolver.load(&dir.join(model_ref)).map_err(|p| vec![p])?;
    if !is_thing_model(&doc) {
        return Err(vec![Problem::new(
            instance_path,
            "/instance/model",
            "tm-identification",
            format!("{model_ref} is not a Thing Model (no tm:ThingModel @type)"),
        )]);
    }
    drop_thing_model_type(&mut doc);
    fill_placeholders(instance_path, model_ref, &mut doc, &values)?;
    // Step 7: no tm: terms remain.
    strip_tm_terms(&mut doc);
    if let Some(root) = doc.as_object_mut() {
        describe_instance(root, model_ref);
    }
    // The instance's own members override the model's.
    let mut local = instance.clone();
    local.as_object_mut().map(|o| o.shift_remove("instance"));
    merge_patch(&mut doc, &local);
    Ok(doc)
}

/// The instance file's `instance` member: the model file it names, and the placeholder values.
fn instance_spec<'a>(
    instance_path: &Path,
    instance: &'a Value,
) -> Result<(&'a str, Map<String, Value>), Vec<Problem>> {
    let problem =
        |pointer: &str, rule: &str, message: &str| vec![Problem::new(instance_path, pointer, rule, message)];
    let spec =
        instance_of(instance).ok_or_else(|| problem("/instance", "required", "no 'instance' member"))?;
    let model_ref = spec.get("model").and_then(Value::as_str).ok_or_else(|| {
        problem(
            "/instance/model",
            "required",
            "the instance names its model file in 'model'",
        )
    })?;
    let values = match spec.get("placeholders") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(problem(
                "/instance/placeholders",
                "type",
                "placeholders are an object",
            ));
        }
    };
    Ok((model_ref, values))
}

/// Step 3: `tm:ThingModel` leaves `@type` (and an `@type` left empty goes).
fn drop_thing_model_type(doc: &mut Value) {
    if let Some(types) = doc.get_mut("@type") {
        let kept: Vec<Value> = match types {
            Value::Array(a) => a.iter().filter(|t| *t != "tm:ThingModel").cloned().collect(),
            _ => Vec::new(),
        };
        *types = Value::Array(kept);
    }
    if doc
        .get("@type")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        doc.as_object_mut().map(|o| o.shift_remove("@type"));
    }
}

/// Step 5: every placeholder gets its value; each one without a value is a problem of the
/// instance file.
fn fill_placeholders(
    instance_path: &Path,
    model_ref: &str,
    doc: &mut Value,
    values: &Map<String, Value>,
) -> Result<(), Vec<Problem>> {
    let mut missing = Vec::new();
    substitute(doc, values, String::new(), &mut missing);
    if missing.is_empty() {
        return Ok(());
    }
    Err(missing
        .into_iter()
        .map(|(pointer, name)| {
            Problem::new(
                instance_path,
                format!("/instance/placeholders/{name}"),
                "tm-placeholder-replacement",
                format!(
                    "placeholder {{{{{name}}}}} (used at {} of {model_ref}) has no value",
                    if pointer.is_empty() { "/" } else { &pointer }
                ),
            )
        })
        .collect())
}

/// The instance's `version` (its own, with the model's) and a `type` link to its model. The
/// model's `@context` stays: `definition` keeps its vocabulary entries for the model's `@type`
/// terms and drops the TD context URIs, which the runtime writes itself.
fn describe_instance(root: &mut Map<String, Value>, model_ref: &str) {
    let model_version = root.get("version").and_then(|v| v.get("model")).cloned();
    let mut version = json!({"instance": "1.0.0"});
    if let Some(m) = model_version {
        version["model"] = m;
    }
    root.insert("version".into(), version);
    let links = root.entry("links").or_insert_with(|| json!([]));
    if let Value::Array(links) = links {
        links.push(json!({"rel": "type", "href": model_ref, "type": "application/tm+json"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, doc: Value) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wot-tm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn extends_refs_placeholders_and_retyping() {
        let dir = temp("full");
        write(
            &dir,
            "base.tm.json",
            json!({
                "@context": "https://www.w3.org/2022/wot/td/v1.1",
                "@type": "tm:ThingModel",
                "title": "Base",
                "properties": {"on": {"type": "boolean"}},
                "schemas": {"level": {"type": "integer", "minimum": 0, "maximum": "{{MAX}}"}}
            }),
        );
        write(
            &dir,
            "dimmer.tm.json",
            json!({
                "@context": ["https://www.w3.org/2022/wot/td/v1.1", {"webthings": "https://webthings.io/schemas#"}],
                "@type": ["tm:ThingModel", "webthings:Light"],
                "title": "{{ROOM}} dimmer",
                "version": {"model": "2.0.0"},
                "links": [{"rel": "tm:extends", "href": "base.tm.json"}],
                "properties": {"brightness": {"tm:ref": "base.tm.json#/schemas/level", "observable": "{{OBSERVABLE}}"}},
                "tm:optional": ["/properties/brightness"]
            }),
        );
        let instance = json!({"instance": {"model": "dimmer.tm.json", "placeholders": {"ROOM": "Kitchen", "MAX": 80, "OBSERVABLE": true}}});
        let doc = instantiate(&dir.join("kitchen.json"), &instance).unwrap();
        assert_eq!(doc["title"], "Kitchen dimmer");
        assert_eq!(doc["@type"], json!(["webthings:Light"]));
        assert_eq!(
            doc["properties"]["brightness"],
            json!({"type": "integer", "minimum": 0, "maximum": 80, "observable": true})
        );
        assert_eq!(
            doc["properties"]["on"]["type"], "boolean",
            "extended from the parent"
        );
        assert_eq!(doc["version"], json!({"instance": "1.0.0", "model": "2.0.0"}));
        assert_eq!(
            doc["links"],
            json!([{"rel": "type", "href": "dimmer.tm.json", "type": "application/tm+json"}])
        );
        assert!(!doc.to_string().contains("tm:"), "{doc}");
        assert_eq!(
            doc["@context"],
            json!(["https://www.w3.org/2022/wot/td/v1.1", {"webthings": "https://webthings.io/schemas#"}]),
            "the model's vocabulary stays for its @type"
        );
    }

    #[test]
    fn missing_placeholders_dangling_refs_and_loops_are_named() {
        let dir = temp("bad");
        write(
            &dir,
            "m.tm.json",
            json!({"@type": "tm:ThingModel", "title": "{{NAME}}", "properties": {"p": {"tm:ref": "#/nowhere"}}}),
        );
        let problems =
            instantiate(&dir.join("i.json"), &json!({"instance": {"model": "m.tm.json"}})).unwrap_err();
        assert_eq!(problems[0].rule, "tm-tmRef1");
        assert_eq!(problems[0].pointer, "/properties/p/tm:ref");
        write(
            &dir,
            "n.tm.json",
            json!({"@type": "tm:ThingModel", "title": "{{NAME}}"}),
        );
        let problems =
            instantiate(&dir.join("i.json"), &json!({"instance": {"model": "n.tm.json"}})).unwrap_err();
        assert_eq!(
            (problems[0].pointer.as_str(), problems[0].rule.as_str()),
            ("/instance/placeholders/NAME", "tm-placeholder-replacement")
        );
        write(
            &dir,
            "a.tm.json",
            json!({"@type": "tm:ThingModel", "title": "a", "links": [{"rel": "tm:extends", "href": "b.tm.json"}]}),
        );
        write(
            &dir,
            "b.tm.json",
            json!({"@type": "tm:ThingModel", "title": "b", "links": [{"rel": "tm:extends", "href": "a.tm.json"}]}),
        );
        let problems =
            instantiate(&dir.join("i.json"), &json!({"instance": {"model": "a.tm.json"}})).unwrap_err();
        assert_eq!(problems[0].rule, "tm-ref-recursive-extensions");
        let problems = instantiate(
            &dir.join("i.json"),
            &json!({"instance": {"model": "missing.tm.json"}}),
        )
        .unwrap_err();
        assert!(problems[0].message.contains("missing.tm.json"));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    }
}
