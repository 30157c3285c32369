//! The link from one proxied thing to its remote: the [`Remote`] its reads and writes go to,
//! the handlers that forward its actions, and the task that keeps it in step (one upstream
//! observation per observable property and per event, shared by every local observer through
//! the thing's own event hub; a probe of the remote TD every `probe`; reconnection with
//! backoff (250 ms doubling up to `probe`) while the remote is away, during which requests are refused with 503 at once).
//!
//! It speaks to the remote only through the consumer and to the thing only through the core's
//! public methods; it knows no binding.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::behavior::Driver;
use crate::consumer::{ConsumedThing, Consumer, ConsumerError, ConsumerErrorKind, Notice, Observation};
use crate::core::{ActionHandler, Error, ExposedThing, Remote, RemoteFuture};
use crate::td::Proxy;

/// The first wait before reconnecting, doubled after each failure up to the probe interval: a
/// remote that comes back is found as soon as a reachable one would be checked.
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Where the link stands.
#[derive(Debug, Clone, PartialEq)]
enum Link {
    /// Connected: requests go through.
    Up,
    /// A request just failed to reach the remote: the task probes now; requests still go.
    Suspect,
    /// The remote is away (why): requests are refused until a reconnection succeeds.
    Away(String),
}

/// One proxied thing's remote (cheap to clone: every clone is the same link).
#[derive(Debug, Clone)]
pub(crate) struct Upstream(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    proxy: Proxy,
    consumer: Consumer,
    /// The remote as last fetched: its forms may change when it restarts.
    remote: RwLock<Arc<ConsumedThing>>,
    link: watch::Sender<Link>,
}

impl Upstream {
    /// A link to a remote whose TD was just fetched.
    pub(crate) fn new(proxy: Proxy, consumer: Consumer, remote: ConsumedThing) -> Self {
        Upstream(Arc::new(Shared {
            proxy,
            consumer,
            remote: RwLock::new(Arc::new(remote)),
            link: watch::channel(Link::Up).0,
        }))
    }

