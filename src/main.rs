//! `wot`: the command line. Parses arguments into a runtime `Config` and runs a subcommand;
//! everything else lives in the library.

mod footprint;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use wot_runtime::binding::ws::WsConfig;
use wot_runtime::runtime::{self, Config, Running};
use wot_runtime::td::definition;
use wot_runtime::td::{Origins, Problem, TdPublisher, ThingDefinition, validate};
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
    Serve(Box<ServeArgs>),
    /// Find things on the local network over mDNS/DNS-SD and fetch their TDs.
    Discover {
        /// Seconds to browse.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        /// One JSON object per thing and line, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check thing files, TDs and Thing Models; exit 1 with precise errors.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a Thing's TD (THING: a TD URL over http, https or coap, or a title or id found by
    /// `wot discover`).
    Td {
        /// A TD URL (http, https or coap), or a title or id that `wot discover` finds.
        thing: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a property, or every property when PROP is left out.
    Read {
        /// A TD URL (http, https or coap), or a title or id that `wot discover` finds.
        thing: String,
        /// The property; every property when left out.
        property: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write a property (VALUE is JSON; text that is not JSON is a string), checked against its
    /// schema first.
    Write {
        /// A TD URL (http, https or coap), or a title or id that `wot discover` finds.
        thing: String,
        /// The property.
        property: String,
        /// JSON; text that is not JSON is sent as a string.
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Invoke an action (INPUT is JSON, checked against its schema first) and print its output;
    /// an asynchronous action is followed until it ends.
    Invoke {
        /// A TD URL (http, https or coap), or a title or id that `wot discover` finds.
        thing: String,
        /// The action.
        action: String,
        /// JSON; text that is not JSON is sent as a string.
        input: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print each change of a property until interrupted (or --count changes).
    Observe {
        /// A TD URL (http, https or coap), or a title or id that `wot discover` finds.
        thing: String,
        /// The property.
        property: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        stream: StreamArgs,
    },
    /// Print each event (of EVENT, or of every event) until interrupted (or --count events).
    Events {
        /// A TD URL (http, https or coap), or a title or id that `wot discover` finds.
        thing: String,
        /// The event; every event when left out.
        event: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        stream: StreamArgs,
    },
}

/// What every client verb takes.
#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// Use only forms of this protocol (default: the first usable form of the TD).
    #[arg(long, value_parser = ["http", "coap", "ws"])]
    via: Option<String>,
    /// Bearer token for HTTP and WebSocket.
    #[arg(long)]
    token: Option<String>,
    /// One JSON value per line on stdout, instead of readable text.
    #[arg(long)]
    json: bool,
    /// Seconds one request (or setting up an observation) may take.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    timeout: Duration,
    /// Over CoAP, send and ask for CBOR instead of JSON.
    #[arg(long)]
    cbor: bool,
    /// Trust only the certificates in this PEM file for https (e.g. a `wot serve
    /// --tls-self-signed` server's tls/cert.pem).
    #[arg(long, value_name = "PEM")]
    cacert: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct StreamArgs {
    /// Stop after this many notifications.
    #[arg(long)]
    count: Option<u64>,
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
    /// coaps (CoAP over DTLS 1.2) port; 0 = any free port. coaps runs when there is a
    /// pre-shared key: --coap-psk, --coap-psk-file, or the one derived from --auth.
    #[arg(long, default_value_t = 5684)]
    coaps_port: u16,
    /// A pre-shared key coaps accepts, IDENTITY:KEY (the key is the text after the first ':');
    /// repeat for several. A client with one may do what HTTP with credentials may.
    #[arg(long = "coap-psk", value_name = "IDENTITY:KEY", value_parser = wot_runtime::binding::coap::Psk::parse)]
    coap_psks: Vec<wot_runtime::binding::coap::Psk>,
    /// A file of IDENTITY:KEY lines (blank lines and lines starting with # skipped), as
    /// --coap-psk.
    #[arg(long, value_name = "PATH")]
    coap_psk_file: Option<PathBuf>,
    /// Do not serve CoAP (nor coaps).
    #[arg(long)]
    no_coap: bool,
    /// Do not serve coaps, even under --auth or with keys (plain CoAP stays).
    #[arg(long)]
    no_coaps: bool,
    /// Do not announce over mDNS (also keeps CoAP off the multicast groups).
    #[arg(long)]
    no_mdns: bool,
    /// Do not join the CoAP multicast groups (224.0.1.187, ff02::fd) even with mDNS on.
    #[arg(long)]
    no_coap_multicast: bool,
    /// Public origin for TD hrefs (behind a proxy or NAT), e.g. http://lamp.example:8080.
    // This comment is `--help` text, where a URL stays as typed.
    #[allow(rustdoc::bare_urls)]
    #[arg(long)]
    base_url: Option<String>,
    /// Durable state: property values, thing ids, the self-signed certificate.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Serve HTTPS/WSS with this PEM certificate chain (with --tls-key). When coaps runs and
    /// the key is ECDSA P-256/P-384, coaps also serves certificate-mode DTLS with it.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS/WSS with a self-signed certificate generated once into --state-dir.
    #[arg(long, conflicts_with = "tls_cert", requires = "state_dir")]
    tls_self_signed: bool,
    /// Require credentials on HTTP, SSE and WebSocket: bearer:TOKEN, bearer-file:PATH or
    /// basic:USER:PASSWORD. Secrets are kept hashed and never logged.
    #[arg(long, value_name = "SPEC")]
    auth: Option<String>,
    /// With --auth: what plain coap:// (which carries no credentials) serves to anyone: read,
    /// observe, read,observe or none. Writes and invocations can never be opened there; coaps
    /// sessions with a pre-shared key may do everything.
    #[arg(long, value_name = "KINDS", default_value = "none", value_parser = wot_runtime::binding::coap::Opened::parse)]
    coap_open: wot_runtime::binding::coap::Opened,
    /// Also accept requests whose Host is this name (DNS rebinding protection); repeat for several.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Accept any Host header (behind a reverse proxy or in a container).
    #[arg(long)]
    allow_any_host: bool,
    /// With --state-dir: fsync before acknowledging each (group-committed) write, or at most
    /// once a second.
    #[arg(long, value_enum, default_value_t = wot_runtime::state::Durability::Immediate)]
    durability: wot_runtime::state::Durability,
    /// SSE streams and WebSockets one client address may hold open (then 429).
    #[arg(long, default_value_t = 64)]
    max_subscribers_per_client: usize,
    /// SSE streams and WebSockets open in all (then 503).
    #[arg(long, default_value_t = 4096)]
    max_subscribers: usize,
    /// Open HTTP connections at most; one more is answered 503 with Retry-After and closed.
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = wot_runtime::binding::http::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// WebSockets (/things/{id} and /webthing/{id}): ping a client after this many seconds of
    /// silence, close it (1008) after twice that with nothing heard; 0 switches keepalive off.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = seconds)]
    ws_ping_interval: Duration,
    /// Largest Web Thing Protocol message processed, in bytes; a larger one is answered 413.
    #[arg(long, value_name = "BYTES", default_value_t = WsConfig::default().max_message)]
    ws_max_message: usize,
    /// Bytes that may wait for a Web Thing Protocol client that does not read; past them its
    /// notifications are refused and the socket is closed (1013).
    #[arg(long, value_name = "BYTES", default_value_t = WsConfig::default().max_queued)]
    ws_max_queued: usize,
    /// Announce over mDNS on this interface only (a name such as eth0, or one of its
    /// addresses); repeat for several. Default: every interface.
    #[arg(long = "mdns-interface", value_name = "IFACE")]
    mdns_interfaces: Vec<String>,
    /// Also serve every thing through this MQTT broker: `mqtt://[USER:PASSWORD@]HOST[:1883]`
    /// or `mqtts://...` (TLS). The broker's own access control protects the topics.
    #[arg(long, value_name = "URL")]
    mqtt: Option<String>,
    /// The prefix of every MQTT topic.
    #[arg(long, value_name = "PREFIX", default_value = "wot/")]
    mqtt_prefix: String,
    /// mqtts://: trust only the certificates in this PEM file (default: the platform's roots).
    #[arg(long, value_name = "PEM")]
    mqtt_cacert: Option<PathBuf>,
    /// mqtts://: a client certificate (PEM) to present; with --mqtt-key.
    #[arg(long, value_name = "PEM", requires = "mqtt_key")]
    mqtt_cert: Option<PathBuf>,
    /// The private key (PEM) of --mqtt-cert.
    #[arg(long, value_name = "PEM", requires = "mqtt_cert")]
    mqtt_key: Option<PathBuf>,
    /// The MQTT client id (default: wot-HOSTNAME-PID).
    #[arg(long, value_name = "ID")]
    mqtt_client_id: Option<String>,
}

/// The MQTT configuration of the flags; a file that cannot be read ends `wot serve` (exit 2).
fn mqtt_config(args: &ServeArgs) -> Result<Option<wot_runtime::binding::mqtt::MqttConfig>, String> {
    let Some(broker) = &args.mqtt else {
        return Ok(None);
    };
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let client_auth = match (&args.mqtt_cert, &args.mqtt_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(Some(wot_runtime::binding::mqtt::MqttConfig {
        broker: broker.clone(),
        prefix: args.mqtt_prefix.clone(),
        ca_pem: args.mqtt_cacert.as_ref().map(read).transpose()?,
        client_auth,
        client_id: args.mqtt_client_id.clone(),
        ..Default::default()
    }))
}

/// A non-negative number of seconds (fractions allowed). A clap value parser: clap prints the
/// error after naming the flag and nothing else reads it, so a sentence is the right type.
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

/// Raises the open-file limit for the connections `wot serve` may accept, and says so when even
/// the hard limit is too low for `max_connections`: past it, accepting stalls and connections wait
/// in the backlog instead of being answered 503.
fn open_file_limit(max_connections: usize) {
    use wot_runtime::fd_limit::{RESERVE, raise_to_hard};
    match raise_to_hard() {
        Ok(limit) => {
            let wanted = max_connections as u64 + RESERVE;
            if limit < wanted {
                tracing::warn!(
                    limit,
                    "the open-file limit is below --max-connections ({max_connections}) plus \
                     {RESERVE}: past about {} connections, new ones wait in the backlog; raise \
                     the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections",
                    limit.saturating_sub(RESERVE)
                );
            }
        }
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
}

fn main() -> ExitCode {
    footprint::limit_malloc_arenas();
    footprint::note_files_mapped_at_start();
    let cli = Cli::parse();
    // A client verb's stderr is its one line of diagnosis: libraries' logs (a TLS verifier's
    // ERROR line, say) only when RUST_LOG asks for them.
    let client = !matches!(
        cli.command,
        Command::Serve(_) | Command::Discover { .. } | Command::Validate { .. }
    );
    let default_filter = if client { "off" } else { "info,actix_server=warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    // One TLS crypto provider for the whole process (ring: no C toolchain, no OpenSSL).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Validate { files } => validate_files(&files),
        Command::Discover { timeout, json } => discover(timeout, json),
        Command::Td { thing, client } => client::run(&thing, &client, client::Verb::Td),
        Command::Read {
            thing,
            property,
            client,
        } => client::run(&thing, &client, client::Verb::Read(property)),
        Command::Write {
            thing,
            property,
            value,
            client,
        } => client::run(&thing, &client, client::Verb::Write(property, value)),
        Command::Invoke {
            thing,
            action,
            input,
            client,
        } => client::run(&thing, &client, client::Verb::Invoke(action, input)),
        Command::Observe {
            thing,
            property,
            client,
            stream,
        } => client::run(&thing, &client, client::Verb::Observe(property, stream.count)),
        Command::Events {
            thing,
            event,
            client,
            stream,
        } => client::run(&thing, &client, client::Verb::Events(event, stream.count)),
    }
}

/// The client verbs (`wot td/read/write/invoke/observe/events`) on the library's consumer.
/// stdout carries data only; every failure is one line on stderr and an exit code by kind.
mod client {
    use std::io::Write;
    use std::process::ExitCode;

    use serde_json::Value;
    use wot_runtime::consumer::{
        CoapFormat, ConsumedThing, Consumer, ConsumerConfig, ConsumerError, ConsumerErrorKind, Protocol,
    };

    use super::ClientArgs;

    /// Exit codes, one per kind of failure (2 is also clap's for a usage error).
    pub(super) const REMOTE: u8 = 1;
    pub(super) const BAD_INPUT: u8 = 2;
    pub(super) const UNREACHABLE: u8 = 3;
    pub(super) const NOT_A_TD: u8 = 4;
    pub(super) const NO_FORM: u8 = 5;

    pub(super) enum Verb {
        Td,
        Read(Option<String>),
        Write(String, String),
        Invoke(String, Option<String>),
        Observe(String, Option<u64>),
        Events(Option<String>, Option<u64>),
    }

    fn code(e: &ConsumerError) -> ExitCode {
        ExitCode::from(match e.kind() {
            ConsumerErrorKind::BadInput => BAD_INPUT,
            ConsumerErrorKind::Unreachable => UNREACHABLE,
            ConsumerErrorKind::NotATd => NOT_A_TD,
            ConsumerErrorKind::NoForm => NO_FORM,
            ConsumerErrorKind::Remote => REMOTE,
        })
    }

    pub(super) fn run(thing: &str, args: &ClientArgs, verb: Verb) -> ExitCode {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return super::fail(format!("cannot start the async runtime: {e}"), ExitCode::FAILURE),
        };
        let roots_pem = match &args.cacert {
            Some(path) => match std::fs::read(path) {
                Ok(pem) => vec![pem],
                Err(e) => {
                    return super::fail(format!("wot: {}: {e}", path.display()), ExitCode::from(BAD_INPUT));
                }
            },
            None => Vec::new(),
        };
        let config = ConsumerConfig {
            roots_pem,
            timeout: args.timeout,
            token: args.token.clone(),
            via: args.via.as_deref().and_then(|v| v.parse::<Protocol>().ok()),
            coap_format: if args.cbor {
                CoapFormat::Cbor
            } else {
                CoapFormat::Json
            },
        };
        let json = args.json;
        rt.block_on(async move {
            let result = async {
                let consumer = Consumer::new(config)?;
                let url = resolve(thing, &consumer).await?;
                let thing = consumer.fetch(&url).await?;
                perform(&thing, verb, json).await
            }
            .await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(Failure::Consumer(e)) => super::fail(format!("wot: {e}"), code(&e)),
                Err(Failure::Other(why, exit)) => super::fail(format!("wot: {why}"), ExitCode::from(exit)),
            }
        })
    }

    enum Failure {
        Consumer(ConsumerError),
        Other(String, u8),
    }

    impl From<ConsumerError> for Failure {
        fn from(e: ConsumerError) -> Self {
            Failure::Consumer(e)
        }
    }

    /// A URL as given; anything else is a title or id looked up with `wot discover`'s browser.
    async fn resolve(thing: &str, consumer: &Consumer) -> Result<String, Failure> {
        if thing.contains("://") {
            return Ok(thing.to_owned());
        }
        let browse = consumer.config().timeout.min(std::time::Duration::from_secs(3));
        let found = wot_runtime::discovery::discover(browse)
            .await
            .map_err(|e| Failure::Other(format!("cannot browse for {thing:?}: {e}"), UNREACHABLE))?;
        let matches: Vec<_> = found
            .iter()
            .filter(|d| d.title.eq_ignore_ascii_case(thing) || d.id.as_deref() == Some(thing))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.url.clone()),
            [] => Err(Failure::Other(
                format!("no Thing titled or identified {thing:?} was found on the network"),
                UNREACHABLE,
            )),
            many => Err(Failure::Other(
                format!(
                    "{} Things answer to {thing:?}: {}; give a URL",
                    many.len(),
                    many.iter().map(|d| d.url.as_str()).collect::<Vec<_>>().join(", ")
                ),
                BAD_INPUT,
            )),
        }
    }

    /// A value typed on the command line: JSON, or else the text as a JSON string.
    fn value_of(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }

    fn out(line: &str) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::Other(format!("cannot write to stdout: {e}"), 1))
    }

    /// A value as printed: compact JSON with --json; otherwise strings bare and the rest pretty.
    fn shown(value: &Value, json: bool) -> String {
        match value {
            _ if json => value.to_string(),
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
        }
    }

    async fn perform(thing: &ConsumedThing, verb: Verb, json: bool) -> Result<(), Failure> {
        match verb {
            Verb::Td => out(&shown(thing.td(), json)),
            Verb::Read(Some(property)) => out(&shown(&thing.read_property(&property).await?, json)),
            Verb::Read(None) => {
                let values = thing.read_all_properties().await?;
                if json {
                    return out(&Value::Object(values).to_string());
                }
                for (name, value) in values {
                    out(&format!("{name}: {value}"))?;
                }
                Ok(())
            }
            Verb::Write(property, value) => Ok(thing.write_property(&property, value_of(&value)).await?),
            Verb::Invoke(action, input) => {
                let output = thing
                    .invoke_action(&action, input.as_deref().map(value_of))
                    .await?;
                match output {
                    Some(output) => out(&shown(&output, json)),
                    None if json => out("null"),
                    None => Ok(()),
                }
            }
            Verb::Observe(property, count) => {
                let observation = thing.observe_property(&property).await?;
                follow(observation, count, json).await
            }
            Verb::Events(event, count) => {
                let observation = thing.subscribe_event(event.as_deref()).await?;
                follow(observation, count, json).await
            }
        }
    }

    /// Prints notices as they come: `{"name": .., "value": ..}` per line with --json, else
    /// `name: value`.
    async fn follow(
        mut observation: wot_runtime::consumer::Observation,
        count: Option<u64>,
        json: bool,
    ) -> Result<(), Failure> {
        let mut seen = 0;
        while count.is_none_or(|c| seen < c) {
            let Some(notice) = observation.next().await else {
                return Ok(());
            };
            let notice = notice?;
            if json {
                out(&serde_json::json!({"name": notice.name, "value": notice.value}).to_string())?;
            } else {
                out(&format!("{}: {}", notice.name, notice.value))?;
            }
            seen += 1;
        }
        // The process exits next: let the cancellation (Observe 1, unobserve) go out first.
        observation.close().await;
        Ok(())
    }
}

