//! Thing definitions: the JSON files in `things/`. A file is a TD without forms (title,
//! properties, actions, events in TD syntax) whose affordances may carry a `runtime` object (see
//! `behavior::spec`). This module splits a file into the descriptive model and the behaviours,
//! and reports every mistake as a [`Problem`]: the file, a JSON pointer and the broken rule.
//!
//! It reads and checks; it does not build TDs (that is `publish`) nor run anything.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::model;
use super::problem::Problem;
use super::proxy::{self, Proxy};
use crate::behavior::Behaviors;

/// One thing loaded from a file.
#[derive(Debug, Clone)]
pub struct ThingDefinition {
    /// The file's stem: the thing's URL path segment and mDNS name.
    pub slug: String,
    /// The file it was loaded from (what its problems name).
    pub path: PathBuf,
    /// The TD without forms, base or security, runtime keys removed; `@context` holds only the
    /// file's own entries (see `extra_context`), if any.
    pub model: Value,
    /// What the file's `runtime` keys declare.
    pub behaviors: Behaviors,
    /// A proxy file's remote: the model is the remote TD's, filled in by the bridge before the
    /// thing is built (until then it is empty).
    pub proxy: Option<Proxy>,
}

/// Keys the runtime writes into every TD; a thing file must not set them.
const RUNTIME_OWNED: &[&str] = &["forms", "base", "security", "securityDefinitions"];
const KINDS: &[&str] = &["properties", "actions", "events"];

/// A slug is the file stem: it becomes a URL path segment and an mDNS name, so keep it plain.
pub(crate) fn slug_of(path: &Path) -> Result<String, Problem> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let ok = !stem.is_empty()
        && stem.len() <= 63
        && stem
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(stem.to_owned())
    } else {
        Err(Problem::new(
            path,
            "",
            "file-name",
            format!("'{stem}' is not a usable thing name: use 1-63 of a-z, 0-9, '-' and '_'"),
        ))
    }
}

/// Parses one thing file's text (the file's path names the thing and its problems).
pub fn parse(path: &Path, text: &str) -> Result<ThingDefinition, Vec<Problem>> {
    let slug = slug_of(path).map_err(|p| vec![p])?;
    let mut doc = document(path, text)?;
    if proxy::is_proxy(&doc) {
        return Ok(ThingDefinition {
            proxy: Some(proxy::parse(path, &doc)?),
            slug,
            path: path.to_owned(),
            model: Value::Object(Map::new()),
            behaviors: Behaviors::default(),
        });
    }
    let Some(root) = doc.as_object_mut() else {
        return Err(vec![Problem::new(
            path,
            "",
            "type",
            "a thing file is a JSON object",
        )]);
    };
    let mut problems = top_level_problems(path, root);
    problems.extend(type_problem(path, "", root));
    let behaviors = take_behaviors(path, root, &mut problems);
    if let Some(context) = root.get_mut("@context") {
        // Replaced where it stands: the TD keeps the file's member order.
        match extra_context(path, context.take()) {
            Ok(extra) if !extra.is_empty() => *context = Value::Array(extra),
            Ok(_) => {
                root.shift_remove("@context");
            }
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty()
        && let Err((pointer, message)) = behaviors.check(&doc)
    {
        problems.push(Problem::new(path, pointer, "runtime", message));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ThingDefinition {
        slug,
        path: path.to_owned(),
        model: doc,
        behaviors,
        proxy: None,
    })
}

/// The file's JSON document: an instance file is expanded from its Thing Model; a Thing Model
/// itself is refused (it is not served).
fn document(path: &Path, text: &str) -> Result<Value, Vec<Problem>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        vec![Problem::new(
            path,
            "",
            "json",
            format!("not valid JSON: {e} (line {}, column {})", e.line(), e.column()),
        )]
    })?;
    if model::is_thing_model(&doc) {
        return Err(vec![Problem::new(
            path,
            "/@type",
            "tm:ThingModel",
            "a Thing Model is not served itself: an instance file names it in 'instance'",
        )]);
    }
    if model::instance_of(&doc).is_some() {
        return model::instantiate(path, &doc);
    }
    Ok(doc)
}

/// Keys the runtime writes that the file sets, and a missing or empty title.
fn top_level_problems(path: &Path, root: &Map<String, Value>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for key in RUNTIME_OWNED {
        if root.contains_key(*key) {
            problems.push(Problem::new(
                path,
                format!("/{key}"),
                "runtime-owned",
                format!("'{key}' is added by the runtime; remove it"),
            ));
        }
    }
    if root
        .get("title")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        problems.push(Problem::new(
            path,
            "/title",
            "required",
            "a thing needs a non-empty string 'title'",
        ));
    }
    problems
}

