//! Discovery over real sockets: `/.well-known/wot` (a thing's TD, or the directory TD), the TDD
//! read API `GET /things` with pagination, and — behind `WOT_MDNS_TESTS=1`, only ever run under
//! `../shared/tools/netns-run` — the mDNS announcements of `wot serve` browsed and resolved with
//! mdns-sd, goodbyes, conflict renaming, the `_wot._udp` records (coap, and coaps followed with a
//! DTLS client), and `wot discover --json`.

use crate::common::{self, mdns_allowed};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wot_runtime::runtime::{Config, Running};

fn problem(body: &Value, status: u16) {
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
}

#[tokio::test]
async fn well_known_with_several_things_is_a_directory_td_that_leads_to_every_td() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let r = client
        .get(format!("{base}/.well-known/wot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/td+json");
    let td: Value = r.json().await.unwrap();
    common::assert_valid_td(&td);
    assert_eq!(td["@type"], "ThingDirectory");
    assert!(
        td["@context"]
            .as_array()
            .unwrap()
            .contains(&json!("https://www.w3.org/2022/wot/discovery"))
    );
    // Follow the `things` form the way a consumer does: resolve against base, expand the
    // template with no variables.
    let form = &td["properties"]["things"]["forms"][0];
    assert_eq!(form["op"], "readproperty");
    let href = form["href"].as_str().unwrap();
    let href = &href[..href.find('{').unwrap_or(href.len())];
    let url = format!("{}{href}", td["base"].as_str().unwrap());
    let listed: Value = common::get_json(&client, &url).await;
    let ids: HashSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    // Every item link leads to a TD with one of those ids.
    for link in td["links"].as_array().unwrap() {
        let url = format!(
            "{}{}",
            td["base"].as_str().unwrap(),
            link["href"].as_str().unwrap()
        );
        let thing: Value = common::get_json(&client, url).await;
        assert!(ids.contains(thing["id"].as_str().unwrap()));
    }
    assert_eq!(td["links"].as_array().unwrap().len(), 3);
    running.stop().await;
}

#[tokio::test]
async fn well_known_with_one_thing_is_that_things_td() {
    let only: Vec<_> = common::bundled_things()
        .into_iter()
        .filter(|h| h.thing.slug == "lamp")
        .collect();
    let running = Running::start(Config::loopback(), only).await.unwrap();
    let client = common::client();
    let base = running.http_url();
    let well_known: Value = common::get_json(&client, format!("{base}/.well-known/wot")).await;
    let direct: Value = common::get_json(&client, format!("{base}/things/lamp")).await;
    assert_eq!(well_known, direct);
    running.stop().await;
}