/// `wot serve`: the configuration, the things and the state store first (a failure is printed
/// and ends it), then the runtime until SIGINT or SIGTERM.
fn serve(args: ServeArgs) -> ExitCode {
    open_file_limit(args.max_connections);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}"), ExitCode::FAILURE),
    };
    let (config, hosted, ids) = match prepare(&args, &rt) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let running = match Running::start_with_ids(config, hosted, ids).await {
            Ok(r) => r,
            Err(e) => return fail(e, ExitCode::FAILURE),
        };
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", running.ready_line());
            let _ = out.flush();
        }
        footprint::give_back_start_up_memory();
        runtime::wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        ExitCode::SUCCESS
    })
}

/// Prints why `wot` stops, and returns its exit code.
fn fail(why: impl std::fmt::Display, code: ExitCode) -> ExitCode {
    eprintln!("{why}");
    code
}

/// What `wot serve` needs before the runtime starts, in this order: the configuration, the
/// thing files (proxy files with their remote TDs, fetched at once on `rt`), the state store,
/// and the things built from the files (a file that does not build is logged and skipped; none
/// at all is an error).
fn prepare(
    args: &ServeArgs,
    rt: &tokio::runtime::Runtime,
) -> Result<(Config, Vec<Hosted>, IdStore), ExitCode> {
    let config = serve_config(args)?;
    let things_dir = match &args.things_dir {
        Some(dir) => Some(dir.clone()),
        None if Path::new("things").is_dir() => Some(PathBuf::from("things")),
        None => None,
    };
    let definitions = match &things_dir {
        Some(dir) => definition::load_dir(dir)
            .map_err(|e| fail(format!("{}: {e}", dir.display()), ExitCode::FAILURE))?,
        None => {
            tracing::info!("no ./things directory: serving the bundled things");
            things::bundled()
        }
    };
    let definitions = rt.block_on(futures_util::future::join_all(
        definitions
            .into_iter()
            .map(|d| async move { wot_runtime::bridge::resolve(d?).await }),
    ));
    let store = match &args.state_dir {
        Some(dir) => Some(
            wot_runtime::state::Store::open(dir, args.durability)
                .map_err(|e| fail(format!("state store: {e}"), ExitCode::FAILURE))?,
        ),
        None => None,
    };
    let mut ids = IdStore::new(store);
    let hosted = expose_all(definitions, &mut ids);
    if hosted.is_empty() {
        return Err(fail("no thing to serve", ExitCode::FAILURE));
    }
    let config = Config {
        watch_dir: things_dir,
        ..config
    };
    Ok((config, hosted, ids))
}