    fn consumed(&self) -> Arc<ConsumedThing> {
        self.0.remote.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn url(&self) -> &str {
        &self.0.proxy.td
    }

    /// The core error of a consumer failure; one that did not reach the remote makes the link
    /// suspect, so that the task checks it now instead of at the next probe.
    fn failed(&self, e: ConsumerError) -> Error {
        match (e.kind(), &e) {
            (_, ConsumerError::Schema { violation, .. }) => Error::Schema(violation.clone()),
            (_, ConsumerError::ActionFailed { .. }) => Error::ActionFailed(format!("on the remote: {e}")),
            (ConsumerErrorKind::Unreachable, ConsumerError::Timeout { .. }) => {
                self.suspect();
                Error::UpstreamTimeout(e.to_string())
            }
            (ConsumerErrorKind::Unreachable, _) => {
                self.suspect();
                Error::Upstream(e.to_string())
            }
            _ => Error::Upstream(e.to_string()),
        }
    }

    fn suspect(&self) {
        self.0.link.send_if_modified(|link| {
            let up = *link == Link::Up;
            if up {
                *link = Link::Suspect;
            }
            up
        });
    }

    fn set(&self, next: Link) {
        let before = self.0.link.send_replace(next.clone());
        match (&before, &next) {
            (Link::Away(_), Link::Up) => tracing::info!(remote = %self.url(), "the remote is back"),
            (Link::Up | Link::Suspect, Link::Away(why)) => {
                tracing::warn!(remote = %self.url(), "the remote is away ({why}); reconnecting")
            }
            _ => {}
        }
    }

    /// Keeps `thing` in step with the remote until aborted.
    async fn run(self, thing: Arc<ExposedThing>) {
        let ceiling = self.0.proxy.probe.max(BACKOFF_MIN);
        let mut backoff = BACKOFF_MIN;
        // The TD was fetched just before the thing was built: the first round uses it.
        let mut fetch = false;
        loop {
            match self.connect(&thing, fetch).await {
                Ok(follow) => {
                    self.set(Link::Up);
                    let since = tokio::time::Instant::now();
                    let why = self.follow(&thing, follow).await;
                    self.set(Link::Away(why));
                    // Only a connection that held for a while starts the backoff again: a
                    // remote that ends an observation as soon as it is made must not be
                    // asked again in a tight loop.
                    if since.elapsed() >= ceiling * 2 {
                        backoff = BACKOFF_MIN;
                    }
                }
                Err(e) => self.set(Link::Away(e.to_string())),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(ceiling);
            fetch = true;
        }
    }

    /// Fetches the TD again (when `fetch`), opens the observations, then reads every readable
    /// property so the local values start where the remote's are (opened first: no change
    /// falls between).
    async fn connect(&self, thing: &Arc<ExposedThing>, fetch: bool) -> Result<Followed, ConsumerError> {
        if fetch {
            let fresh = self.0.consumer.fetch(self.url()).await?;
            *self.0.remote.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        }
        let remote = self.consumed();
        let (tx, rx) = mpsc::channel(256);
        let mut forwarders = Vec::new();
        for (name, property) in &thing.properties {
            if property.observable && !property.write_only {
                let observation = remote.observe_property(name).await;
                if let Some(observation) = self.usable(thing, name, observation)? {
                    forwarders.push(forward(observation, Kind::Property, tx.clone()));
                }
            }
        }
        for name in thing.events.keys() {
            let observation = remote.subscribe_event(Some(name)).await;
            if let Some(observation) = self.usable(thing, name, observation)? {
                forwarders.push(forward(observation, Kind::Event, tx.clone()));
            }
        }
        let readable = thing.properties.iter().filter(|(_, p)| !p.write_only);
        let remote = &remote;
        let reads = readable.map(|(name, _)| async move { (name, remote.read_property(name).await) });
        for (name, value) in futures_util::future::join_all(reads).await {
            if let Some(value) = self.usable(thing, name, value)? {
                mirror(thing, Kind::Property, name, value);
            }
        }
        Ok(Followed { rx, forwarders })
    }

    /// What one affordance's observation or read at connection gave: a remote that cannot be
    /// reached fails the connection; one that answers but refuses this affordance (a server
    /// whose Observe does not work, a property it will not read) leaves just this affordance
    /// without notifications, said once per connection, so the rest is still bridged.
    fn usable<T>(
        &self,
        thing: &ExposedThing,
        name: &str,
        outcome: Result<T, ConsumerError>,
    ) -> Result<Option<T>, ConsumerError> {
        match outcome {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind() == ConsumerErrorKind::Unreachable => Err(e),
            Err(e) => {
                tracing::warn!(thing = %thing.slug, remote = %self.url(), "'{name}' is bridged without notifications: {e}");
                Ok(None)
            }
        }
    }

    /// Applies the remote's notices to the thing until an observation ends or a probe fails;
    /// returns why.
    async fn follow(&self, thing: &Arc<ExposedThing>, mut followed: Followed) -> String {
        let mut link = self.0.link.subscribe();
        let mut probe = tokio::time::interval(self.0.proxy.probe);
        probe.tick().await;
        let why = loop {
            tokio::select! {
                notice = followed.rx.recv() => match notice {
                    Some((kind, Ok(notice))) => mirror(thing, kind, &notice.name, notice.value),
                    Some((_, Err(e))) => break e.to_string(),
                    None => break "every observation ended".to_owned(),
                },
                _ = probe.tick() => {
                    if let Err(e) = self.probe().await {
                        break e.to_string();
                    }
                }
                changed = link.changed() => {
                    if changed.is_err() {
                        break "the bridge stopped".to_owned();
                    }
                    if *link.borrow_and_update() == Link::Suspect {
                        match self.probe().await {
                            Ok(()) => self.set(Link::Up),
                            Err(e) => break e.to_string(),
                        }
                    }
                }
            }
        };
        followed.forwarders.iter().for_each(JoinHandle::abort);
        why
    }

    /// Fetches the TD again: the remote answers, and its forms are current.
    async fn probe(&self) -> Result<(), ConsumerError> {
        let fresh = self.0.consumer.fetch(self.url()).await?;
        let mut remote = self.0.remote.write().unwrap_or_else(|p| p.into_inner());
        if remote.td() != fresh.td() {
            *remote = Arc::new(fresh);
        }
        Ok(())
    }

    fn action_handler(&self, name: String) -> ActionHandler {
        let upstream = self.clone();
        Arc::new(move |ctx| {
            let upstream = upstream.clone();
            let name = name.clone();
            Box::pin(async move {
                upstream.available()?;
                let remote = upstream.consumed();
                remote
                    .invoke_action(&name, ctx.input)
                    .await
                    .map_err(|e| upstream.failed(e))
            })
        })
    }
}

/// The open observations of one connection, merged into one channel.
struct Followed {
    rx: mpsc::Receiver<(Kind, Result<Notice, ConsumerError>)>,
    forwarders: Vec<JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Property,
    Event,
}

/// Moves one observation's notices into the merged channel; its end is an error there, so
/// that a remote which ends any observation is reconnected as a whole.
fn forward(
    mut observation: Observation,
    kind: Kind,
    tx: mpsc::Sender<(Kind, Result<Notice, ConsumerError>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let next = observation.next().await;
            let ended = !matches!(next, Some(Ok(_)));
            let item = next.unwrap_or_else(|| {
                Err(ConsumerError::Ended {
                    url: String::new(),
                    what: "observation",
                })
            });
            if tx.send((kind, item)).await.is_err() || ended {
                break;
            }
        }
    })
}

