//! The runtime-only part of a thing file: where each property's value comes from, what each
//! action does, when each event fires. Plain data, deserialised with unknown keys refused so a
//! typo is an error that names its place. It never appears in a served TD.

use serde::Deserialize;

/// The `runtime` object of a property.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PropertyRuntime {
    #[serde(default)]
    pub(crate) source: PropertySource,
}

/// Where a property's value comes from.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) enum PropertySource {
    /// Written by clients (or actions); starts at the schema's `default`.
    #[default]
    Stored,
    /// A simulated quantity that moves toward another property's value each period.
    Drift(Drift),
    /// A reading of a file (such as /proc/loadavg), polled.
    File(FileSource),
    /// A simulated signal: random walk, sine or steps.
    Simulated(Simulated),
    /// The output of a command, run every poll interval.
    Command(CommandSource),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Simulated {
    pub(crate) kind: SimulatedKind,
    #[serde(default)]
    pub(crate) min: f64,
    #[serde(default = "hundred")]
    pub(crate) max: f64,
    /// Time between values.
    #[serde(default = "default_period")]
    pub(crate) period_ms: u64,
    /// Largest change per period of a random walk.
    #[serde(default = "one")]
    pub(crate) step: f64,
    /// Length of one sine cycle.
    #[serde(default = "default_cycle")]
    pub(crate) cycle_ms: u64,
    /// The values `steps` cycles through (any JSON that fits the schema).
    #[serde(default)]
    pub(crate) values: Vec<serde_json::Value>,
    #[serde(default = "default_decimals")]
    pub(crate) decimals: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) enum SimulatedKind {
    RandomWalk,
    Sine,
    Steps,
}

/// A program and its arguments, run directly (never through a shell).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CommandSpec {
    pub(crate) argv: Vec<String>,
    /// Killed after this long.
    #[serde(default = "default_timeout")]
    pub(crate) timeout_ms: u64,
    /// How its standard output is read.
    #[serde(default)]
    pub(crate) parse: OutputFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) enum OutputFormat {
    /// A JSON document.
    #[default]
    Json,
    /// A number (surrounding whitespace ignored).
    Number,
    /// The trimmed text, as a JSON string.
    Text,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CommandSource {
    pub(crate) argv: Vec<String>,
    #[serde(default = "default_timeout")]
    pub(crate) timeout_ms: u64,
    #[serde(default)]
    pub(crate) parse: OutputFormat,
    #[serde(default = "default_period")]
    pub(crate) poll_ms: u64,
}

impl CommandSource {
    pub(crate) fn command(&self) -> CommandSpec {
        CommandSpec {
            argv: self.argv.clone(),
            timeout_ms: self.timeout_ms,
            parse: self.parse,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Drift {
    /// Name of the property whose value this one moves toward.
    pub(crate) toward: String,
    /// Fraction of the remaining distance covered each period (0..=1).
    #[serde(default = "default_rate")]
    pub(crate) rate: f64,
    /// Amplitude of uniform noise added each period.
    #[serde(default)]
    pub(crate) noise: f64,
    #[serde(default = "default_period")]
    pub(crate) period_ms: u64,
    /// Decimal places kept.
    #[serde(default = "default_decimals")]
    pub(crate) decimals: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FileSource {
    pub(crate) path: String,
    /// A regular expression whose first capture group is the number; without it, the whole
    /// trimmed file content is parsed.
    #[serde(default)]
    pub(crate) pattern: Option<String>,
    #[serde(default = "one")]
    pub(crate) scale: f64,
    #[serde(default)]
    pub(crate) offset: f64,
    #[serde(default = "default_period")]
    pub(crate) poll_ms: u64,
    #[serde(default = "default_decimals")]
    pub(crate) decimals: u32,
}

/// The `runtime` object of an action.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ActionRuntime {
    pub(crate) effect: Effect,
    /// An event emitted when the effect completes, with the action's output as data.
    #[serde(default)]
    pub(crate) emit: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) enum Effect {
    /// Flip a boolean property; the output is the new value.
    Toggle(String),
    /// Set a property to the input (or to the input member a JSON pointer names).
    Set(SetEffect),
    /// Move a numeric property to a target over a duration, in steps; the output is the end value.
    Ramp(RampEffect),
    /// Run a command with the input as JSON on standard input; its output (parsed per
    /// `parse`, checked against the output schema) is the action's output. Cancelling the
    /// action kills the command.
    Command(CommandSpec),
    /// Do nothing but emit (an action that only fires its event).
    Nothing,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SetEffect {
    pub(crate) property: String,
    /// JSON pointer into the input; "" (the default) is the whole input.
    #[serde(default)]
    pub(crate) from: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RampEffect {
    pub(crate) property: String,
    /// JSON pointer to the target value in the input.
    pub(crate) to: String,
    /// JSON pointer to the duration in milliseconds in the input.
    pub(crate) duration_ms: String,
    /// Time between steps; each step is one property change (and one notification).
    #[serde(default = "default_step")]
    pub(crate) step_ms: u64,
}

/// The `runtime` object of an event: what makes it fire (besides actions that `emit` it).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) enum EventRuntime {
    /// A property crossing a threshold.
    When(Condition),
    /// Each line a long-running command prints (parsed per `parse`) is one event; the
    /// command is restarted when it exits.
    Lines(LinesSource),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LinesSource {
    pub(crate) argv: Vec<String>,
    #[serde(default)]
    pub(crate) parse: OutputFormat,
    /// Wait before restarting a command that exited.
    #[serde(default = "default_restart")]
    pub(crate) restart_ms: u64,
}

/// Fires when a numeric property crosses a threshold; re-arms once it is back past the
/// threshold by `hysteresis`. The event data is the property's value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Condition {
    pub(crate) property: String,
    #[serde(default)]
    pub(crate) above: Option<f64>,
    #[serde(default)]
    pub(crate) below: Option<f64>,
    #[serde(default)]
    pub(crate) hysteresis: f64,
}

fn default_rate() -> f64 {
    0.1
}
fn default_period() -> u64 {
    1000
}
fn default_decimals() -> u32 {
    2
}
fn default_step() -> u64 {
    100
}
fn one() -> f64 {
    1.0
}
fn hundred() -> f64 {
    100.0
}
fn default_cycle() -> u64 {
    60_000
}
fn default_timeout() -> u64 {
    10_000
}
fn default_restart() -> u64 {
    5_000
}