/// The runtime configuration the flags ask for; a `--base-url` that is no HTTP(S) URL, or TLS
/// and credentials that cannot be set up, end `wot serve` with exit code 2.
fn serve_config(args: &ServeArgs) -> Result<Config, ExitCode> {
    if let Some(base) = &args.base_url
        && !(base.starts_with("http://") || base.starts_with("https://"))
    {
        return Err(fail(
            "--base-url must start with http:// or https://",
            ExitCode::from(2),
        ));
    }
    let (security, tls) = security(args).map_err(|e| fail(e, ExitCode::from(2)))?;
    // coaps' certificate mode: the HTTPS certificate (coap::bind checks the key type).
    let certificate = tls.map(|tls| wot_runtime::binding::coap::ServerCertificate {
        certificate: tls.certificate.to_vec(),
        private_key: tls.private_key.secret_der().to_vec(),
    });
    let mut keys = args.coap_psks.clone();
    if let Some(path) = &args.coap_psk_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("{}: {e}", path.display()), ExitCode::from(2)))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let psk = wot_runtime::binding::coap::Psk::parse(line)
                .map_err(|e| fail(format!("{}:{}: {e}", path.display(), n + 1), ExitCode::from(2)))?;
            keys.push(psk);
        }
    }
    let mqtt = mqtt_config(args).map_err(|e| fail(e, ExitCode::from(2)))?;
    Ok(Config {
        security,
        mqtt,
        host: args.host,
        http_port: args.http_port,
        coap_port: args.coap_port,
        coaps_port: args.coaps_port,
        no_coaps: args.no_coaps,
        no_coap: args.no_coap,
        no_mdns: args.no_mdns,
        no_coap_multicast: args.no_coap_multicast,
        base_url: args.base_url.clone(),
        body_limit: args.body_limit,
        watch_dir: None,
        mdns_interfaces: args.mdns_interfaces.clone(),
        subscribers: wot_runtime::runtime::SubscriberLimits {
            per_client: args.max_subscribers_per_client,
            total: args.max_subscribers,
        },
        http_timeouts: wot_runtime::binding::http::Timeouts {
            max_connections: args.max_connections,
            ..Default::default()
        },
        coap: wot_runtime::binding::coap::CoapConfig {
            open: args.coap_open,
            dtls: wot_runtime::binding::coap::DtlsConfig {
                keys,
                certificate,
                ..Default::default()
            },
            ..Default::default()
        },
        ws: WsConfig {
            ping_interval: args.ws_ping_interval,
            max_message: args.ws_max_message,
            max_queued: args.ws_max_queued,
            ..WsConfig::default()
        },
        ..Config::default()
    })
}

