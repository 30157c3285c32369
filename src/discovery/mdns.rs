//! The mDNS/DNS-SD announcer (mdns-sd): registers the [`Announcement`]s of `records` with SRV
//! target `<host>.local.` and its A/AAAA records, probes and renames on conflicts (mdns-sd
//! appends ` (2)` to an instance, `-2` to a host, and we log it), re-announces when addresses
//! change, sends goodbyes for a thing that goes away and for everything on shutdown.
//!
//! It must only run where multicast may be sent: `wot serve` without `--no-mdns`, or tests under
//! `../shared/tools/netns-run`. It knows nothing of HTTP or of things beyond their records.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};

use super::records::Announcement;

/// How the announcer is set up.
#[derive(Debug, Clone, Default)]
pub struct MdnsConfig {
    /// Interfaces to announce on (names such as `eth0`, or addresses); empty: all of them.
    pub interfaces: Vec<String>,
    /// The host label of `<host>.local.`; None: the system's host name.
    pub host: Option<String>,
    /// The address the runtime is bound to; when specific, only it is announced (A or AAAA),
    /// otherwise every address of the enabled interfaces, kept up to date.
    pub bound: Option<IpAddr>,
}

/// Why announcing failed.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The mDNS daemon did not start.
    #[error("cannot start mDNS: {0}")]
    Start(mdns_sd::Error),
    /// `--mdns-interface` named interfaces the daemon could not switch to.
    #[error("cannot select mDNS interfaces: {0}")]
    Interfaces(mdns_sd::Error),
    /// An announcement is not a valid service (a bad instance name or TXT record).
    #[error("cannot describe {instance} {service_type}: {source}")]
    Describe {
        /// The instance name.
        instance: String,
        /// Its service type.
        service_type: &'static str,
        /// What the daemon said.
        source: mdns_sd::Error,
    },
    /// The daemon did not take an announcement.
    #[error("cannot announce {fullname}: {source}")]
    Announce {
        /// The instance's full name.
        fullname: String,
        /// What the daemon said.
        source: mdns_sd::Error,
    },
}

/// The system's host name as a DNS label.
pub(crate) fn system_host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    super::records::host_label(&raw)
}

/// A running announcer. Dropping it without [`Announcer::stop`] still shuts the daemon down,
/// but only `stop` waits for the goodbyes to leave.
pub struct Announcer {
    daemon: ServiceDaemon,
    /// Full names of the registered instances.
    registered: Mutex<Vec<String>>,
    host: String,
    /// The address the runtime is bound to, when it is one address (not 0.0.0.0 / ::).
    bound: Option<IpAddr>,
}

fn interface_kind(spec: &str) -> IfKind {
    match spec.parse::<IpAddr>() {
        Ok(ip) => IfKind::Addr(ip),
        Err(_) => IfKind::Name(spec.to_owned()),
    }
}

