//! What the legacy description says of a thing's semantics, for hubs that key their UI and item
//! types on it (HUBS.md §3 item 1): the thing file's `@type` terms, which the W3C TD carries as
//! written, resolved to WebThings capability names (`Light`, `OnOffProperty`, ...), and action
//! input schemas cut down to the JSON Schema keywords that the Gateway's strict Ajv compiles.
//!
//! A term names a WebThings capability when it is a full IRI in the WebThings vocabulary, a
//! compact IRI whose prefix the file's `@context` maps to it, or a bare capability name (what the
//! Mozilla API itself writes). Terms of other vocabularies have no meaning under the legacy
//! `@context` and are left out; nothing is guessed from names or units.
//!
//! Pure functions of the thing's model; it knows no routes and no wire format.

use serde_json::{Map, Value};

/// IRIs of the WebThings vocabulary (with the Mozilla IoT one it was published under first).
const NAMESPACES: &[&str] = &[
    "https://webthings.io/schemas#",
    "https://webthings.io/schemas/#",
    "https://iot.mozilla.org/schemas#",
    "https://iot.mozilla.org/schemas/#",
];

/// Thing capabilities of the WebThings schemas.
const THING_TYPES: &[&str] = &[
    "Alarm",
    "AirQualitySensor",
    "BarometricPressureSensor",
    "BinarySensor",
    "Camera",
    "ColorControl",
    "ColorSensor",
    "DoorSensor",
    "EnergyMonitor",
    "HumiditySensor",
    "LeakSensor",
    "Light",
    "Lock",
    "MotionSensor",
    "MultiLevelSensor",
    "MultiLevelSwitch",
    "OccupancySensor",
    "OnOffSwitch",
    "PushButton",
    "SmartPlug",
    "SmokeSensor",
    "TemperatureSensor",
    "Thermostat",
    "VideoCamera",
];

/// Property types of the WebThings schemas.
const PROPERTY_TYPES: &[&str] = &[
    "AlarmProperty",
    "BarometricPressureProperty",
    "BooleanProperty",
    "BrightnessProperty",
    "ColorModeProperty",
    "ColorProperty",
    "ColorTemperatureProperty",
    "ConcentrationProperty",
    "CurrentProperty",
    "DensityProperty",
    "FrequencyProperty",
    "HeatingCoolingProperty",
    "HumidityProperty",
    "ImageProperty",
    "InstantaneousPowerFactorProperty",
    "InstantaneousPowerProperty",
    "LeakProperty",
    "LevelProperty",
    "LockedProperty",
    "MotionProperty",
    "OccupiedProperty",
    "OnOffProperty",
    "OpenProperty",
    "PushedProperty",
    "SmokeProperty",
    "TargetTemperatureProperty",
    "TemperatureProperty",
    "ThermostatModeProperty",
    "VideoProperty",
    "VoltageProperty",
];

/// Action types of the WebThings schemas.
const ACTION_TYPES: &[&str] = &["FadeAction", "LockAction", "ToggleAction", "UnlockAction"];

/// Event types of the WebThings schemas.
const EVENT_TYPES: &[&str] = &[
    "AlarmEvent",
    "DoublePressedEvent",
    "LongPressedEvent",
    "OverheatedEvent",
    "PressedEvent",
];

/// What an `@type` annotates, which decides the names it may resolve to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Thing,
    Property,
    Action,
    Event,
}

impl Kind {
    fn names(self) -> &'static [&'static str] {
        match self {
            Kind::Thing => THING_TYPES,
            Kind::Property => PROPERTY_TYPES,
            Kind::Action => ACTION_TYPES,
            Kind::Event => EVENT_TYPES,
        }
    }
}

/// The prefixes a thing file's `@context` binds to the WebThings vocabulary.
pub(crate) struct Vocabulary {
    prefixes: Vec<String>,
}

