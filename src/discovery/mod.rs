//! Discovery: announcing what the runtime hosts over mDNS/DNS-SD (`records` says what, `mdns`
//! announces it) and finding things on the network for `wot discover` (`browse`).
//!
//! Anything here that opens a multicast socket (the announcer, the browser) must only run where
//! multicast may be sent: `wot serve` without `--no-mdns`, or tests under netns-run. This module
//! serves nothing over HTTP and never touches a thing's state.

pub mod browse;
pub mod mdns;
pub mod records;

pub use mdns::{Announcer, MdnsConfig};
pub use records::{Announcement, Ports, ThingInfo};
