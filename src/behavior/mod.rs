//! Behaviours: what drives a thing's values. Property sources (stored, drifting or simulated
//! signals, polled file readings, commands), action effects (toggle, set, ramp, command) and
//! event triggers (threshold crossings, a command's output lines), all declared in a things/
//! file and turned here into core action handlers and background tasks.
//!
//! Behaviours act on the core only through `ExposedThing`'s public methods, like any client of
//! the core would; they know nothing of TDs or bindings.

pub(crate) mod command;
pub(crate) mod spec;

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use rand::RngExt;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::core::{ActionHandler, Error, ExposedThing, Received, Remote, Target, Topic};
use spec::{
    ActionRuntime, Condition, Drift, Effect, EventRuntime, FileSource, PropertyRuntime, PropertySource,
    RampEffect, Simulated, SimulatedKind,
};

/// The runtime part of one thing file: what drives its properties, actions and events. Opaque
/// outside this crate: it comes from a thing file ([`crate::td::ThingDefinition`]), and
/// `Behaviors::default()` is a thing driven only by its clients and its own action handlers.
#[derive(Debug, Clone, Default)]
pub struct Behaviors {
    pub(crate) properties: IndexMap<String, PropertyRuntime>,
    pub(crate) actions: IndexMap<String, ActionRuntime>,
    pub(crate) events: IndexMap<String, EventRuntime>,
    /// What drives a thing from outside its file (a proxy's remote), if anything.
    pub(crate) driver: Option<Arc<dyn Driver>>,
}

/// A behaviour that does not come from a thing file's `runtime` keys: the bridge's link to a
/// remote Thing, which answers the reads, writes and actions and feeds the changes.
pub(crate) trait Driver: Send + Sync + std::fmt::Debug {
    /// Where the thing's reads and writes go.
    fn remote(&self) -> Arc<dyn Remote>;
    /// The handler of every action the driver performs.
    fn action_handlers(&self) -> Vec<(String, ActionHandler)>;
    /// Starts the tasks that keep the thing in step; aborted when the thing goes away.
    fn start(&self, thing: &Arc<ExposedThing>) -> Vec<JoinHandle<()>>;
}

impl Behaviors {
    /// Behaviours that are all the driver's.
    pub(crate) fn driven(driver: Arc<dyn Driver>) -> Self {
        Behaviors {
            driver: Some(driver),
            ..Behaviors::default()
        }
    }
}

/// A reference from a behaviour to something that does not fit: (JSON pointer, message).
pub(crate) type BehaviorError = (String, String);

/// A thing's model, as its behaviours refer to it.
struct Refs<'a>(&'a Value);

impl Refs<'_> {
    /// The affordance `name` of `kind` (`properties`, `actions` or `events`), if there is one.
    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.0.get(kind).and_then(|m| m.get(name))
    }

    /// The `type` of property `name`, if it has one.
    fn property_type(&self, name: &str) -> Option<&str> {
        self.get("properties", name)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
    }

    /// That property `name` exists and, when `numeric`, is of type number or integer.
    fn need_property(&self, at: String, name: &str, numeric: bool) -> Result<(), BehaviorError> {
        if self.get("properties", name).is_none() {
            return Err((at, format!("no property named '{name}'")));
        }
        if numeric && !matches!(self.property_type(name), Some("number" | "integer")) {
            return Err((at, format!("property '{name}' must be of type number or integer")));
        }
        Ok(())
    }
}

/// That a command names at least its program.
fn need_program(at: String, argv: &[String]) -> Result<(), BehaviorError> {
    if argv.is_empty() {
        return Err((at, "argv needs at least the program".into()));
    }
    Ok(())
}

