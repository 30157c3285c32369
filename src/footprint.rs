//! What the `wot` binary hands back to the system once it is serving (part of the binary, not
//! of the library: an embedding program decides this for its own process).
//!
//! Starting touches far more than serving does: parsing thing files, compiling schemas,
//! building TDs and TLS configurations run code and use heap that an idle server never needs
//! again. A second after the ready line, three things are given back:
//! - the heap freed by loading (glibc keeps freed memory mapped): `malloc_trim`;
//! - the binary's pages that start-up mapped (about 10 MB of its 16 MB of code and constants,
//!   where an idle server uses 3 MB), on its read-only mappings that hold no private copy:
//!   `madvise(MADV_PAGEOUT)` takes them out of memory where the kernel can, and
//!   `MADV_DONTNEED` unmaps the rest. Before that, `MADV_RANDOM` asks the kernel to bring back
//!   only the page a later access needs rather than its neighbours too: it halves what the
//!   binary's constants keep mapped at idle (640 KB to 120 KB measured);
//! - the shared libraries' pages that start-up mapped (libc, libm, the loader: 2.2 MB, of which
//!   an idle server uses under 1 MB), on the same kind of mappings of the libraries the loader
//!   mapped before `main` (which stay for the process's life): `MADV_DONTNEED` only, since they
//!   are pages other processes share.
//!
//! Each is a clean page of a file: one used again comes back from the page cache or the file on
//! its next access (a fault, once), with the same contents. The kernel maps a faulting page's
//! cached neighbours with it (64 KB at a time), so what stays mapped at idle is a multiple of
//! what the idle server touches (README, Scale).
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

/// The files mapped before `main` started any thread: the executable and the libraries the
/// loader brought in with it, which stay mapped for the process's life. Only their mappings are
/// ever unmapped here: a library loaded later (an NSS module, say) could be unloaded and its
/// address range reused between reading /proc/self/smaps and the `madvise`.
static MAPPED_AT_START: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Notes the files mapped now (see [`MAPPED_AT_START`]); call before any thread is started.
pub(crate) fn note_files_mapped_at_start() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .map(str::to_owned)
        .collect();
    files.sort_unstable();
    files.dedup();
    let _ = MAPPED_AT_START.set(files);
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
        unmap_start_up_pages();
    });
    if let Err(e) = spawned {
        tracing::debug!("start-up memory kept: {e}");
    }
}

/// A read-only private mapping of a file that holds no private copy of any page.
#[derive(Debug, PartialEq, Eq)]
struct FileMapping {
    start: usize,
    end: usize,
    /// Whether the file is this process's own executable (else a shared library or other file).
    own: bool,
}

/// Unmaps the pages of this process's read-only file mappings that hold no private copy (see
/// the module doc); on the executable's own, first asks for single-page faults and pages out.
/// A mapping with anonymous pages (copies made when the loader applied relocations before
/// making it read-only: RELRO) is left alone, since dropping those would bring back the file's
/// unrelocated bytes.
#[cfg(target_os = "linux")]
fn unmap_start_up_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let at_start = MAPPED_AT_START.get().map_or(&[][..], Vec::as_slice);
    let mappings = clean_read_only_file_mappings(&smaps, &exe.to_string_lossy(), at_start);
    let own: Vec<&FileMapping> = mappings.iter().filter(|m| m.own).collect();
    for m in &own {
        // SAFETY: advice on a whole mapping of this process's executable; MADV_RANDOM changes
        // only how many pages a later fault reads and maps, never what a page contains.
        unsafe {
            libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_RANDOM);
        }
    }
    // First out of memory altogether where the kernel can (MADV_PAGEOUT): it takes only pages on
    // its LRU lists, and a page faulted in lately may still wait in the per-CPU batch of the CPU
    // that faulted it, which only a call made on that CPU flushes; so once from each CPU. Only the
    // executable's: the libraries' pages are other processes' too.
    std::thread::scope(|scope| {
        for cpu in allowed_cpus() {
            let own = &own;
            scope.spawn(move || {
                pin_to(cpu);
                for m in own {
                    // SAFETY: as below; MADV_PAGEOUT drops clean pages, which come back from
                    // the file unchanged.
                    unsafe {
                        libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_PAGEOUT);
                    }
                }
            });
        }
    });
    for m in &mappings {
        // SAFETY: the range is a whole private mapping of a file that is not writable and, as
        // /proc/self/smaps said, holds no anonymous (privately copied) page; a read-only mapping
        // gains none since. Dropping its pages only unmaps them: each is mapped again, with the
        // file's unchanged contents, on its next access, so no reference into the range is
        // invalidated.
        unsafe {
            libc::madvise(m.start as *mut libc::c_void, m.end - m.start, libc::MADV_DONTNEED);
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

/// The private mappings of `exe` (the process's own executable) and of the files in
/// `libraries` (sorted) that are readable, not writable, and hold no anonymous page, from the
/// text of /proc/self/smaps (a `start-end perms offset dev inode path` line per mapping, then
/// `Key: value kB` lines, `Anonymous` among them).
fn clean_read_only_file_mappings(smaps: &str, exe: &str, libraries: &[String]) -> Vec<FileMapping> {
    let mut chosen = Vec::new();
    let mut current: Option<FileMapping> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            let none = anonymous.trim().strip_suffix("kB").map(str::trim) == Some("0");
            if let (Some(mapping), true) = (current.take(), none) {
                chosen.push(mapping);
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
        let own = |path: &str| path == exe;
        let known = |path: &str| own(path) || libraries.binary_search_by(|l| l.as_str().cmp(path)).is_ok();
        let path = fields.nth(3).filter(|p| known(p));
        let read_only_private = perms.len() == 4 && perms.starts_with("r-") && perms.ends_with('p');
        current = match path {
            Some(path) if read_only_private && end > start => Some(FileMapping {
                start,
                end,
                own: own(path),
            }),
            _ => None,
        };
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_without_private_copies_are_chosen() {
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
7f6946c7d000-7f6946c80000 ---p 00000000 00:2a 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fffd0e94000-7fffd0eb5000 rw-p 00000000 00:00 0 [stack]
Anonymous:            88 kB
";
        let m = |start, end, own| FileMapping { start, end, own };
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned();
        assert_eq!(
            clean_read_only_file_mappings(smaps, "/work/target/release/wot", &[libc]),
            vec![
                m(0x55b0f2f31000, 0x55b0f34e6000, true),
                m(0x55b0f34e6000, 0x55b0f4502000, true),
                m(0x7f6946ad4000, 0x7f6946c2a000, false),
            ]
        );
        // A mapping whose Anonymous line is missing or unreadable is never chosen.
        let odd = "1000-2000 r-xp 0 00:2a 1 /x\nRss: 4 kB\n3000-4000 r-xp 0 00:2a 1 /x\nAnonymous: lots\n";
        assert!(clean_read_only_file_mappings(odd, "/x", &[]).is_empty());
        assert!(clean_read_only_file_mappings("garbage\n\n1-2 r-xp", "/x", &[]).is_empty());
        // A library not mapped at start (loaded later, so it may be unloaded) is left alone.
        let late = smaps.replace("libc.so.6", "libnss_dns.so.2");
        assert_eq!(
            clean_read_only_file_mappings(&late, "/work/target/release/wot", &[]).len(),
            2
        );
    }
}
