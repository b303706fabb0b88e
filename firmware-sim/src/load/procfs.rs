//! What `/proc` says about a process: CPU time, resident memory, and which
//! process listens on a TCP port (to find the gateway without being told
//! its pid).

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second of the times in `/proc/<pid>/stat`. The kernel
/// reports them in USER_HZ, which is 100 on every architecture Linux runs
/// the gateway on (x86, arm, arm64, riscv), whatever its internal HZ.
const USER_HZ: f64 = 100.0;

/// User plus system CPU time a process has used so far (all its threads,
/// the exited ones included).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_secs_f64(ticks as f64 / USER_HZ))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), …, utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// This process's own CPU time (getrusage: exact, not in ticks).
pub fn own_cpu_time() -> Option<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Some(tv(u.user_time()) + tv(u.system_time()))
}

/// Resident memory now (VmRSS) and at its peak since the process started
/// (VmHWM), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory(&status)
}

fn parse_memory(status: &str) -> Option<Memory> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let n: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(n * 1024)
    };
    Some(Memory {
        rss: kib("VmRSS:")?,
        peak: kib("VmHWM:")?,
    })
}

/// The process that has a TCP socket listening on `port` (IPv4 or IPv6),
/// if exactly one such process can be seen: found by the socket's inode in
/// `/proc/net/tcp{,6}` and then among the open files of every process this
/// user may inspect. `None` when nothing, or more than one process, listens
/// there.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if holds_any(&entry.path().join("fd"), &wanted) {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Some(*pid),
        _ => None,
    }
}

fn holds_any(fd_dir: &Path, wanted: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|t| t.to_str().map(|s| wanted.iter().any(|w| w == s)))
            .unwrap_or(false)
    })
}

/// Inodes of the sockets in a `/proc/net/tcp` table that listen (state
/// 0A) on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode
            let local = f.get(1)?;
            let (_, p) = local.rsplit_once(':')?;
            let p = u16::from_str_radix(p, 16).ok()?;
            (p == port && *f.get(3)? == "0A")
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Raise this process's soft open-files limit to at least `want` (up to
/// the hard limit), so many connections do not run out of descriptors at
/// the usual soft limit of 1024. Returns the soft limit in force after.
pub fn raise_open_files(want: u64) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= want {
        return Some(soft);
    }
    let target = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => Some(target),
        Err(_) => Some(soft),
    }
}

/// `/proc/loadavg`'s first three fields (1, 5 and 15 minute load averages).
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names() {
        let line = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn memory_from_status() {
        let s = "Name:\tx\nVmHWM:\t  52000 kB\nVmRSS:\t  48000 kB\nThreads:\t9\n";
        assert_eq!(
            parse_memory(s),
            Some(Memory {
                rss: 48_000 * 1024,
                peak: 52_000 * 1024
            })
        );
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn listening_sockets_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D4C2 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(listening_inodes(table, 8080), vec![4242]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        let m = memory(me).expect("own status");
        assert!(m.rss > 0 && m.peak >= m.rss);
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(listener_pid(port), Some(me));
    }
}
