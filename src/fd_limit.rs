//! The process's open-file limit. Every connection holds a descriptor (a WebSocket too: the
//! connection it was upgraded from); once the table is full, accepting fails and new connections
//! wait in the backlog until a descriptor is freed.
//!
//! What lives here: raising the soft limit to the hard one at start, and how many descriptors to
//! count besides connections. Nothing here opens or closes a descriptor.

use std::io;

/// Descriptors to allow for besides connections: listeners, the CoAP socket, the state store,
/// the runtime's own (epoll, eventfds), files being read.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the process's limit is shared.
    #[test]
    fn the_soft_limit_rises_to_the_hard_one() {
        let (_, hard) = limits().expect("getrlimit");
        assert_eq!(raise_to_hard().expect("setrlimit"), hard);
        assert_eq!(limits().expect("getrlimit"), (hard, hard));
    }
}
