//! The process's open-file limit. Every connection holds a descriptor, and a WebSocket on plain
//! TCP holds a second one (`binding::ws_outbound` writes through a duplicate); once the table is
//! full, accepting fails and new connections wait in the backlog until a descriptor is freed.
//!
//! What lives here: raising the soft limit to the hard one at start, and the rule that keeps the
//! top of the table for accepting. Nothing here opens or closes a descriptor.

use std::io;
use std::os::fd::RawFd;

/// Descriptors at the top of the table that optional ones (a WebSocket's duplicate) never take,
/// so that the server can go on accepting connections while its WebSockets hold two each.
pub const RESERVE: u64 = 256;

/// The soft and hard limits on open descriptors.
pub fn limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft limit to the hard one, as servers do at start (Go's runtime, nginx's
/// `worker_rlimit_nofile`): the usual soft default of 1024 would have a few hundred WebSockets
/// stop the server from accepting. Returns the soft limit now in force.
pub fn raise_to_hard() -> io::Result<u64> {
    let (soft, hard) = limits()?;
    if soft >= hard {
        return Ok(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// Whether an optional descriptor that was just opened as number `fd` may be kept. Descriptors
/// are numbered lowest free first, so every number below `fd` is in use: a number in the top
/// [`RESERVE`] of the table means it is nearly full, and the caller gives the descriptor back.
pub(crate) fn may_keep_optional(fd: RawFd) -> bool {
    match limits() {
        Ok((soft, _)) => u64::try_from(fd).is_ok_and(|fd| fd.saturating_add(RESERVE) < soft),
        // Without the limit there is nothing to protect.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the process's limit is shared, and the reserve is relative to it.
    #[test]
    fn the_soft_limit_rises_to_the_hard_one_and_optional_descriptors_stay_out_of_the_reserve() {
        let (_, hard) = limits().expect("getrlimit");
        assert_eq!(raise_to_hard().expect("setrlimit"), hard);
        assert_eq!(limits().expect("getrlimit"), (hard, hard));

        let top = RawFd::try_from(hard - RESERVE).expect("a finite limit");
        assert!(may_keep_optional(3));
        assert!(may_keep_optional(top - 1));
        assert!(!may_keep_optional(top));
        assert!(!may_keep_optional(top + 1));
    }
}
