//! Bridging programs into things: a command's output as a property value, a command as an
//! action (input on stdin, output from stdout), and a long-running command's lines as events.
//!
//! Commands run directly from an argv array, never through a shell; every run has a timeout, is
//! killed when it overruns or when its action is cancelled (kill on drop), and whatever it does
//! (hang, crash, print garbage) ends in an error value, never in a panic of the runtime.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::spec::{CommandSource, CommandSpec, LinesSource, OutputFormat};
use crate::core::ExposedThing;

/// Why a command's output is not a value. `excerpt` is the start of the output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    #[error("output is not JSON ({source}): '{excerpt}'")]
    NotJson {
        source: serde_json::Error,
        excerpt: String,
    },
    #[error("output is not a number: '{excerpt}'")]
    NotANumber { excerpt: String },
}

/// Why a command gave no value. Each message names the program.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("the command's argv is empty")]
    EmptyArgv,
    #[error("cannot run '{program}': {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("'{program}' did not finish within {timeout_ms} ms and was killed")]
    TimedOut { program: String, timeout_ms: u64 },
    /// Waiting for the program or reading its output failed.
    #[error("'{program}': {source}")]
    Io { program: String, source: std::io::Error },
    /// A non-zero exit; `stderr` is the start of what it printed there.
    #[error("'{program}' failed ({status}): '{stderr}'")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// A line source's program ended (it is restarted).
    #[error("'{program}' exited ({status})")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
    },
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Parses a command's output.
pub(crate) fn parse_output(text: &str, format: OutputFormat) -> Result<Value, OutputError> {
    let trimmed = text.trim();
    match format {
        OutputFormat::Json => serde_json::from_str(trimmed).map_err(|source| OutputError::NotJson {
            source,
            excerpt: excerpt(trimmed),
        }),
        OutputFormat::Number => trimmed
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| OutputError::NotANumber {
                excerpt: excerpt(trimmed),
            }),
        OutputFormat::Text => Ok(Value::String(trimmed.to_owned())),
    }
}

/// The first 120 characters, with an ellipsis when there were more (the messages quote it).
fn excerpt(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Runs a command to its end: `stdin` is written to its standard input, its standard output is
/// parsed. Fails on a spawn error, a non-zero exit (with the start of stderr), a timeout (the
/// process is killed) or unparsable output.
pub(crate) async fn run(spec: &CommandSpec, stdin: Option<&[u8]>) -> Result<Value, CommandError> {
    let (program, args) = spec.argv.split_first().ok_or(CommandError::EmptyArgv)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that does not read its input is not an error.
        let _ = pipe.write_all(bytes).await;
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_millis(spec.timeout_ms), child.wait_with_output())
        .await
        .map_err(|_| CommandError::TimedOut {
            program: program.clone(),
            timeout_ms: spec.timeout_ms,
        })?
        .map_err(|source| CommandError::Io {
            program: program.clone(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(CommandError::Failed {
            program: program.clone(),
            status: output.status,
            stderr: excerpt(stderr.trim()),
        });
    }
    Ok(parse_output(
        &String::from_utf8_lossy(&output.stdout),
        spec.parse,
    )?)
}

/// Polls a command and sets the property to its output.
pub(crate) async fn poll(thing: Arc<ExposedThing>, name: String, source: CommandSource) {
    let spec = source.command();
    let mut tick = tokio::time::interval(Duration::from_millis(source.poll_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A failed run and a rejected value are logged alike.
        match run(&spec, None).await {
            Ok(v) => {
                if let Err(e) = thing.update_property(&name, v) {
                    tracing::warn!(thing = %thing.slug, property = %name, "command source: {e}");
                }
            }
            Err(e) => tracing::warn!(thing = %thing.slug, property = %name, "command source: {e}"),
        }
    }
}

/// Runs a long-lived command and emits one event per line it prints; restarts it when it ends.
pub(crate) async fn lines(thing: Arc<ExposedThing>, event: String, source: LinesSource) {
    loop {
        if let Err(e) = follow(&thing, &event, &source).await {
            tracing::warn!(thing = %thing.slug, %event, "line source: {e}");
        }
        tokio::time::sleep(Duration::from_millis(source.restart_ms.max(10))).await;
    }
}

/// Runs the program until it ends; that end (or a failure to run it) is the error.
async fn follow(thing: &ExposedThing, event: &str, source: &LinesSource) -> Result<(), CommandError> {
    let (program, args) = source.argv.split_first().ok_or(CommandError::EmptyArgv)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    let io = |source| CommandError::Io {
        program: program.clone(),
        source,
    };
    // Piped above, so always there; an io error rather than a panic all the same.
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io(std::io::Error::other("no standard output")))?;
    let mut reader = BufReader::new(stdout).lines();
    while let Some(line) = reader.next_line().await.map_err(io)? {
        if line.trim().is_empty() {
            continue;
        }
        match parse_output(&line, source.parse) {
            Ok(data) => {
                if let Err(e) = thing.emit_event(event, Some(data)) {
                    tracing::warn!(thing = %thing.slug, %event, "line ignored: {e}");
                }
            }
            Err(e) => tracing::warn!(thing = %thing.slug, %event, "line ignored: {e}"),
        }
    }
    let status = child.wait().await.map_err(io)?;
    Err(CommandError::Exited {
        program: program.clone(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], timeout_ms: u64, parse: OutputFormat) -> CommandSpec {
        CommandSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_ms,
            parse,
        }
    }

    #[tokio::test]
    async fn runs_parses_and_contains_failures() {
        let cat = spec(&["cat"], 5000, OutputFormat::Json);
        assert_eq!(
            run(&cat, Some(b"{\"a\": 1}")).await.unwrap(),
            serde_json::json!({"a": 1})
        );
        let echo = spec(&["echo", " 41.5 "], 5000, OutputFormat::Number);
        assert_eq!(run(&echo, None).await.unwrap(), serde_json::json!(41.5));
        let garbage = spec(&["echo", "not json"], 5000, OutputFormat::Json);
        let e = run(&garbage, None).await.unwrap_err();
        assert!(
            matches!(e, CommandError::Output(OutputError::NotJson { .. })),
            "{e}"
        );
        assert!(e.to_string().starts_with("output is not JSON ("), "{e}");
        assert!(e.to_string().ends_with("): 'not json'"), "{e}");
        let fails = spec(&["sh", "-c", "echo oops >&2; exit 3"], 5000, OutputFormat::Json);
        let e = run(&fails, None).await.unwrap_err();
        assert!(matches!(e, CommandError::Failed { .. }), "{e}");
        assert_eq!(e.to_string(), "'sh' failed (exit status: 3): 'oops'");
        let hangs = spec(&["sleep", "30"], 100, OutputFormat::Json);
        assert_eq!(
            run(&hangs, None).await.unwrap_err().to_string(),
            "'sleep' did not finish within 100 ms and was killed"
        );
        let missing = spec(&["/nonexistent/program"], 100, OutputFormat::Json);
        let e = run(&missing, None).await.unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }), "{e}");
        assert!(
            e.to_string().starts_with("cannot run '/nonexistent/program': "),
            "{e}"
        );
        assert!(matches!(
            run(&spec(&[], 100, OutputFormat::Json), None).await,
            Err(CommandError::EmptyArgv)
        ));
    }
}
