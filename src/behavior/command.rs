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

/// Parses a command's output.
pub fn parse_output(text: &str, format: OutputFormat) -> Result<Value, String> {
    let trimmed = text.trim();
    match format {
        OutputFormat::Json => serde_json::from_str(trimmed)
            .map_err(|e| format!("output is not JSON ({e}): {}", excerpt(trimmed))),
        OutputFormat::Number => trimmed
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("output is not a number: {}", excerpt(trimmed))),
        OutputFormat::Text => Ok(Value::String(trimmed.to_owned())),
    }
}

fn excerpt(text: &str) -> String {
    let mut s: String = text.chars().take(120).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("'{s}'")
}

/// Runs a command to its end: `stdin` is written to its standard input, its standard output is
/// parsed. Fails on a spawn error, a non-zero exit (with the start of stderr), a timeout (the
/// process is killed) or unparsable output.
pub async fn run(spec: &CommandSpec, stdin: Option<&[u8]>) -> Result<Value, String> {
    let (program, args) = spec.argv.split_first().ok_or("the command's argv is empty")?;
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
        .map_err(|e| format!("cannot run '{program}': {e}"))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that does not read its input is not an error.
        let _ = pipe.write_all(bytes).await;
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_millis(spec.timeout_ms), child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "'{program}' did not finish within {} ms and was killed",
                spec.timeout_ms
            )
        })?
        .map_err(|e| format!("'{program}': {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "'{program}' failed ({}): {}",
            output.status,
            excerpt(stderr.trim())
        ));
    }
    parse_output(&String::from_utf8_lossy(&output.stdout), spec.parse)
}

/// Polls a command and sets the property to its output.
pub async fn poll(thing: Arc<ExposedThing>, name: String, source: CommandSource) {
    let spec = source.command();
    let mut tick = tokio::time::interval(Duration::from_millis(source.poll_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = run(&spec, None)
            .await
            .and_then(|v| thing.update_property(&name, v).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!(thing = %thing.slug, property = %name, "command source: {e}");
        }
    }
}

/// Runs a long-lived command and emits one event per line it prints; restarts it when it ends.
pub async fn lines(thing: Arc<ExposedThing>, event: String, source: LinesSource) {
    loop {
        if let Err(e) = follow(&thing, &event, &source).await {
            tracing::warn!(thing = %thing.slug, %event, "line source: {e}");
        }
        tokio::time::sleep(Duration::from_millis(source.restart_ms.max(10))).await;
    }
}

async fn follow(thing: &ExposedThing, event: &str, source: &LinesSource) -> Result<(), String> {
    let (program, args) = source.argv.split_first().ok_or("the command's argv is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run '{program}': {e}"))?;
    let stdout = child.stdout.take().ok_or("no standard output")?;
    let mut reader = BufReader::new(stdout).lines();
    while let Some(line) = reader.next_line().await.map_err(|e| e.to_string())? {
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
    let status = child.wait().await.map_err(|e| e.to_string())?;
    Err(format!("'{program}' exited ({status})"))
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
        assert!(run(&garbage, None).await.unwrap_err().contains("not JSON"));
        let fails = spec(&["sh", "-c", "echo oops >&2; exit 3"], 5000, OutputFormat::Json);
        let e = run(&fails, None).await.unwrap_err();
        assert!(e.contains("oops") && e.contains('3'), "{e}");
        let hangs = spec(&["sleep", "30"], 100, OutputFormat::Json);
        assert!(run(&hangs, None).await.unwrap_err().contains("killed"));
        let missing = spec(&["/nonexistent/program"], 100, OutputFormat::Json);
        assert!(run(&missing, None).await.unwrap_err().contains("cannot run"));
        assert!(run(&spec(&[], 100, OutputFormat::Json), None).await.is_err());
    }
}