/// Builds the thing of every definition that parsed; each problem is logged and its thing
/// skipped.
fn expose_all(definitions: Vec<Result<ThingDefinition, Vec<Problem>>>, ids: &mut IdStore) -> Vec<Hosted> {
    let mut hosted = Vec::new();
    for definition in definitions {
        match definition.and_then(|d| things::expose(d, ids).map_err(|p| vec![p])) {
            Ok(h) => hosted.push(h),
            Err(problems) => {
                for p in problems {
                    tracing::error!("skipping thing: {p}");
                }
            }
        }
    }
    hosted
}

fn discover(timeout: f64, json: bool) -> ExitCode {
    if !(timeout.is_finite() && (0.1..=3600.0).contains(&timeout)) {
        eprintln!("--timeout takes seconds between 0.1 and 3600");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let found = rt.block_on(wot_runtime::discovery::discover(
        std::time::Duration::from_secs_f64(timeout),
    ));
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        for thing in &found {
            let _ = writeln!(out, "{}", serde_json::to_string(thing).unwrap_or_default());
        }
    } else {
        let _ = writeln!(out, "{:<28} {:<46} {:<44} PROTOCOLS", "TITLE", "ID", "URL");
        for t in &found {
            let _ = writeln!(
                out,
                "{:<28} {:<46} {:<44} {}",
                t.title,
                t.id.as_deref().unwrap_or("-"),
                t.url,
                t.protocols.join(",")
            );
        }
        if found.is_empty() {
            let _ = writeln!(out, "(nothing found in {timeout} s)");
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// Why `--tls-*` or `--auth` could not be applied (printed, then exit code 2).
#[derive(Debug, thiserror::Error)]
enum SecurityArgsError {
    #[error(transparent)]
    Tls(#[from] wot_runtime::security::TlsError),
    #[error(transparent)]
    Auth(#[from] wot_runtime::security::AuthError),
}

/// TLS, credentials and the Host allow-list from the command line; the TLS certificate and key
/// too, for coaps.
fn security(
    args: &ServeArgs,
) -> Result<
    (
        wot_runtime::binding::http::Security,
        Option<wot_runtime::security::Tls>,
    ),
    SecurityArgsError,
> {
    use wot_runtime::security::{self as sec, Auth, HostPolicy};
    let tls = match (
        &args.tls_cert,
        &args.tls_key,
        args.tls_self_signed,
        &args.state_dir,
    ) {
        (Some(cert), Some(key), _, _) => Some(sec::load(cert, key)?),
        (_, _, true, Some(dir)) => Some(sec::self_signed(dir, sec::local_names())?),
        _ => None,
    };
    if let Some(tls) = &tls {
        tracing::info!(fingerprint = %tls.fingerprint, "TLS certificate SHA-256");
    }
    let auth = args
        .auth
        .as_deref()
        .map(Auth::parse)
        .transpose()?
        .map(std::sync::Arc::new);
    let hosts = if args.allow_any_host {
        HostPolicy::any()
    } else {
        HostPolicy::local(&args.allow_hosts, args.base_url.as_deref())
    };
    let security = wot_runtime::binding::http::Security {
        tls: tls.as_ref().map(|t| t.config.clone()),
        auth,
        hosts,
    };
    Ok((security, tls))
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

/// A TD states its security; a thing file never does (the runtime writes it), though it may
/// carry an `@context` for its `@type` terms.
fn is_full_td(doc: &Value) -> bool {
    doc.get("securityDefinitions").is_some() || doc.get("security").is_some()
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
    let mut definition = definition::parse(file, &text)?;
    let proxy = definition.proxy.is_some();
    if proxy {
        // A proxy file is checked as the bridge would serve it: its remote TD is fetched.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| vec![Problem::new(file, "", "io", e.to_string())])?;
        definition = rt.block_on(wot_runtime::bridge::resolve(definition))?;
    }
    let mut ids = IdStore::new(None);
    let hosted = things::expose(definition, &mut ids).map_err(|p| vec![p])?;
    let publisher = TdPublisher::new(vec![std::sync::Arc::new(wot_runtime::binding::http::HttpForms)]);
    let origins = Origins {
        http: Some("http://localhost:8080".into()),
        coap: None,
        coaps: None,
    };
    let td = publisher
        .build(&hosted.thing, &origins)
        .map_err(|e| vec![Problem::new(file, "", "td", e.to_string())])?;
    let violations = validate::td_violations(&td);
    if violations.is_empty() {
        Ok(if proxy {
            "proxy definition, its remote TD fetched"
        } else {
            "thing definition"
        })
    } else {
        Err(violations
            .into_iter()
            .map(|v| Problem::from_violation(file, v))
            .collect())
    }
}