#[tokio::test]
async fn things_lists_every_td_sorted_by_id_with_pagination_links() {
    let running = common::start().await;
    let client = common::client();
    let base = running.http_url();
    let r = client.get(format!("{base}/things")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/ld+json");
    let canonical = r.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        canonical.starts_with("</things>; rel=\"canonical\"; etag=\""),
        "{canonical}"
    );
    assert!(!canonical.contains("rel=\"next\""));
    let all: Vec<Value> = r.json().await.unwrap();
    let ids: Vec<String> = all.iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ascending by id");
    all.iter().for_each(common::assert_valid_td);
    // Walk the pages by their next links.
    let mut url = format!("{base}/things?limit=1");
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let r = client.get(&url).send().await.unwrap();
        let link = r.headers()["link"].to_str().unwrap().to_owned();
        assert!(
            link.contains(&canonical),
            "every page carries the canonical link: {link}"
        );
        let page: Vec<Value> = r.json().await.unwrap();
        assert_eq!(page.len(), 1);
        paged.push(page[0]["id"].as_str().unwrap().to_owned());
        pages += 1;
        let Some(next) = link.split(", ").find(|l| l.ends_with("rel=\"next\"")) else {
            break;
        };
        let target = &next[1..next.find('>').unwrap()];
        assert_eq!(target, format!("/things?offset={pages}&limit=1"));
        url = format!("{base}{target}");
    }
    assert_eq!(paged, ids);
    let beyond: Vec<Value> = common::get_json(&client, format!("{base}/things?offset=9")).await;
    assert!(beyond.is_empty());
    // The verbose collection format.
    let c: Value = common::get_json(&client, format!("{base}/things?limit=2&format=collection")).await;
    assert_eq!(c["@type"], "ThingCollection");
    assert_eq!(c["total"], 3);
    assert_eq!(c["members"].as_array().unwrap().len(), 2);
    assert_eq!(c["next"], "/things?offset=2&limit=2&format=collection");
    // HEAD answers with the same headers.
    let head = client
        .head(format!("{base}/things?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers()["link"].to_str().unwrap().contains("rel=\"next\""));
    // Bad arguments: 400 problem+json, as the directory TD's form promises.
    for query in ["limit=0", "limit=abc", "offset=-1", "format=xml", "colour=red"] {
        let r = client.get(format!("{base}/things?{query}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        problem(&r.json().await.unwrap(), 400);
    }
    running.stop().await;
}

// ------------------------------------------------------------------ multicast (netns-run only)

/// A `wot serve` process, killed when dropped.
struct Serve {
    child: Child,
    http: String,
    ready: Value,
}

impl Serve {
    /// `wot serve` without CoAP, with `extra` flags.
    fn start(extra: &[&str]) -> Serve {
        Serve::launch(&[&["--no-coap"], extra].concat())
    }

    /// `wot serve` with `args` after the host and HTTP port.
    fn launch(args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wot"))
            .args(["serve", "--host", "0.0.0.0", "--http-port", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wot serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("ready line");
        let ready: Value = serde_json::from_str(&line).expect("the ready line is JSON");
        let http = ready["http"].as_str().unwrap().to_owned();
        Serve { child, http, ready }
    }

    fn port(&self) -> u16 {
        self.http.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM first, so the goodbyes leave before the next test browses.
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    fullname: String,
    port: u16,
    addresses: Vec<std::net::IpAddr>,
    host: String,
    txt: BTreeMap<String, String>,
    subtype: Option<String>,
}

/// Browses `types` with mdns-sd until `done` holds for what was resolved (at most 15 s).
fn browse_until(
    types: &[&str],
    done: impl Fn(&HashMap<String, Seen>) -> bool,
) -> (
    HashMap<String, Seen>,
    mdns_sd::ServiceDaemon,
    Vec<mdns_sd::Receiver<mdns_sd::ServiceEvent>>,
) {
    let daemon = mdns_sd::ServiceDaemon::new().expect("mdns daemon");
    let receivers: Vec<_> = types.iter().map(|t| daemon.browse(t).expect("browse")).collect();
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done(&seen) {
        assert!(
            Instant::now() < deadline,
            "browsing timed out; resolved so far: {seen:#?}"
        );
        for rx in &receivers {
            while let Ok(event) = rx.try_recv() {
                if let mdns_sd::ServiceEvent::ServiceResolved(r) = event {
                    seen.insert(
                        r.fullname.clone(),
                        Seen {
                            fullname: r.fullname.clone(),
                            port: r.port,
                            addresses: r.addresses.iter().map(|a| a.to_ip_addr()).collect(),
                            host: r.host.clone(),
                            subtype: r.sub_ty_domain.clone(),
                            txt: r
                                .txt_properties
                                .iter()
                                .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
                                .collect(),
                        },
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (seen, daemon, receivers)
}

/// Sends broken mDNS packets to the group (inside netns-run only): garbage, a header that
/// promises records it does not carry, a name whose compression pointer points at itself.
fn send_malformed_mdns() {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    let packets: Vec<Vec<u8>> = vec![
        vec![0xff; 3],
        (0..512u32).map(|i| (i * 7919 % 251) as u8).collect(),
        vec![0, 0, 0x84, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0x84, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1],
    ];
    for p in &packets {
        socket
            .send_to(p, "224.0.0.251:5353")
            .expect("multicast send inside the namespace");
    }
}

fn of_type<'a>(seen: &'a HashMap<String, Seen>, ty: &str) -> Vec<&'a Seen> {
    seen.values().filter(|s| s.fullname.ends_with(ty)).collect()
}

#[test]
fn serve_announces_every_thing_under_every_type_and_the_records_lead_to_the_documents() {
    let Some(_one) = mdns_allowed() else { return };
    let mut serve = Serve::start(&[]);
    let slugs: Vec<String> = serve.ready["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert!(slugs.len() > 1);
    let n = slugs.len();
    let port = serve.port();
    let (seen, daemon, _rx) = browse_until(&["_wot._tcp.local.", "_webthing._tcp.local."], |s| {
        let ours = |ty: &str| of_type(s, ty).into_iter().filter(|x| x.port == port).count();
        // n things plus the directory, which is a `_directory` subtype of `_wot._tcp`.
        ours("._wot._tcp.local.") == n + 1 && ours("._webthing._tcp.local.") == n
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = common::client();
    let fetch = |url: String| -> Value {
        rt.block_on(async {
            client
                .get(&url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let mut td_ids = HashSet::new();
    for s in of_type(&seen, "._wot._tcp.local.")
        .into_iter()
        .filter(|s| s.port == port)
    {
        assert!(
            s.host.ends_with(".local."),
            "SRV target is <host>.local.: {}",
            s.host
        );
        assert!(!s.addresses.is_empty(), "A/AAAA records for {}", s.host);
        let keys: HashSet<&str> = s.txt.keys().map(String::as_str).collect();
        let url = format!("http://127.0.0.1:{}{}", s.port, s.txt["td"]);
        if s.txt["type"] == "Directory" {
            assert_eq!(keys, HashSet::from(["td", "type", "scheme"]));
            assert_eq!(s.txt["td"], "/.well-known/wot");
            assert_eq!(fetch(url)["@type"], "ThingDirectory");
            continue;
        }
        assert_eq!(keys, HashSet::from(["td", "type", "scheme", "path"]), "{s:?}");
        assert_eq!(
            (s.txt["type"].as_str(), s.txt["scheme"].as_str()),
            ("Thing", "http")
        );
        assert_eq!(s.txt["path"], s.txt["td"]);
        let td = fetch(url);
        common::assert_valid_td(&td);
        assert!(
            s.fullname.starts_with(td["title"].as_str().unwrap()),
            "{} for {}",
            s.fullname,
            td["title"]
        );
        td_ids.insert(td["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(td_ids.len(), n, "one _wot._tcp instance per thing");
    let mut legacy_ids = HashSet::new();
    for s in of_type(&seen, "._webthing._tcp.local.")
        .into_iter()
        .filter(|s| s.port == port)
    {
        assert_eq!(s.txt.keys().collect::<Vec<_>>(), ["path"]);
        let d = fetch(format!("http://127.0.0.1:{}{}", s.port, s.txt["path"]));
        assert_eq!(d["@context"], "https://webthings.io/schemas");
        legacy_ids.insert(d["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(legacy_ids, td_ids, "the legacy records lead to the same things");
    // The directory is the `_directory` subtype of `_wot._tcp`.
    let directory: Vec<_> = of_type(&seen, "._wot._tcp.local.")
        .into_iter()
        .filter(|s| s.port == port && s.txt["type"] == "Directory")
        .collect();
    assert_eq!(directory.len(), 1);
    assert_eq!(
        directory[0].subtype.as_deref(),
        Some("_directory._sub._wot._tcp.local.")
    );
    // SIGTERM: goodbyes make every instance go away.
    let receivers: Vec<_> = ["_wot._tcp.local.", "_webthing._tcp.local."]
        .iter()
        .map(|t| daemon.browse(t).unwrap())
        .collect();
    serve.terminate();
    let mut removed = HashSet::new();
    let ours: HashSet<String> = seen
        .values()
        .filter(|s| s.port == port)
        .map(|s| s.fullname.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ours.is_subset(&removed) {
        assert!(
            Instant::now() < deadline,
            "not withdrawn: {:?}",
            ours.difference(&removed).collect::<Vec<_>>()
        );
        for rx in &receivers {
            while let Ok(event) = rx.try_recv() {
                if let mdns_sd::ServiceEvent::ServiceRemoved(_, name) = event {
                    removed.insert(name);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = daemon.shutdown();
}

/// The port in a ready-line URL (`coap://127.0.0.1:5683`).
fn port_of(url: &Value) -> u16 {
    url.as_str()
        .and_then(|u| u.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[test]
fn coaps_is_announced_as_a_second_wot_udp_instance_that_a_dtls_client_can_follow() {
    let Some(_one) = mdns_allowed() else { return };
    let mut serve = Serve::launch(&[
        "--coap-port",
        "0",
        "--coaps-port",
        "0",
        "--coap-psk",
        "device-1:device-key",
    ]);
    let n = serve.ready["things"].as_array().unwrap().len();
    let (coap, coaps) = (port_of(&serve.ready["coap"]), port_of(&serve.ready["coaps"]));
    let (seen, daemon, _rx) = browse_until(&["_wot._udp.local."], |s| {
        let on = |port| s.values().filter(|x| x.port == port).count();
        on(coap) == n && on(coaps) == n
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut by_scheme: HashMap<&str, HashSet<String>> = HashMap::new();
    for s in seen.values().filter(|s| s.port == coap || s.port == coaps) {
        let secure = s.port == coaps;
        assert_eq!(
            s.txt.keys().map(String::as_str).collect::<HashSet<_>>(),
            HashSet::from(["td", "type", "scheme"]),
            "{s:?}"
        );
        assert_eq!(s.txt["type"], "Thing");
        assert_eq!(s.txt["scheme"], if secure { "coaps" } else { "coap" }, "{s:?}");
        assert_eq!(
            s.fullname.ends_with(" (coaps)._wot._udp.local."),
            secure,
            "{}",
            s.fullname
        );
        assert!(s.host.ends_with(".local."), "{}", s.host);
        assert!(!s.addresses.is_empty(), "A/AAAA records for {}", s.host);
        if secure {
            // Follow the record as a coaps client would (on loopback, as the tests above): DTLS
            // with the key to the announced port, the TD at `td`, block-wise.
            let at = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
            let td: Value = rt.block_on(async {
                let mut c = crate::coaps::Client::connect(at, "device-1", b"device-key")
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", s.fullname));
                serde_json::from_slice(&c.get_blockwise(&s.txt["td"], 6).await).unwrap()
            });
            assert!(
                s.fullname.starts_with(td["title"].as_str().unwrap()),
                "{} for {}",
                s.fullname,
                td["title"]
            );
            assert!(
                td.to_string().contains(&format!(":{coaps}{}", s.txt["td"])),
                "the TD has coaps forms on the announced port"
            );
        }
        by_scheme
            .entry(if secure { "coaps" } else { "coap" })
            .or_default()
            .insert(s.txt["td"].clone());
    }
    assert_eq!(by_scheme["coaps"].len(), n, "one coaps instance per thing");
    assert_eq!(by_scheme["coaps"], by_scheme["coap"], "for the same things");
    // SIGTERM: the coaps instances say goodbye with the others.
    let watch = daemon.browse("_wot._udp.local.").unwrap();
    serve.terminate();
    let mut removed = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while removed.len() < 2 * n {
        assert!(Instant::now() < deadline, "withdrawn so far: {removed:?}");
        if let Ok(mdns_sd::ServiceEvent::ServiceRemoved(_, name)) =
            watch.recv_timeout(Duration::from_millis(100))
            && seen.get(&name).is_some_and(|s| s.port == coap || s.port == coaps)
        {
            removed.insert(name);
        }
    }
    let _ = daemon.shutdown();
}

#[test]
fn wot_discover_json_finds_every_bundled_thing() {
    let Some(_one) = mdns_allowed() else { return };
    let serve = Serve::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = common::client();
    let tds: Vec<Value> =
        rt.block_on(async { common::get_json(&client, format!("{}/things", serve.http)).await });
    let output = Command::new(env!("CARGO_BIN_EXE_wot"))
        .args(["discover", "--timeout", "3", "--json"])
        .output()
        .expect("wot discover runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    for td in &tds {
        let found = lines
            .iter()
            .find(|l| l["id"] == td["id"])
            .unwrap_or_else(|| panic!("{} not discovered in {lines:#?}", td["title"]));
        assert_eq!(found["title"], td["title"]);
        assert_eq!(found["kind"], "Thing");
        assert_eq!(found["protocols"], json!(["http", "webthing"]));
        let slug = found["url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(
            found["url"],
            format!("http://127.0.0.1:{}/things/{slug}", serve.port())
        );
    }
    assert!(lines.iter().any(|l| l["kind"] == "Directory"));
}

#[test]
fn coap_port_adds_wot_udp_and_withdrawn_things_say_goodbye() {
    let Some(_one) = mdns_allowed() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use wot_runtime::discovery::{Announcer, MdnsConfig, Ports, ThingInfo, plan};
        let things = vec![
            ThingInfo {
                slug: "lamp".into(),
                title: "Udp Lamp".into(),
                id: "urn:uuid:abcdef01-0000".into(),
            },
            ThingInfo {
                slug: "fan".into(),
                title: "Udp Fan".into(),
                id: "urn:uuid:12345678-0000".into(),
            },
        ];
        let ports = Ports {
            http: 18080,
            coap: Some(15683),
            coaps: None,
            tls: false,
        };
        let config = MdnsConfig {
            interfaces: vec![],
            host: Some("udp-test".into()),
            bound: None,
        };
        let announcer = Announcer::start(&config, plan(&things, ports, "udp-test")).unwrap();
        // Malformed packets from others are ignored: the announcer keeps answering after them.
        send_malformed_mdns();
        let (seen, daemon, _) = tokio::task::spawn_blocking(|| {
            browse_until(&["_wot._udp.local."], |s| {
                s.values().filter(|x| x.fullname.starts_with("Udp ")).count() == 2
            })
        })
        .await
        .unwrap();
        for s in seen.values().filter(|x| x.fullname.starts_with("Udp ")) {
            assert_eq!(s.port, 15683);
            assert_eq!(s.host, "udp-test.local.");
            assert_eq!(
                s.txt.keys().map(String::as_str).collect::<HashSet<_>>(),
                HashSet::from(["td", "type", "scheme"])
            );
            assert_eq!(s.txt["scheme"], "coap");
            assert_eq!(s.txt["type"], "Thing");
            assert!(s.txt["td"] == "/things/lamp" || s.txt["td"] == "/things/fan");
        }
        // A thing that goes away (a new plan without it) is withdrawn with goodbyes; the other
        // stays.
        let watch = daemon.browse("_wot._udp.local.").unwrap();
        announcer.sync(plan(&things[..1], ports, "udp-test")).await;
        let removed = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(Instant::now() < deadline, "no goodbye for the fan");
                if let Ok(mdns_sd::ServiceEvent::ServiceRemoved(_, name)) =
                    watch.recv_timeout(Duration::from_millis(200))
                {
                    return name;
                }
            }
        })
        .await
        .unwrap();
        assert!(removed.starts_with("Udp Fan"), "{removed}");
        assert!(announcer.fullnames().iter().all(|n| !n.starts_with("Udp Fan")));
        assert!(announcer.fullnames().iter().any(|n| n.starts_with("Udp Lamp")));
        announcer.stop().await;
        let _ = daemon.shutdown();
    });
}

#[test]
fn a_name_conflict_is_resolved_by_renaming() {
    let Some(_one) = mdns_allowed() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use wot_runtime::discovery::{Announcer, MdnsConfig, Ports, ThingInfo, plan};
        let things = vec![ThingInfo {
            slug: "twin".into(),
            title: "Twin".into(),
            id: "urn:uuid:77777777".into(),
        }];
        let plan = |port| {
            plan(
                &things,
                Ports {
                    http: port,
                    coap: None,
                    coaps: None,
                    tls: false,
                },
                "h",
            )
        };
        let first = Announcer::start(
            &MdnsConfig {
                host: Some("twin-a".into()),
                ..Default::default()
            },
            plan(18081),
        )
        .unwrap();
        let (seen, _d, _r) = tokio::task::spawn_blocking(|| {
            browse_until(&["_wot._tcp.local."], |s| {
                s.values().any(|x| x.fullname.starts_with("Twin-777777"))
            })
        })
        .await
        .unwrap();
        assert_eq!(
            seen.values()
                .filter(|x| x.fullname.starts_with("Twin-777777"))
                .count(),
            1
        );
        // A second responder claims the same instance name: it must rename, not fail.
        let second = Announcer::start(
            &MdnsConfig {
                host: Some("twin-b".into()),
                ..Default::default()
            },
            plan(18082),
        )
        .unwrap();
        let (seen, _d, _r) = tokio::task::spawn_blocking(|| {
            browse_until(&["_wot._tcp.local."], |s| {
                let twins: Vec<_> = s
                    .values()
                    .filter(|x| x.fullname.starts_with("Twin-777777"))
                    .collect();
                twins.len() == 2
                    && twins.iter().any(|t| t.port == 18081)
                    && twins.iter().any(|t| t.port == 18082)
            })
        })
        .await
        .unwrap();
        let names: HashSet<&str> = seen
            .values()
            .filter(|x| x.fullname.starts_with("Twin-777777"))
            .map(|x| x.fullname.as_str())
            .collect();
        assert_eq!(names.len(), 2, "two distinct instance names: {names:?}");
        second.stop().await;
        first.stop().await;
    });
}

/// Follows one service type: instances resolved (full name → TXT `td`) and removed.
struct Watch {
    daemon: mdns_sd::ServiceDaemon,
    rx: mdns_sd::Receiver<mdns_sd::ServiceEvent>,
    port: u16,
    live: HashMap<String, String>,
}

impl Watch {
    fn new(ty: &str, port: u16) -> Watch {
        let daemon = mdns_sd::ServiceDaemon::new().expect("mdns daemon");
        let rx = daemon.browse(ty).expect("browse");
        Watch {
            daemon,
            rx,
            port,
            live: HashMap::new(),
        }
    }

    /// Follows events until `done` holds for the live instances of our port (at most 15 s).
    fn until(&mut self, what: &str, done: impl Fn(&HashMap<String, String>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(&self.live) {
            assert!(
                Instant::now() < deadline,
                "{what}: timed out; live: {:#?}",
                self.live
            );
            while let Ok(event) = self.rx.try_recv() {
                match event {
                    mdns_sd::ServiceEvent::ServiceResolved(r) if r.port == self.port => {
                        let td = r
                            .txt_properties
                            .get_property_val_str("td")
                            .unwrap_or("")
                            .to_owned();
                        self.live.insert(r.fullname.clone(), td);
                    }
                    mdns_sd::ServiceEvent::ServiceRemoved(_, name) => {
                        self.live.remove(&name);
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn announces(live: &HashMap<String, String>, td: &str) -> bool {
    live.values().any(|t| t == td)
}

#[test]
fn hot_reload_announces_added_things_and_withdraws_removed_ones() {
    let Some(_one) = mdns_allowed() else { return };
    let dir = std::env::temp_dir().join(format!("wot-mdns-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("things");
    std::fs::copy(bundled.join("lamp.json"), dir.join("lamp.json")).unwrap();
    let serve = Serve::start(&[dir.to_str().unwrap()]);
    let mut watch = Watch::new("_wot._tcp.local.", serve.port());
    watch.until("the lamp alone", |live| {
        live.len() == 1 && announces(live, "/things/lamp")
    });
    // Added while serving: the thermostat, and with two things the directory.
    std::fs::copy(bundled.join("thermostat.json"), dir.join("thermostat.json")).unwrap();
    watch.until("the thermostat and the directory added", |live| {
        announces(live, "/things/thermostat") && announces(live, "/.well-known/wot")
    });
    // Removed while serving: goodbyes for the lamp and the directory; the thermostat stays.
    std::fs::remove_file(dir.join("lamp.json")).unwrap();
    watch.until("the lamp and the directory withdrawn", |live| {
        live.len() == 1 && announces(live, "/things/thermostat")
    });
    drop(serve);
    let _ = watch.daemon.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