/// A property's source: what it drives or reads must exist and fit, and its parameters make
/// sense.
fn check_source(model: &Refs, name: &str, source: &PropertySource) -> Result<(), BehaviorError> {
    let at = format!("/properties/{name}/runtime/source");
    match source {
        PropertySource::Stored => {}
        PropertySource::Drift(d) => {
            model.need_property(at.clone(), name, true)?;
            model.need_property(format!("{at}/drift/toward"), &d.toward, true)?;
            if !(0.0..=1.0).contains(&d.rate) {
                return Err((format!("{at}/drift/rate"), "rate must be between 0 and 1".into()));
            }
        }
        PropertySource::Simulated(sim) => {
            model.need_property(at.clone(), name, sim.kind != SimulatedKind::Steps)?;
            if sim.kind == SimulatedKind::Steps && sim.values.is_empty() {
                return Err((
                    format!("{at}/simulated/values"),
                    "steps need at least one value".into(),
                ));
            }
            if sim.max < sim.min {
                return Err((format!("{at}/simulated/max"), "max is below min".into()));
            }
        }
        PropertySource::Command(c) => need_program(format!("{at}/command/argv"), &c.argv)?,
        PropertySource::File(f) => {
            model.need_property(at.clone(), name, true)?;
            if let Some(p) = &f.pattern {
                regex_lite::Regex::new(p).map_err(|e| (format!("{at}/file/pattern"), e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// An action's effect (the property it changes must exist and fit) and the event it emits.
fn check_action(model: &Refs, name: &str, runtime: &ActionRuntime) -> Result<(), BehaviorError> {
    let at = format!("/actions/{name}/runtime");
    match &runtime.effect {
        Effect::Toggle(p) => {
            model.need_property(format!("{at}/effect/toggle"), p, false)?;
            if model.property_type(p) != Some("boolean") {
                return Err((
                    format!("{at}/effect/toggle"),
                    format!("property '{p}' must be boolean"),
                ));
            }
        }
        Effect::Set(s) => model.need_property(format!("{at}/effect/set/property"), &s.property, false)?,
        Effect::Ramp(r) => model.need_property(format!("{at}/effect/ramp/property"), &r.property, true)?,
        Effect::Command(c) => need_program(format!("{at}/effect/command/argv"), &c.argv)?,
        Effect::Nothing => {}
    }
    if let Some(event) = &runtime.emit
        && model.get("events", event).is_none()
    {
        return Err((format!("{at}/emit"), format!("no event named '{event}'")));
    }
    Ok(())
}

/// An event's trigger: a condition on a numeric property, or a command's output lines.
fn check_event(model: &Refs, name: &str, runtime: &EventRuntime) -> Result<(), BehaviorError> {
    match runtime {
        EventRuntime::When(when) => {
            let at = format!("/events/{name}/runtime/when");
            model.need_property(format!("{at}/property"), &when.property, true)?;
            if when.above.is_none() && when.below.is_none() {
                return Err((at, "a condition needs 'above' or 'below'".into()));
            }
        }
        EventRuntime::Lines(lines) => {
            need_program(format!("/events/{name}/runtime/lines/argv"), &lines.argv)?;
        }
    }
    Ok(())
}

impl Behaviors {
    /// Checks every cross-reference against the thing's model: the properties and events named
    /// exist and have types the behaviour can drive.
    pub(crate) fn check(&self, model: &Value) -> Result<(), BehaviorError> {
        let model = Refs(model);
        for (name, runtime) in &self.properties {
            check_source(&model, name, &runtime.source)?;
        }
        for (name, runtime) in &self.actions {
            check_action(&model, name, runtime)?;
        }
        for (name, runtime) in &self.events {
            check_event(&model, name, runtime)?;
        }
        Ok(())
    }

    /// The core action handler for each action with a declared effect.
    pub(crate) fn action_handlers(&self) -> Vec<(String, ActionHandler)> {
        let mut handlers: Vec<(String, ActionHandler)> = self
            .actions
            .iter()
            .map(|(name, runtime)| (name.clone(), action_handler(name.clone(), runtime.clone())))
            .collect();
        if let Some(driver) = &self.driver {
            handlers.extend(driver.action_handlers());
        }
        handlers
    }

    /// Where the thing's reads and writes go, when a driver answers them.
    pub(crate) fn remote(&self) -> Option<Arc<dyn Remote>> {
        self.driver.as_ref().map(|d| d.remote())
    }

    /// Starts the background tasks (sources and conditions) of a thing. The caller aborts the
    /// returned handles when the thing goes away.
    pub(crate) fn start(&self, thing: &Arc<ExposedThing>) -> Vec<JoinHandle<()>> {
        let mut tasks = self.driver.as_ref().map(|d| d.start(thing)).unwrap_or_default();
        for (name, runtime) in &self.properties {
            match &runtime.source {
                PropertySource::Stored => {}
                PropertySource::Drift(d) => {
                    tasks.push(tokio::spawn(drift(thing.clone(), name.clone(), d.clone())))
                }
                PropertySource::File(f) => {
                    let source = FilePoll::new(thing, name, f);
                    // The first reading is taken now, before any client can ask, so that none
                    // sees the schema's default in its place.
                    let warned = source.read(false);
                    tasks.push(tokio::spawn(source.poll(warned)))
                }
                PropertySource::Simulated(sim) => {
                    tasks.push(tokio::spawn(simulate(thing.clone(), name.clone(), sim.clone())))
                }
                PropertySource::Command(c) => tasks.push(tokio::spawn(command::poll(
                    thing.clone(),
                    name.clone(),
                    c.clone(),
                ))),
            }
        }
        for (name, runtime) in &self.events {
            let task = match runtime {
                EventRuntime::When(when) => tokio::spawn(watch(thing.clone(), name.clone(), when.clone())),
                EventRuntime::Lines(lines) => {
                    tokio::spawn(command::lines(thing.clone(), name.clone(), lines.clone()))
                }
            };
            tasks.push(task);
        }
        tasks
    }
}

fn round(value: f64, decimals: u32) -> f64 {
    let factor = 10f64.powi(decimals as i32);
    (value * factor).round() / factor
}

fn as_number(value: f64, schema_type: Option<&str>) -> Value {
    if schema_type == Some("integer") {
        Value::from(value.round() as i64)
    } else {
        serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn schema_type(thing: &ExposedThing, name: &str) -> Option<String> {
    thing
        .model()
        .pointer(&format!("/properties/{name}/type"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn drift(thing: Arc<ExposedThing>, name: String, spec: Drift) {
    let mut tick = tokio::time::interval(Duration::from_millis(spec.period_ms.max(10)));
    let ty = schema_type(&thing, &name);
    loop {
        tick.tick().await;
        let (Ok(current), Ok(target)) = (thing.property(&name), thing.property(&spec.toward)) else {
            return;
        };
        let (Some(current), Some(target)) = (current.value().as_f64(), target.value().as_f64()) else {
            continue;
        };
        let noise = if spec.noise > 0.0 {
            rand::rng().random_range(-spec.noise..=spec.noise)
        } else {
            0.0
        };
        let next = round(current + (target - current) * spec.rate + noise, spec.decimals);
        if let Err(e) = thing.update_property(&name, as_number(next, ty.as_deref())) {
            tracing::debug!(thing = %thing.slug, property = %name, "drift value rejected: {e}");
        }
    }
}

async fn simulate(thing: Arc<ExposedThing>, name: String, spec: Simulated) {
    let ty = schema_type(&thing, &name);
    let mut tick = tokio::time::interval(Duration::from_millis(spec.period_ms.max(10)));
    let started = tokio::time::Instant::now();
    let mut index = 0usize;
    loop {
        tick.tick().await;
        let value = match spec.kind {
            SimulatedKind::Steps => {
                let v = spec.values[index % spec.values.len()].clone();
                index += 1;
                v
            }
            SimulatedKind::Sine => {
                let phase = started.elapsed().as_millis() as f64 / spec.cycle_ms.max(1) as f64;
                let v =
                    spec.min + (spec.max - spec.min) * (1.0 + (std::f64::consts::TAU * phase).sin()) / 2.0;
                as_number(round(v, spec.decimals), ty.as_deref())
            }
            SimulatedKind::RandomWalk => {
                let current = thing
                    .property(&name)
                    .ok()
                    .and_then(|p| p.value().as_f64())
                    .unwrap_or(spec.min);
                let delta = if spec.step > 0.0 {
                    rand::rng().random_range(-spec.step..=spec.step)
                } else {
                    0.0
                };
                as_number(
                    round((current + delta).clamp(spec.min, spec.max), spec.decimals),
                    ty.as_deref(),
                )
            }
        };
        if let Err(e) = thing.update_property(&name, value) {
            tracing::warn!(thing = %thing.slug, property = %name, "simulated value rejected: {e}");
        }
    }
}

/// Why a file source gave no number this time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileSourceError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: pattern did not match")]
    NoMatch { path: String },
    #[error("{path}: '{raw}' is not a number")]
    NotANumber { path: String, raw: String },
}

/// Reads one number out of a file per its source spec.
pub(crate) fn read_file_number(
    spec: &FileSource,
    pattern: Option<&regex_lite::Regex>,
) -> Result<f64, FileSourceError> {
    let path = || spec.path.clone();
    let text = std::fs::read_to_string(&spec.path)
        .map_err(|source| FileSourceError::Read { path: path(), source })?;
    let raw = match pattern {
        Some(re) => re
            .captures(&text)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
            .ok_or_else(|| FileSourceError::NoMatch { path: path() })?,
        None => text.trim().to_owned(),
    };
    let Ok(number) = raw.trim().parse::<f64>() else {
        return Err(FileSourceError::NotANumber { path: path(), raw });
    };
    Ok(round(number * spec.scale + spec.offset, spec.decimals))
}

/// A property that reads its value out of a file (`PropertySource::File`).
struct FilePoll {
    thing: Arc<ExposedThing>,
    name: String,
    spec: FileSource,
    pattern: Option<regex_lite::Regex>,
    ty: Option<String>,
}

impl FilePoll {
    fn new(thing: &Arc<ExposedThing>, name: &str, spec: &FileSource) -> Self {
        FilePoll {
            thing: thing.clone(),
            name: name.to_owned(),
            pattern: spec
                .pattern
                .as_deref()
                .and_then(|p| regex_lite::Regex::new(p).ok()),
            ty: schema_type(thing, name),
            spec: spec.clone(),
        }
    }

    /// Reads the file once into the property; returns whether the source is failing (`warned`
    /// says whether its failure was logged already: once until it recovers).
    fn read(&self, warned: bool) -> bool {
        match read_file_number(&self.spec, self.pattern.as_ref()) {
            Ok(n) => {
                if let Err(e) = self
                    .thing
                    .update_property(&self.name, as_number(n, self.ty.as_deref()))
                {
                    tracing::warn!(thing = %self.thing.slug, property = %self.name, "{e}");
                }
                false
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(thing = %self.thing.slug, property = %self.name, "file source: {e}");
                }
                true
            }
        }
    }

    /// Reads the file every `pollMs` from one period after now.
    async fn poll(self, mut warned: bool) {
        let period = Duration::from_millis(self.spec.poll_ms.max(10));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tick.tick().await;
            warned = self.read(warned);
        }
    }
}

async fn watch(thing: Arc<ExposedThing>, event: String, when: Condition) {
    let Ok(mut changes) = thing.subscribe(Target::Property(when.property.clone())) else {
        return;
    };
    let mut armed = true;
    // The condition may hold already at start; judge the current value first.
    let mut next_value = thing.property(&when.property).ok().map(|p| p.value());
    loop {
        if let Some(value) = next_value.take().and_then(|v| v.as_f64()) {
            let crossed = when.above.is_some_and(|t| value > t) || when.below.is_some_and(|t| value < t);
            let cleared = when.above.is_none_or(|t| value <= t - when.hysteresis)
                && when.below.is_none_or(|t| value >= t + when.hysteresis);
            if armed && crossed {
                armed = false;
                if let Err(e) = thing.emit_event(&event, Some(Value::from(value))) {
                    tracing::warn!(thing = %thing.slug, %event, "{e}");
                }
            } else if !armed && cleared {
                armed = true;
            }
        }
        match changes.recv().await {
            Received::Notification(n) => {
                if let Topic::Property(_) = n.topic {
                    next_value = serde_json::from_slice(&n.data).ok();
                }
            }
            Received::Lagged(_) => next_value = thing.property(&when.property).ok().map(|p| p.value()),
            Received::Closed(_) => return,
        }
    }
}

fn input_at(input: &Option<Value>, pointer: &str) -> Result<Value, Error> {
    let input = input.as_ref().unwrap_or(&Value::Null);
    input
        .pointer(pointer)
        .cloned()
        .ok_or_else(|| Error::ActionFailed(format!("input has no member at '{pointer}'")))
}

fn action_handler(action: String, runtime: ActionRuntime) -> ActionHandler {
    let runtime = Arc::new(runtime);
    let action: Arc<str> = action.into();
    Arc::new(move |ctx| {
        let runtime = runtime.clone();
        let action = action.clone();
        Box::pin(async move {
            let thing = ctx.thing;
            let output = match &runtime.effect {
                Effect::Toggle(property) => {
                    let next = !thing.property(property)?.value().as_bool().unwrap_or(false);
                    thing.set_property(property, Value::Bool(next)).await?;
                    Some(Value::Bool(next))
                }
                Effect::Set(set) => {
                    let value = input_at(&ctx.input, &set.from)?;
                    thing.write_property(&set.property, value).await?;
                    None
                }
                Effect::Ramp(ramp) => Some(run_ramp(&thing, ramp, &ctx.input).await?),
                Effect::Command(spec) => {
                    let stdin = serde_json::to_vec(ctx.input.as_ref().unwrap_or(&Value::Null))
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    let output = command::run(spec, Some(&stdin))
                        .await
                        .map_err(|e| Error::ActionFailed(e.to_string()))?;
                    if let Some(schema) = &thing.action(&action)?.output
                        && !schema.is_valid(&output)
                    {
                        return Err(Error::ActionFailed(format!(
                            "the command's output {output} does not fit the action's output schema"
                        )));
                    }
                    Some(output)
                }
                Effect::Nothing => None,
            };
            if let Some(event) = &runtime.emit {
                thing.emit_event(event, output.clone())?;
            }
            Ok(output)
        })
    })
}

async fn run_ramp(
    thing: &Arc<ExposedThing>,
    ramp: &RampEffect,
    input: &Option<Value>,
) -> Result<Value, Error> {
    let target = input_at(input, &ramp.to)?
        .as_f64()
        .ok_or_else(|| Error::ActionFailed(format!("'{}' is not a number", ramp.to)))?;
    let duration = input_at(input, &ramp.duration_ms)?
        .as_f64()
        .unwrap_or(0.0)
        .max(0.0);
    let ty = schema_type(thing, &ramp.property);
    let start = thing.property(&ramp.property)?.value().as_f64().unwrap_or(0.0);
    let step_ms = ramp.step_ms.max(1) as f64;
    let steps = ((duration / step_ms).ceil() as u64).clamp(1, 10_000);
    let mut tick = tokio::time::interval(Duration::from_millis((duration / steps as f64) as u64 + 1));
    tick.tick().await;
    for step in 1..=steps {
        tick.tick().await;
        let value = start + (target - start) * step as f64 / steps as f64;
        thing
            .set_property(&ramp.property, as_number(value, ty.as_deref()))
            .await?;
    }
    Ok(as_number(target, ty.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_numbers_are_extracted_and_scaled() {
        let dir = std::env::temp_dir().join(format!("wot-behavior-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meminfo");
        std::fs::write(&path, "MemTotal: 2048 kB\nMemFree: 1024 kB\n").unwrap();
        let spec = FileSource {
            path: path.to_string_lossy().into(),
            pattern: Some(r"MemFree:\s+(\d+)".into()),
            scale: 1.0 / 1024.0,
            offset: 0.0,
            poll_ms: 1000,
            decimals: 2,
        };
        let re = regex_lite::Regex::new(spec.pattern.as_deref().unwrap()).unwrap();
        assert_eq!(read_file_number(&spec, Some(&re)).unwrap(), 1.0);
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            read_file_number(&spec, Some(&re)),
            Err(FileSourceError::NoMatch { .. })
        ));
        let whole = FileSource {
            pattern: None,
            ..spec.clone()
        };
        let e = read_file_number(&whole, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: 'garbage' is not a number", whole.path)
        );
    }

    #[test]
    fn references_are_checked() {
        let model = json!({"properties":{"on":{"type":"boolean"},"level":{"type":"integer"}}, "events":{}});
        let mut b = Behaviors::default();
        b.actions.insert(
            "toggle".into(),
            ActionRuntime {
                effect: Effect::Toggle("level".into()),
                emit: None,
            },
        );
        let (pointer, message) = b.check(&model).unwrap_err();
        assert_eq!(pointer, "/actions/toggle/runtime/effect/toggle");
        assert!(message.contains("boolean"), "{message}");
        b.actions["toggle"].effect = Effect::Toggle("on".into());
        b.actions["toggle"].emit = Some("missing".into());
        assert_eq!(b.check(&model).unwrap_err().0, "/actions/toggle/runtime/emit");
    }
}