/// An `@type` (at JSON pointer `at`) that is not a term or a list of terms: semantic
/// annotations are strings, as TD 1.1 and the JSON-LD they stand for require.
fn type_problem(path: &Path, at: &str, object: &Map<String, Value>) -> Option<Problem> {
    let problem = |pointer: String| {
        Some(Problem::new(
            path,
            pointer,
            "type",
            "@type is a non-empty string or an array of them",
        ))
    };
    match object.get("@type")? {
        Value::String(term) if !term.is_empty() => None,
        Value::Array(terms) => terms
            .iter()
            .position(|t| t.as_str().is_none_or(str::is_empty))
            .and_then(|i| problem(format!("{at}/@type/{i}"))),
        _ => problem(format!("{at}/@type")),
    }
}

/// The TD context URIs: the runtime writes them itself, so a file's own copies are dropped.
const TD_CONTEXT_URIS: &[&str] = &[
    "https://www.w3.org/2019/wot/td/v1",
    "https://www.w3.org/2022/wot/td/v1.1",
];

/// The entries of a file's `@context` that the runtime does not write itself (vocabulary URIs
/// and prefix maps, for the file's `@type` terms), in the file's order; the TD gets them after
/// its own. Each is an IRI string or an object of prefix → IRI strings, as TD 1.1 allows.
fn extra_context(path: &Path, context: Value) -> Result<Vec<Value>, Problem> {
    let (entries, in_array) = match context {
        Value::Array(entries) => (entries, true),
        entry => (vec![entry], false),
    };
    let mut extra = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = if in_array {
            format!("/@context/{i}")
        } else {
            "/@context".to_owned()
        };
        match &entry {
            Value::String(uri) if TD_CONTEXT_URIS.contains(&uri.as_str()) => continue,
            Value::String(uri) if !uri.is_empty() => {}
            Value::Object(prefixes) => {
                if let Some((key, _)) = prefixes.iter().find(|(_, iri)| !iri.is_string()) {
                    return Err(Problem::new(
                        path,
                        format!("{at}/{}", crate::core::schema::escape_pointer(key)),
                        "context",
                        "a @context object maps each term to an IRI string",
                    ));
                }
            }
            _ => {
                return Err(Problem::new(
                    path,
                    at,
                    "context",
                    "a @context entry is an IRI string or an object of term → IRI strings",
                ));
            }
        }
        extra.push(entry);
    }
    Ok(extra)
}

/// Takes every affordance's `runtime` object out of the model into the behaviours, reporting
/// affordance maps and affordances that are not objects and forms written by hand.
fn take_behaviors(path: &Path, root: &mut Map<String, Value>, problems: &mut Vec<Problem>) -> Behaviors {
    let mut behaviors = Behaviors::default();
    for kind in KINDS {
        let Some(affordances) = root.get_mut(*kind) else {
            continue;
        };
        let Some(affordances) = affordances.as_object_mut() else {
            problems.push(Problem::new(
                path,
                format!("/{kind}"),
                "type",
                format!("'{kind}' must be an object"),
            ));
            continue;
        };
        for (name, affordance) in affordances.iter_mut() {
            let at = format!("/{kind}/{}", crate::core::schema::escape_pointer(name));
            let Some(affordance) = affordance.as_object_mut() else {
                problems.push(Problem::new(path, at, "type", "an affordance must be an object"));
                continue;
            };
            problems.extend(type_problem(path, &at, affordance));
            if affordance.contains_key("forms") {
                problems.push(Problem::new(
                    path,
                    format!("{at}/forms"),
                    "runtime-owned",
                    "forms are generated by the runtime; remove them",
                ));
            }
            // Shift, not swap: the served TD keeps the file's order of the other members.
            if let Some(runtime) = affordance.shift_remove("runtime")
                && let Err(p) = take_runtime(path, (kind, name), &at, runtime, &mut behaviors)
            {
                problems.push(p);
            }
        }
    }
    behaviors
}

/// Stores one affordance's `runtime` object (at JSON pointer `at`) with the behaviours of its
/// kind, if it parses.
fn take_runtime(
    path: &Path,
    (kind, name): (&str, &str),
    at: &str,
    runtime: Value,
    behaviors: &mut Behaviors,
) -> Result<(), Problem> {
    let at = format!("{at}/runtime");
    let name = name.to_owned();
    match kind {
        "properties" => {
            behaviors.properties.insert(name, typed(path, &at, runtime)?);
        }
        "actions" => {
            behaviors.actions.insert(name, typed(path, &at, runtime)?);
        }
        _ => {
            behaviors.events.insert(name, typed(path, &at, runtime)?);
        }
    }
    Ok(())
}

