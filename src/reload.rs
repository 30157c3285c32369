//! Hot reload of `things/`: the directory is scanned every period; a thing file that appears,
//! changes or disappears adds, updates or removes its thing through the [`Host`], without
//! touching the other things. A changed file that no longer loads leaves the running thing as
//! it was (the error is logged with file, pointer and rule). A changed Thing Model reloads every
//! instance file. Updated things keep their id, keep the values of their writable properties
//! that still fit, and get their TD `version.instance` bumped; what happens to the old thing's
//! subscriptions and in-flight requests is the core's hand-over (`core::thing`).
//!
//! A proxy file whose remote cannot be reached (at start or when the file changes) waits: it is
//! tried again on its own, 1 s after the failure and then at doubling intervals up to a minute,
//! until it loads, changes or goes.
//!
//! Scanning and diffing are plain functions; only `watch` sleeps.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::td::definition::{self, ThingDefinition};
use crate::things::Host;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signature {
    modified: Option<SystemTime>,
    len: u64,
}

/// Every `*.json` file of the directory (thing files and models) with its signature.
pub(crate) fn scan(dir: &Path) -> BTreeMap<PathBuf, Signature> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok().filter(|m| m.is_file())?;
            Some((
                p,
                Signature {
                    modified: meta.modified().ok(),
                    len: meta.len(),
                },
            ))
        })
        .collect()
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct Changes {
    pub(crate) added: Vec<PathBuf>,
    pub(crate) changed: Vec<PathBuf>,
    pub(crate) removed: Vec<PathBuf>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

fn is_model(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".tm.json")
}

/// The thing files to add, reload and remove between two scans. A changed model reloads every
/// thing file still present.
pub(crate) fn diff(old: &BTreeMap<PathBuf, Signature>, new: &BTreeMap<PathBuf, Signature>) -> Changes {
    let mut changes = Changes::default();
    let model_changed = old
        .keys()
        .chain(new.keys())
        .filter(|p| is_model(p))
        .any(|p| old.get(p) != new.get(p));
    for (path, sig) in new.iter().filter(|(p, _)| !is_model(p)) {
        match old.get(path) {
            None => changes.added.push(path.clone()),
            Some(before) if before != sig || model_changed => changes.changed.push(path.clone()),
            Some(_) => {}
        }
    }
    changes.removed = old
        .keys()
        .filter(|p| !is_model(p) && !new.contains_key(*p))
        .cloned()
        .collect();
    changes
}

/// `a.b.c` with its patch number raised by `by` ("1.0.0" when there is none).
pub(crate) fn bump_patch(version: Option<&str>, by: u64) -> String {
    let base = version.unwrap_or("1.0.0");
    let mut parts: Vec<String> = base.splitn(3, '.').map(str::to_owned).collect();
    while parts.len() < 3 {
        parts.push("0".into());
    }
    let digits: String = parts[2].chars().take_while(char::is_ascii_digit).collect();
    let patch = digits.parse::<u64>().unwrap_or(0) + by;
    format!("{}.{}.{patch}", parts[0], parts[1])
}

/// Watches `dir` until the task is aborted. The first scan, which later ones are compared with,
/// is taken here, before the task is spawned: a file changed once this returns is reloaded,
/// however late the task first runs.
pub(crate) fn watch(dir: PathBuf, host: Arc<Host>, period: Duration) -> impl Future<Output = ()> + Send {
    let seen = scan(&dir);
    watch_from(dir, seen, host, period)
}

/// Proxy files waiting for their remote: when to try next, and the wait after that.
type Waiting = HashMap<PathBuf, (Instant, Duration)>;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