/// A remote value or event, made local: observers of the thing see it as the thing's own.
fn mirror(thing: &Arc<ExposedThing>, kind: Kind, name: &str, value: Value) {
    let done = match kind {
        Kind::Property => thing.update_property(name, value),
        Kind::Event => {
            let data = thing
                .event(name)
                .ok()
                .and_then(|e| e.data.as_ref())
                .map(|_| value);
            thing.emit_event(name, data)
        }
    };
    if let Err(e) = done {
        tracing::warn!(thing = %thing.slug, "the remote's {name} is not taken: {e}");
    }
}

impl Remote for Upstream {
    fn available(&self) -> Result<(), Error> {
        match &*self.0.link.borrow() {
            Link::Away(why) => Err(Error::UpstreamAway(format!("{why}; the bridge is reconnecting"))),
            Link::Up | Link::Suspect => Ok(()),
        }
    }

    fn read_property(&self, name: &str) -> RemoteFuture<Value> {
        let upstream = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let remote = upstream.consumed();
            remote.read_property(&name).await.map_err(|e| upstream.failed(e))
        })
    }

    fn write_property(&self, name: &str, value: Value) -> RemoteFuture<()> {
        let upstream = self.clone();
        let name = name.to_owned();
        Box::pin(async move {
            let remote = upstream.consumed();
            remote
                .write_property(&name, value)
                .await
                .map_err(|e| upstream.failed(e))
        })
    }
}

impl Driver for Upstream {
    fn remote(&self) -> Arc<dyn Remote> {
        Arc::new(self.clone())
    }

    fn action_handlers(&self) -> Vec<(String, ActionHandler)> {
        self.consumed()
            .names("actions")
            .into_iter()
            .map(|name| (name.clone(), self.action_handler(name)))
            .collect()
    }

    fn start(&self, thing: &Arc<ExposedThing>) -> Vec<JoinHandle<()>> {
        vec![tokio::spawn(self.clone().run(thing.clone()))]
    }
}
