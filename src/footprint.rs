//! What the `wot` binary hands back to the system once it is serving (part of the binary, not
//! of the library: an embedding program decides this for its own process).
//!
//! Starting touches far more than serving does: parsing thing files, compiling schemas and
//! route patterns, building TDs and TLS configurations run code and use heap that an idle
//! server never needs again. A second after the ready line, two things are given back:
//! - the heap freed by loading (glibc keeps freed memory mapped): `malloc_trim`;
//! - the binary's pages that start-up mapped (about 10 MB of its 16 MB of code and constants,
//!   where an idle server uses under 2 MB), on its read-only mappings that hold no private
//!   copy: `madvise(MADV_PAGEOUT)` takes them out of memory where the kernel can, and
//!   `MADV_DONTNEED` unmaps the rest. They are the executable file's clean pages: a page used
//!   again comes back from the page cache or the file on its first access (a fault, once).
//!   How much leaves memory is the kernel's call: pages it holds in large page-cache folios
//!   (ext4 on Linux 6.16 and later, once the binary has been read back) stay cached and come
//!   back with their whole folio, so the idle RSS is 6.5–7 MB or about 10 MB (README, Scale).
//!
//! Before any thread starts, glibc's malloc is held to one arena per core: by default every
//! thread that allocates gets its own arena (up to eight a core), and the six threads of an idle
//! server each kept a megabyte or more of their own; with no more arenas than cores, no more
//! threads contend for one than could run at once.
//!
//! Nothing here changes what any page contains, and nothing runs on a request's path.

/// Holds malloc to one arena per core; call before any thread is started.
pub(crate) fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt sets one of glibc's malloc parameters; it takes no pointer, and it is
        // called before this process starts a thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Gives back start-up memory (see the module doc) a second after the ready line, on a thread
/// of its own that then ends: what start-up set going has settled by then.
pub(crate) fn give_back_start_up_memory() {
    let spawned = std::thread::Builder::new().name("give-back".into()).spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(1));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
        // pointer.
        unsafe {
            libc::malloc_trim(0);
        }
        #[cfg(target_os = "linux")]
        unmap_own_start_up_code();
    });
    if let Err(e) = spawned {
        tracing::debug!("start-up memory kept: {e}");
    }
}

/// Unmaps the pages of the running executable's read-only mappings that hold no private copy
/// (`MADV_DONTNEED`). They are the file's own pages: the kernel keeps them in its page cache
/// (clean, reclaimable), and a page used again is mapped back from there on its next access.
/// A mapping with anonymous pages (copies made when the loader applied relocations before
/// making it read-only: RELRO) is left alone, since dropping those would bring back the file's
/// unrelocated bytes.
#[cfg(target_os = "linux")]
fn unmap_own_start_up_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let ranges = file_only_read_only_mappings_of(&smaps, &exe.to_string_lossy());
    // First out of memory altogether where the kernel can (MADV_PAGEOUT): it takes only pages on
    // its LRU lists, and a page faulted in lately may still wait in the per-CPU batch of the CPU
    // that faulted it, which only a call made on that CPU flushes; so once from each CPU.
    std::thread::scope(|scope| {
        for cpu in allowed_cpus() {
            let ranges = &ranges;
            scope.spawn(move || {
                pin_to(cpu);
                for &(start, end) in ranges {
                    // SAFETY: as below; MADV_PAGEOUT drops clean pages, which come back from
                    // the file unchanged.
                    unsafe {
                        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
                    }
                }
            });
        }
    });
    for &(start, end) in &ranges {
        // SAFETY: the range is a whole mapping of this process's own executable that is not
        // writable and, as /proc/self/smaps said, holds no anonymous (privately copied) page; a
        // read-only mapping cannot gain one since. Dropping its pages only unmaps them: each is
        // mapped again, with the file's unchanged contents, on its next access, so no reference
        // into the range is invalidated.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Moves the calling thread onto `cpu`.
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) {
    // SAFETY: sched_setaffinity on the calling thread (pid 0) with a set that lives for the
    // call; CPU_SET writes into that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The CPUs this process may run on.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes one cpu_set_t into the struct it is given, which lives
    // for the call; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// The address ranges of `exe`'s private mappings that are neither writable nor hold an
/// anonymous page, from the text of /proc/self/smaps (a `start-end perms offset dev inode path`
/// line per mapping, then `Key: value kB` lines, `Anonymous` among them).
fn file_only_read_only_mappings_of(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut chosen = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            let none = anonymous.trim().strip_suffix("kB").map(str::trim) == Some("0");
            if let (Some(range), true) = (current.take(), none) {
                chosen.push(range);
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // A new mapping's line: a candidate until its Anonymous line says otherwise.
        let path = fields.nth(3);
        let read_only_private = perms.len() == 4 && perms.as_bytes()[1] == b'-' && perms.ends_with('p');
        current = (path == Some(exe) && read_only_private && end > start).then_some((start, end));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings_without_private_copies_are_chosen() {
        let smaps = "\
55b0f2f31000-55b0f34e6000 r--p 00000000 00:2a 123 /work/target/release/wot
Size:               5844 kB
Rss:                1976 kB
Anonymous:             0 kB
55b0f34e6000-55b0f4502000 r-xp 005b5000 00:2a 123 /work/target/release/wot
Rss:               10416 kB
Anonymous:             0 kB
55b0f4502000-55b0f45a9000 r--p 015d0000 00:2a 123 /work/target/release/wot
Rss:                 668 kB
Anonymous:           668 kB
55b0f45a9000-55b0f45c2000 rw-p 01676000 00:2a 123 /work/target/release/wot
Anonymous:            28 kB
55b1072d1000-55b1073ad000 rw-p 00000000 00:00 0 [heap]
Anonymous:           540 kB
7f6946ad4000-7f6946c2a000 r-xp 00028000 00:2a 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f6946c2a000-7f6946c7d000 r--s 00000000 00:2a 88 /work/target/release/wot
Anonymous:             0 kB
7fffd0e94000-7fffd0eb5000 rw-p 00000000 00:00 0 [stack]
Anonymous:            88 kB
";
        assert_eq!(
            file_only_read_only_mappings_of(smaps, "/work/target/release/wot"),
            vec![(0x55b0f2f31000, 0x55b0f34e6000), (0x55b0f34e6000, 0x55b0f4502000)]
        );
        // A mapping whose Anonymous line is missing or unreadable is never chosen.
        let odd = "1000-2000 r-xp 0 00:2a 1 /x\nRss: 4 kB\n3000-4000 r-xp 0 00:2a 1 /x\nAnonymous: lots\n";
        assert!(file_only_read_only_mappings_of(odd, "/x").is_empty());
        assert!(file_only_read_only_mappings_of("garbage\n\n1-2 r-xp", "/x").is_empty());
    }
}