/// Deserialises a runtime object, turning serde's path into a JSON pointer.
fn typed<T: DeserializeOwned>(path: &Path, at: &str, value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut pointer = at.to_owned();
        for segment in e.path().iter() {
            use serde_path_to_error::Segment;
            match segment {
                Segment::Map { key } => {
                    pointer.push_str(&format!("/{}", crate::core::schema::escape_pointer(key)))
                }
                Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
                Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                Segment::Unknown => {}
            }
        }
        Problem::new(path, pointer, "runtime", e.into_inner().to_string())
    })
}

/// Thing files of a directory: every `*.json` except Thing Models (`*.tm.json`), which are
/// only used through instance files. Sorted by name.
pub(crate) fn thing_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .filter(|p| !p.to_string_lossy().ends_with(".tm.json"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads and parses every thing file of a directory.
pub fn load_dir(dir: &Path) -> Result<Vec<Result<ThingDefinition, Vec<Problem>>>, std::io::Error> {
    Ok(thing_files(dir)?.iter().map(|p| load_file(p)).collect())
}

/// Reads and parses one thing file.
pub fn load_file(path: &Path) -> Result<ThingDefinition, Vec<Problem>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![Problem::new(path, "", "io", e.to_string())])?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        parse(Path::new("things/lamp.json"), text).unwrap_err()
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let p = &problems("{\"title\": }")[0];
        assert_eq!(p.rule, "json");
        assert!(p.message.contains("line 1"), "{}", p.message);
    }

    #[test]
    fn runtime_typos_name_their_pointer() {
        let p = &problems(
            r#"{"title":"L","properties":{"t":{"type":"number","runtime":{"source":{"drift":{"towards":"x"}}}}}}"#,
        )[0];
        assert_eq!(p.pointer, "/properties/t/runtime/source/drift/towards");
        assert!(p.message.contains("towards"), "{}", p.message);
    }

    #[test]
    fn forms_and_dangling_references_are_refused() {
        let p = problems(r#"{"title":"L","forms":[],"properties":{"on":{"type":"boolean","forms":[]}}}"#);
        let pointers: Vec<_> = p.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers, ["/forms", "/properties/on/forms"]);
        let p = &problems(r#"{"title":"L","actions":{"t":{"runtime":{"effect":{"toggle":"nope"}}}}}"#)[0];
        assert_eq!(
            (p.pointer.as_str(), p.rule.as_str()),
            ("/actions/t/runtime/effect/toggle", "runtime")
        );
    }

    #[test]
    fn context_keeps_the_files_own_entries_in_place() {
        let def = parse(
            Path::new("lamp.json"),
            r#"{"title":"L","@context":["https://www.w3.org/2019/wot/td/v1","https://www.w3.org/2022/wot/td/v1.1",{"wt":"https://webthings.io/schemas#"},"https://example.org/v"],"@type":"wt:Light"}"#,
        )
        .unwrap();
        let keys: Vec<_> = def.model.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["title", "@context", "@type"]);
        assert_eq!(
            def.model["@context"],
            serde_json::json!([{"wt": "https://webthings.io/schemas#"}, "https://example.org/v"])
        );
        let only_td = parse(
            Path::new("lamp.json"),
            r#"{"@context":"https://www.w3.org/2022/wot/td/v1.1","title":"L"}"#,
        )
        .unwrap();
        assert!(only_td.model.get("@context").is_none());
        for (text, pointer) in [
            (r#"{"title":"L","@context":[7]}"#, "/@context/0"),
            (r#"{"title":"L","@context":{"wt":["x"]}}"#, "/@context/wt"),
            (r#"{"title":"L","@type":""}"#, "/@type"),
            (
                r#"{"title":"L","properties":{"p":{"@type":["a",{}]}}}"#,
                "/properties/p/@type/1",
            ),
        ] {
            let p = &problems(text)[0];
            assert_eq!(p.pointer, pointer, "{text}");
        }
    }

    #[test]
    fn the_model_keeps_no_runtime_keys() {
        let def = parse(
            Path::new("lamp.json"),
            r#"{"title":"L","properties":{"on":{"type":"boolean","runtime":{"source":"stored"}}}}"#,
        )
        .unwrap();
        assert!(def.model.pointer("/properties/on/runtime").is_none());
        assert_eq!(def.slug, "lamp");
    }

    #[test]
    fn taking_runtime_out_keeps_the_order_of_the_other_members() {
        let def = parse(
            Path::new("lamp.json"),
            r#"{"title":"L","properties":{"on":{"title":"On","runtime":{"source":"stored"},"type":"boolean","description":"d","observable":true}}}"#,
        )
        .unwrap();
        let keys: Vec<&String> = def.model["properties"]["on"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["title", "type", "description", "observable"]);
    }
}
