//! Discovery: announcing what the runtime hosts over mDNS/DNS-SD (`records` says what, `mdns`
//! announces it) and finding things on the network for `wot discover` (`browse`).
//!
//! Anything here that opens a multicast socket (the announcer, the browser) must only run where
//! multicast may be sent: `wot serve` without `--no-mdns`, or tests under netns-run. This module
//! serves nothing over HTTP and never touches a thing's state.
//!
//! As library API: [`plan`] says what to announce for some things ([`ThingInfo`], [`Ports`]),
//! an [`Announcer`] announces it (and follows a new plan with [`Announcer::sync`]);
//! [`discover`] browses the network for things and fetches their TDs.

mod browse;
pub(crate) mod mdns;
pub(crate) mod records;

pub use browse::{DiscoverError, Discovered, discover};
pub use mdns::{Announcer, MdnsConfig, MdnsError};
pub use records::{Announcement, Ports, ThingInfo, plan};
