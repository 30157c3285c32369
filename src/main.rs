//! `wot`: the command line. Parses arguments into a runtime `Config` and runs a subcommand;
//! everything else lives in the library.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;

use wot_runtime::runtime::{self, Config, Running};
use wot_runtime::td::definition::{self, Problem};
use wot_runtime::td::{Origins, TdPublisher, validate};
use wot_runtime::things::{self, Hosted, IdStore};

#[derive(Parser)]
#[command(name = "wot", version, about = "A W3C Web of Things device runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every thing of THINGS_DIR (default ./things, or the bundled things if it is absent).
    Serve(ServeArgs),
    /// Check thing files, TDs and Thing Models; exit 1 with precise errors.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    things_dir: Option<PathBuf>,
    /// Bind address.
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// HTTP port; 0 = any free port.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// CoAP port; 0 = any free port.
    #[arg(long, default_value_t = 5683)]
    coap_port: u16,
    /// Do not serve CoAP.
    #[arg(long)]
    no_coap: bool,
    /// Do not announce over mDNS (also keeps CoAP off the multicast groups).
    #[arg(long)]
    no_mdns: bool,
    /// Do not join the CoAP multicast groups (224.0.1.187, ff02::fd) even with mDNS on.
    #[arg(long)]
    no_coap_multicast: bool,
    /// Public origin for TD hrefs (behind a proxy or NAT), e.g. http://lamp.example:8080.
    #[arg(long)]
    base_url: Option<String>,
    /// Durable state: thing ids (and later property values and certificates).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = wot_runtime::binding::http::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Validate { files } => validate_files(&files),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    if let Some(base) = &args.base_url
        && !(base.starts_with("http://") || base.starts_with("https://"))
    {
        eprintln!("--base-url must start with http:// or https://");
        return ExitCode::from(2);
    }
    let config = Config {
        host: args.host,
        http_port: args.http_port,
        coap_port: args.coap_port,
        no_coap: args.no_coap,
        no_mdns: args.no_mdns,
        no_coap_multicast: args.no_coap_multicast,
        base_url: args.base_url,
        state_dir: args.state_dir,
        body_limit: args.body_limit,
        ..Config::default()
    };
    let definitions = match &args.things_dir {
        Some(dir) => definition::load_dir(dir).map_err(|e| format!("{}: {e}", dir.display())),
        None if Path::new("things").is_dir() => {
            definition::load_dir(Path::new("things")).map_err(|e| format!("things: {e}"))
        }
        None => {
            tracing::info!("no ./things directory: serving the bundled things");
            Ok(things::bundled())
        }
    };
    let definitions = match definitions {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ids = match IdStore::open(config.state_dir.as_deref()) {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("state directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut hosted: Vec<Hosted> = Vec::new();
    for definition in definitions {
        match definition.and_then(|d| things::expose(d, &mut ids).map_err(|p| vec![p])) {
            Ok(h) => hosted.push(h),
            Err(problems) => {
                for p in problems {
                    tracing::error!("skipping thing: {p}");
                }
            }
        }
    }
    drop(ids);
    if hosted.is_empty() {
        eprintln!("no thing to serve");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let running = match Running::start(config, hosted).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", running.ready_line());
            let _ = out.flush();
        }
        runtime::wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        ExitCode::SUCCESS
    })
}

fn validate_files(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match validate_one(file) {
            Ok(kind) => println!("{}: ok ({kind})", file.display()),
            Err(problems) => {
                failed = true;
                for p in problems {
                    println!("{p}");
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn is_thing_model(doc: &Value) -> bool {
    match doc.get("@type") {
        Some(Value::String(t)) => t == "tm:ThingModel",
        Some(Value::Array(a)) => a.iter().any(|t| t == "tm:ThingModel"),
        _ => false,
    }
}

fn is_full_td(doc: &Value) -> bool {
    doc.get("securityDefinitions").is_some() || doc.get("@context").is_some()
}

/// Validates one file: a Thing Model, a complete TD, or a thing definition of `things/`.
fn validate_one(file: &Path) -> Result<&'static str, Vec<Problem>> {
    let text =
        std::fs::read_to_string(file).map_err(|e| vec![Problem::new(file, "", "io", e.to_string())])?;
    if let Ok(doc) = serde_json::from_str::<Value>(&text) {
        let check = |violations: Vec<wot_runtime::core::SchemaViolation>, kind| {
            if violations.is_empty() {
                Ok(kind)
            } else {
                Err(violations
                    .into_iter()
                    .map(|v| Problem::from_violation(file, v))
                    .collect())
            }
        };
        if is_thing_model(&doc) {
            return check(validate::tm_violations(&doc), "Thing Model");
        }
        if is_full_td(&doc) {
            return check(validate::td_violations(&doc), "Thing Description");
        }
    }
    let definition = definition::parse(file, &text)?;
    let mut ids = IdStore::open(None).map_err(|e| vec![Problem::new(file, "", "io", e.to_string())])?;
    let hosted = things::expose(definition, &mut ids).map_err(|p| vec![p])?;
    let publisher = TdPublisher::new(vec![std::sync::Arc::new(wot_runtime::binding::http::HttpForms)]);
    let origins = Origins {
        http: Some("http://localhost:8080".into()),
        coap: None,
    };
    let td = publisher
        .build(&hosted.thing, &origins)
        .map_err(|e| vec![Problem::new(file, "", "td", e)])?;
    let violations = validate::td_violations(&td);
    if violations.is_empty() {
        Ok("thing definition")
    } else {
        Err(violations
            .into_iter()
            .map(|v| Problem::from_violation(file, v))
            .collect())
    }
}
