//! Readings from `/proc`: a process's memory (`/proc/PID/status`, `/proc/PID/smaps_rollup`)
//! and CPU time (`/proc/PID/stat`). Used to sample the server under test and to report the
//! generator's own cost. Parsers are pure functions over the file text, tested on samples.

use std::io;

use serde::{Deserialize, Serialize};

/// Memory figures of one process, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `VmRSS`: resident set, user space (anonymous + file + shared memory).
    pub vm_rss: u64,
    /// `RssAnon`: resident anonymous memory (heap, stacks).
    pub rss_anon: u64,
    /// `RssFile`: resident file-backed pages (the binary, libraries).
    pub rss_file: u64,
    /// `VmHWM`: the peak resident set.
    pub vm_hwm: u64,
    /// `Pss` from smaps_rollup, when readable.
    pub pss: Option<u64>,
    /// `Threads`.
    pub threads: u64,
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => Some(n * 1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// Parses `/proc/PID/status` (and optionally `smaps_rollup`) text.
pub fn parse_memory(status: &str, smaps_rollup: Option<&str>) -> Option<Memory> {
    Some(Memory {
        vm_rss: kib_field(status, "VmRSS")?,
        rss_anon: kib_field(status, "RssAnon").unwrap_or(0),
        rss_file: kib_field(status, "RssFile").unwrap_or(0),
        vm_hwm: kib_field(status, "VmHWM").unwrap_or(0),
        pss: smaps_rollup.and_then(|t| kib_field(t, "Pss")),
        threads: kib_field(status, "Threads").unwrap_or(0),
    })
}

/// Reads the memory of process `pid`.
pub fn memory(pid: u32) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok();
    parse_memory(&status, smaps.as_deref()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no VmRSS"),
        )
    })
}

/// CPU time of a process in clock ticks, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// `utime`: user time of the process.
    pub user: u64,
    /// `stime`: system time of the process.
    pub system: u64,
    /// `cutime`: user time of its waited-for children.
    pub children_user: u64,
    /// `cstime`: system time of its waited-for children.
    pub children_system: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<CpuTicks> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3; utime is 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(CpuTicks {
        user: get(14)?,
        system: get(15)?,
        children_user: get(16)?,
        children_system: get(17)?,
    })
}

/// Reads the CPU ticks of process `pid` (`"self"` for this process).
pub fn cpu_ticks(pid: &str) -> io::Result<CpuTicks> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_sec() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 100,
    }
}

/// CPU seconds, user and system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSecs {
    /// User time.
    pub user: f64,
    /// System time.
    pub system: f64,
}

impl CpuSecs {
    /// From ticks.
    pub fn from_ticks(user: u64, system: u64) -> CpuSecs {
        let hz = ticks_per_sec() as f64;
        CpuSecs {
            user: user as f64 / hz,
            system: system as f64 / hz,
        }
    }

    /// User + system.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// Field-wise sum.
    pub fn add(&mut self, o: &CpuSecs) {
        self.user += o.user;
        self.system += o.system;
    }

    /// This process's own CPU so far (its children report their own), zero if unreadable.
    pub fn own() -> CpuSecs {
        cpu_ticks("self").map_or_else(
            |_| CpuSecs::default(),
            |me| CpuSecs::from_ticks(me.user, me.system),
        )
    }
}

/// Raises this process's soft open-file limit to the hard limit and returns it.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tfleetgate\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  912340 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   38912 kB\nRssAnon:\t   20480 kB\nRssFile:\t   18432 kB\nRssShmem:\t       0 kB\nThreads:\t9\n";

    #[test]
    fn status_fields_are_read_in_bytes() {
        let m = parse_memory(
            STATUS,
            Some("00400000-7ffd rw-p 00000000 00:00 0 [rollup]\nRss:  38912 kB\nPss:   30000 kB\n"),
        )
        .unwrap();
        assert_eq!(m.vm_rss, 38_912 * 1024);
        assert_eq!(m.rss_anon, 20_480 * 1024);
        assert_eq!(m.rss_file, 18_432 * 1024);
        assert_eq!(m.vm_hwm, 40_960 * 1024);
        assert_eq!(m.pss, Some(30_000 * 1024));
        assert_eq!(m.threads, 9);
        assert!(parse_memory("Name:\tx\n", None).is_none());
    }

    #[test]
    fn stat_is_parsed_after_the_command_name() {
        let text = "1234 (fleet gate) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 12 3 20 0 9 0 100 1000 200 18446744073709551615\n";
        assert_eq!(
            parse_stat(text),
            Some(CpuTicks {
                user: 250,
                system: 75,
                children_user: 12,
                children_system: 3
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.vm_rss > 0);
        assert!(cpu_ticks("self").is_ok());
        assert_eq!(ticks_per_sec(), 100);
    }
}