async fn watch_from(dir: PathBuf, mut seen: BTreeMap<PathBuf, Signature>, host: Arc<Host>, period: Duration) {
    let mut reloads: HashMap<String, u64> = HashMap::new();
    // Proxy files that did not make a thing at start: their remote was away.
    let mut waiting: Waiting = seen
        .keys()
        .filter(|path| {
            definition::load_file(path)
                .is_ok_and(|def| def.proxy.is_some() && host.servient.thing(&def.slug).is_err())
        })
        .map(|path| (path.clone(), (Instant::now() + FIRST_RETRY, FIRST_RETRY)))
        .collect();
    loop {
        tokio::time::sleep(period).await;
        retry_waiting(&host, &mut waiting).await;
        let now = scan(&dir);
        let changes = diff(&seen, &now);
        seen = now;
        if changes.is_empty() {
            continue;
        }
        for path in changes
            .removed
            .iter()
            .chain(&changes.added)
            .chain(&changes.changed)
        {
            waiting.remove(path);
        }
        for path in &changes.removed {
            if let Ok(slug) = definition::slug_of(path) {
                tracing::info!(thing = %slug, "removed: {}", path.display());
                host.remove(&slug);
            }
        }
        for path in changes.added.iter().chain(&changes.changed) {
            let replacing = changes.changed.contains(path);
            let parsed = definition::load_file(path);
            let proxy = parsed.as_ref().is_ok_and(|def| def.proxy.is_some());
            let loaded = match parsed {
                Ok(def) => crate::bridge::resolve(def).await,
                Err(problems) => Err(problems),
            };
            if proxy && loaded.is_err() {
                waiting.insert(path.clone(), (Instant::now() + FIRST_RETRY, FIRST_RETRY));
            }
            match loaded {
                Ok(mut def) => {
                    if replacing {
                        let n = reloads.entry(def.slug.clone()).or_insert(0);
                        *n += 1;
                        bump_version(&mut def, *n);
                    }
                    load(&host, def, replacing);
                }
                Err(problems) => {
                    for p in problems {
                        tracing::error!("not (re)loaded: {p}");
                    }
                }
            }
        }
    }
}

/// Tries the proxy files whose time has come; one that loads stops waiting, one that does not
/// waits twice as long.
async fn retry_waiting(host: &Host, waiting: &mut Waiting) {
    let due: Vec<PathBuf> = waiting
        .iter()
        .filter(|(_, (at, _))| *at <= Instant::now())
        .map(|(path, _)| path.clone())
        .collect();
    for path in due {
        let resolved = match definition::load_file(&path) {
            Ok(def) => crate::bridge::resolve(def).await,
            Err(_) => {
                // No longer a proxy file that parses: its change is the scan's to report.
                waiting.remove(&path);
                continue;
            }
        };
        match resolved {
            Ok(def) => {
                waiting.remove(&path);
                load(host, def, false);
            }
            Err(problems) => {
                if let Some((at, wait)) = waiting.get_mut(&path) {
                    *wait = (*wait * 2).min(LAST_RETRY);
                    *at = Instant::now() + *wait;
                    let why = problems.first().map(ToString::to_string).unwrap_or_default();
                    tracing::debug!("still waiting ({}): {why}", path.display());
                }
            }
        }
    }
}

fn bump_version(def: &mut ThingDefinition, by: u64) {
    let current = def
        .model
        .pointer("/version/instance")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let bumped = bump_patch(current.as_deref(), by);
    match def.model.get_mut("version") {
        Some(Value::Object(v)) => {
            v.insert("instance".into(), json!(bumped));
        }
        _ => {
            if let Some(root) = def.model.as_object_mut() {
                root.insert("version".into(), json!({"instance": bumped}));
            }
        }
    }
}

fn load(host: &Host, def: ThingDefinition, replacing: bool) {
    let slug = def.slug.clone();
    match host.expose(def) {
        Ok(hosted) => {
            tracing::info!(thing = %slug, "{}", if replacing { "updated" } else { "added" });
            // Values that still fit carry over in the core's hand-over.
            host.add(hosted);
        }
        Err(p) => tracing::error!("not (re)loaded: {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(len: u64) -> Signature {
        Signature { modified: None, len }
    }

    #[test]
    fn diff_finds_added_changed_and_removed_files() {
        let old: BTreeMap<PathBuf, Signature> =
            [("a.json", 1), ("b.json", 1), ("c.json", 1), ("m.tm.json", 1)]
                .map(|(p, l)| (p.into(), sig(l)))
                .into();
        let new: BTreeMap<PathBuf, Signature> =
            [("a.json", 1), ("b.json", 2), ("d.json", 1), ("m.tm.json", 1)]
                .map(|(p, l)| (p.into(), sig(l)))
                .into();
        let changes = diff(&old, &new);
        assert_eq!(changes.added, [PathBuf::from("d.json")]);
        assert_eq!(changes.changed, [PathBuf::from("b.json")]);
        assert_eq!(changes.removed, [PathBuf::from("c.json")]);
        // A changed model reloads every instance.
        let mut newer = new.clone();
        newer.insert("m.tm.json".into(), sig(5));
        let changes = diff(&new, &newer);
        assert_eq!(changes.changed.len(), 3);
    }

    #[test]
    fn versions_are_bumped() {
        assert_eq!(bump_patch(None, 1), "1.0.1");
        assert_eq!(bump_patch(Some("2.3.4"), 2), "2.3.6");
        assert_eq!(bump_patch(Some("7"), 1), "7.0.1");
    }
}
