//! An instance's memory: the manifest's `memory` limit, and what the instance's processes hold.
//!
//! Cloud Foundry runs each instance in a container whose memory is capped at the manifest's
//! `memory`; an instance that goes over is killed and counted as a crash. Here an instance is a
//! process group, so its memory is the sum over the group's processes (an app server's workers
//! included) of their proportional set size (`Pss` in `/proc/<pid>/smaps_rollup`): a page that
//! forked workers share counts once in all, as it does against a container's limit, where
//! resident sets would count it once per worker. The supervisor samples it every second, so a
//! spike shorter than that goes unseen, which a container would not allow.

use std::fmt;

/// The memory of the processes in process group `pgid`, in bytes: their proportional set
/// sizes, or their resident sets where the kernel does not say (no `smaps_rollup`).
pub fn group_bytes(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (group, resident) = group_and_resident_bytes(pid)?;
            (group == pgid).then(|| proportional_bytes(pid).unwrap_or(resident))
        })
        .sum()
}

/// `Pss` of `/proc/<pid>/smaps_rollup`, in bytes.
fn proportional_bytes(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|line| line.starts_with("Pss:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// The process group of `pid` and its resident memory in bytes, from `/proc/<pid>/stat`.
fn group_and_resident_bytes(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in brackets, may hold spaces: count the fields after its end.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 5 (pgrp) and 24 (rss, in pages) of proc(5); the first after the name is field 3.
    let group: u32 = fields.get(2)?.parse().ok()?;
    let pages: u64 = fields.get(21)?.parse().ok()?;
    // SAFETY: sysconf(3) reads a constant of the system; it touches no memory of ours.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    Some((group, pages * page_size))
}

/// Bytes as `cf app` shows memory: `12.3M`, `1.5G`.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MB: u64 = 1024 * 1024;
        const GB: u64 = 1024 * MB;
        match self.0 {
            bytes if bytes >= GB && bytes % GB == 0 => write!(f, "{}G", bytes / GB),
            bytes if bytes >= GB => write!(f, "{:.1}G", bytes as f64 / GB as f64),
            bytes if bytes % MB == 0 => write!(f, "{}M", bytes / MB),
            bytes => write!(f, "{:.1}M", bytes as f64 / MB as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_holds_the_memory_of_all_its_processes() {
        use std::os::unix::process::CommandExt;
        use std::time::{Duration, Instant};
        // A shell leading a group of its own, with a child in the same group.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let in_group = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| group_and_resident_bytes(*pid).is_some_and(|(g, _)| g == pgid))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_group() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let leader =
            proportional_bytes(pgid).unwrap_or_else(|| group_and_resident_bytes(pgid).unwrap().1);
        let group = group_bytes(pgid);
        // SAFETY: kill(2) on the group this test started.
        unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
        let _ = child.wait();
        assert!(leader > 0);
        assert!(
            group > leader,
            "the group ({group} bytes) counts the child beside the leader ({leader} bytes)"
        );
        // Gone once the kernel has taken the killed processes down.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_bytes(pgid) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(group_bytes(pgid), 0, "the group is gone");
    }

    #[test]
    fn sizes_read_as_cf_app_shows_them() {
        assert_eq!(Size(12 * 1024 * 1024 + 300 * 1024).to_string(), "12.3M");
        assert_eq!(Size(1536 * 1024 * 1024).to_string(), "1.5G");
        assert_eq!(Size(64 * 1024 * 1024).to_string(), "64M");
        assert_eq!(Size(2048 * 1024 * 1024).to_string(), "2G");
    }
}