impl Announcer {
    /// Starts the daemon and registers every announcement.
    pub fn start(config: &MdnsConfig, announcements: Vec<Announcement>) -> Result<Announcer, MdnsError> {
        let daemon = ServiceDaemon::new().map_err(MdnsError::Start)?;
        if !config.interfaces.is_empty() {
            for name in config.interfaces.iter().filter(|s| s.parse::<IpAddr>().is_err()) {
                if cfg!(target_os = "linux") && !std::path::Path::new("/sys/class/net").join(name).exists() {
                    // Not fatal: it may appear later (mdns-sd watches interfaces).
                    tracing::warn!(
                        "mDNS interface '{name}' does not exist (yet); nothing is announced on it"
                    );
                }
            }
            let kinds: Vec<IfKind> = config.interfaces.iter().map(|s| interface_kind(s)).collect();
            daemon
                .disable_interface(IfKind::All)
                .and_then(|_| daemon.enable_interface(kinds))
                .map_err(MdnsError::Interfaces)?;
        }
        if let Ok(events) = daemon.monitor() {
            // Ends when the daemon shuts down and drops the sender.
            let spawned = std::thread::Builder::new()
                .name("mdns-monitor".into())
                .spawn(move || {
                    while let Ok(event) = events.recv() {
                        match event {
                            DaemonEvent::NameChange(change) => tracing::warn!(
                                "mDNS name conflict: '{}' is announced as '{}'",
                                change.original,
                                change.new_name
                            ),
                            DaemonEvent::Error(e) => tracing::debug!("mDNS: {e}"),
                            _ => {}
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::debug!("no mDNS monitor thread: {e}");
            }
        }
        let host = config.host.clone().unwrap_or_else(system_host);
        let announcer = Announcer {
            daemon,
            registered: Mutex::new(Vec::new()),
            host,
            bound: config.bound.filter(|ip| !ip.is_unspecified()),
        };
        for a in announcements {
            announcer.register(&a)?;
        }
        Ok(announcer)
    }

    /// The host name in SRV targets, `<host>.local.`.
    pub(crate) fn host_name(&self) -> String {
        format!("{}.local.", self.host)
    }

    fn register(&self, a: &Announcement) -> Result<(), MdnsError> {
        let txt: Vec<(&str, &str)> = a.txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let info = match self.bound {
            Some(ip) => ServiceInfo::new(
                a.service_type,
                &a.instance,
                &self.host_name(),
                ip,
                a.port,
                &txt[..],
            ),
            None => ServiceInfo::new(
                a.service_type,
                &a.instance,
                &self.host_name(),
                (),
                a.port,
                &txt[..],
            )
            .map(ServiceInfo::enable_addr_auto),
        }
        .map_err(|source| MdnsError::Describe {
            instance: a.instance.clone(),
            service_type: a.service_type,
            source,
        })?;
        let fullname = info.get_fullname().to_owned();
        if let Err(source) = self.daemon.register(info) {
            return Err(MdnsError::Announce { fullname, source });
        }
        tracing::debug!("announcing {fullname}");
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fullname);
        Ok(())
    }

    /// The full names of every registered instance.
    pub fn fullnames(&self) -> Vec<String> {
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn unregister_all(&self, names: Vec<String>) -> Vec<mdns_sd::Receiver<mdns_sd::UnregisterStatus>> {
        names
            .into_iter()
            .filter_map(|name| match self.daemon.unregister(&name) {
                Ok(rx) => Some(rx),
                Err(e) => {
                    tracing::debug!("cannot withdraw {name}: {e}");
                    None
                }
            })
            .collect()
    }

    /// Brings the announcements in line with a new plan (things added, renamed or removed
    /// while serving): goodbyes for instances no longer planned, registrations for new ones;
    /// instances in both are left alone, so browsers see no churn.
    pub async fn sync(&self, announcements: Vec<Announcement>) {
        let planned: Vec<String> = announcements.iter().map(Announcement::fullname).collect();
        let gone: Vec<String> = {
            let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, kept): (Vec<_>, Vec<_>) = registered.drain(..).partition(|r| !planned.contains(r));
            *registered = kept;
            gone
        };
        let known = self.fullnames();
        for a in announcements.iter().filter(|a| !known.contains(&a.fullname())) {
            if let Err(e) = self.register(a) {
                tracing::warn!("mDNS: {e}");
            }
        }
        wait(self.unregister_all(gone)).await;
    }

    /// Sends goodbyes for everything, waits (at most two seconds) for them to leave, stops.
    pub async fn stop(&self) {
        let names = self.fullnames();
        wait(self.unregister_all(names)).await;
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
        }
    }
}

async fn wait(receivers: Vec<mdns_sd::Receiver<mdns_sd::UnregisterStatus>>) {
    let all = futures_util::future::join_all(receivers.iter().map(|rx| rx.recv_async()));
    if tokio::time::timeout(Duration::from_secs(2), all).await.is_err() {
        tracing::warn!("mDNS goodbyes not confirmed within 2 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::records::{Announcement, WOT_TCP};

    /// `sync` matches planned instances to registered ones by full name, so the plan's
    /// full name must be the daemon's, subtype or not.
    #[test]
    fn planned_full_names_are_the_daemons() {
        for ty in [WOT_TCP, "_directory._sub._wot._tcp.local."] {
            let a = Announcement {
                service_type: ty,
                instance: "Lamp abc".into(),
                port: 8080,
                txt: vec![],
                thing: None,
            };
            let info = ServiceInfo::new(ty, &a.instance, "h.local.", (), 8080, &[("k", "v")][..]).unwrap();
            assert_eq!(a.fullname(), info.get_fullname());
        }
    }
}
