//! From thing definitions to exposed things: builds each thing with its behaviours' action
//! handlers and gives it a stable `urn:uuid:` id. Ids persist in `--state-dir` when one is given
//! (random v4, changeable by deleting the file); without one they are derived from the
//! machine's id and the slug, so they still survive restarts.
//!
//! It also carries the bundled `things/` files, so `wot serve` works with no setup.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::behavior::Behaviors;
use crate::core::{ExposedThing, ThingBuilder};
use crate::td::definition::{self, Problem, ThingDefinition};

/// The bundled thing files, embedded in the binary.
pub const BUNDLED: &[(&str, &str)] = &[
    ("lamp.json", include_str!("../things/lamp.json")),
    ("thermostat.json", include_str!("../things/thermostat.json")),
    ("host.json", include_str!("../things/host.json")),
];

/// An exposed thing with the behaviours that drive it.
pub struct Hosted {
    pub thing: Arc<ExposedThing>,
    pub behaviors: Behaviors,
}

/// Hands out stable ids.
pub struct IdStore {
    file: Option<PathBuf>,
    ids: Map<String, Value>,
    machine: String,
}

impl IdStore {
    pub fn open(state_dir: Option<&Path>) -> std::io::Result<Self> {
        let machine = std::fs::read_to_string("/etc/machine-id")
            .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "wot-runtime".into());
        let Some(dir) = state_dir else {
            return Ok(IdStore {
                file: None,
                ids: Map::new(),
                machine,
            });
        };
        std::fs::create_dir_all(dir)?;
        let file = dir.join("ids.json");
        let ids = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Map<String, Value>>(&bytes).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(e),
        };
        Ok(IdStore {
            file: Some(file),
            ids,
            machine,
        })
    }

    /// The id for a key (a thing's slug, or "directory").
    pub fn id_for(&mut self, key: &str) -> std::io::Result<String> {
        if let Some(id) = self.ids.get(key).and_then(Value::as_str) {
            return Ok(id.to_owned());
        }
        let id = match &self.file {
            Some(_) => format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            None => {
                let name = format!("{}/{key}", self.machine);
                format!(
                    "urn:uuid:{}",
                    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
                )
            }
        };
        self.ids.insert(key.to_owned(), Value::from(id.clone()));
        if let Some(file) = &self.file {
            let tmp = file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.ids)?)?;
            std::fs::rename(&tmp, file)?;
        }
        Ok(id)
    }
}

/// Builds the exposed thing of a definition.
pub fn expose(definition: ThingDefinition, ids: &mut IdStore) -> Result<Hosted, Problem> {
    let path = definition.path.clone();
    let id = match definition.model.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => ids
            .id_for(&definition.slug)
            .map_err(|e| Problem::new(&path, "", "io", e.to_string()))?,
    };
    let mut builder = ThingBuilder::new(definition.slug.clone(), definition.model).id(id);
    for (name, handler) in definition.behaviors.action_handlers() {
        builder = builder.on_action_handler(name, handler);
    }
    let thing = builder.build().map_err(|v| Problem::from_violation(&path, v))?;
    Ok(Hosted {
        thing,
        behaviors: definition.behaviors,
    })
}

/// Parses the bundled thing files.
pub fn bundled() -> Vec<Result<ThingDefinition, Vec<Problem>>> {
    BUNDLED
        .iter()
        .map(|(name, text)| definition::parse(Path::new(name), text))
        .collect()
}