impl Vocabulary {
    pub(crate) fn of(model: &Value) -> Self {
        let prefixes = match model.get("@context") {
            Some(Value::Array(entries)) => entries.iter().collect(),
            Some(entry) => vec![entry],
            None => Vec::new(),
        }
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|terms| terms.iter())
        .filter(|(_, iri)| iri.as_str().is_some_and(|iri| NAMESPACES.contains(&iri)))
        .map(|(prefix, _)| prefix.clone())
        .collect();
        Vocabulary { prefixes }
    }

    /// The WebThings name a term stands for, if it is one of `kind`.
    fn resolve(&self, term: &str, kind: Kind) -> Option<&'static str> {
        let local = NAMESPACES
            .iter()
            .find_map(|ns| term.strip_prefix(ns))
            .or_else(|| {
                let (prefix, local) = term.split_once(':')?;
                self.prefixes.iter().any(|p| p == prefix).then_some(local)
            })
            .unwrap_or(term);
        kind.names().iter().copied().find(|name| *name == local)
    }

    /// The WebThings names among an `@type` (a string or an array of them), in its order.
    pub(crate) fn names(&self, at_type: Option<&Value>, kind: Kind) -> Vec<&'static str> {
        let terms: Vec<&str> = match at_type {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut names = Vec::new();
        for name in terms.into_iter().filter_map(|t| self.resolve(t, kind)) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// JSON Schema (draft-07) keywords that Ajv compiles in strict mode without plug-ins. `format`
/// is not among them: Ajv without ajv-formats refuses every format in strict mode.
const JSON_SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "const",
    "enum",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "items",
    "additionalItems",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "maxProperties",
    "minProperties",
    "required",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "dependencies",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// A TD DataSchema as plain JSON Schema: TD terms (`unit`, `@type`, `titles`, ...) and `format`
/// are dropped at every level. The hub only pre-checks with it; the core still validates every
/// input against the full schema.
pub(crate) fn plain_schema(schema: &Value) -> Value {
    let Value::Object(schema) = schema else {
        // `true` / `false` schemas, or anything a subschema position holds that is not one.
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in schema {
        if !JSON_SCHEMA_KEYWORDS.contains(&key.as_str()) {
            continue;
        }
        let value = match key.as_str() {
            "properties" | "patternProperties" | "dependencies" => match value {
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(name, sub)| (name.clone(), plain_schema(sub)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(subs) => Value::Array(subs.iter().map(plain_schema).collect()),
                sub => plain_schema(sub),
            },
            "additionalItems"
            | "additionalProperties"
            | "contains"
            | "propertyNames"
            | "not"
            | "if"
            | "then"
            | "else" => plain_schema(value),
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terms_resolve_through_the_files_context_only_to_their_kind() {
        let model = json!({"@context": [{"wt": "https://webthings.io/schemas#", "saref": "https://saref.etsi.org/core/"}]});
        let v = Vocabulary::of(&model);
        let types = json!([
            "wt:Light",
            "saref:LightSwitch",
            "https://webthings.io/schemas#OnOffSwitch",
            "wt:Light",
            "Thermostat",
            "other:Light"
        ]);
        assert_eq!(
            v.names(Some(&types), Kind::Thing),
            ["Light", "OnOffSwitch", "Thermostat"]
        );
        assert_eq!(
            v.names(Some(&json!("wt:BrightnessProperty")), Kind::Property),
            ["BrightnessProperty"]
        );
        assert!(
            v.names(Some(&json!("wt:BrightnessProperty")), Kind::Thing)
                .is_empty()
        );
        assert!(v.names(Some(&json!("wt:Nonsense")), Kind::Property).is_empty());
        assert!(v.names(None, Kind::Action).is_empty());
        // Without the prefix in the context, a compact IRI means nothing here.
        let bare = Vocabulary::of(&json!({}));
        assert!(bare.names(Some(&json!("wt:Light")), Kind::Thing).is_empty());
        assert_eq!(
            bare.names(Some(&json!("FadeAction")), Kind::Action),
            ["FadeAction"]
        );
    }

    #[test]
    fn plain_schema_keeps_json_schema_only() {
        let input = json!({
            "type": "object", "@type": "x", "unit": "percent",
            "properties": {
                "unit": {"type": "string", "format": "uuid", "titles": {"de": "Einheit"}},
                "level": {"type": "integer", "minimum": 0, "unit": "percent", "description": "d"},
                "list": {"type": "array", "items": [{"type": "number", "unit": "m"}], "additionalItems": {"unit": "m"}},
                "choice": {"oneOf": [{"const": 1, "@type": "y"}, true]}
            },
            "required": ["level"],
            "additionalProperties": false
        });
        assert_eq!(
            plain_schema(&input),
            json!({
                "type": "object",
                "properties": {
                    "unit": {"type": "string"},
                    "level": {"type": "integer", "minimum": 0, "description": "d"},
                    "list": {"type": "array", "items": [{"type": "number"}], "additionalItems": {}},
                    "choice": {"oneOf": [{"const": 1}, true]}
                },
                "required": ["level"],
                "additionalProperties": false
            })
        );
    }
}
