//! What the node process uses of its machine (Linux `/proc` and `statvfs`; zeros elsewhere): CPU time,
//! resident memory, bytes under the data dir and free bytes on its file system.

use std::path::Path;

use shoal_api::internal::NodeResources;

/// Samples the current process and `data_dir`.
pub fn sample(data_dir: &Path) -> NodeResources {
    NodeResources {
        cpu_seconds: cpu_seconds(),
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: rss_bytes(),
        disk_bytes: dir_bytes(data_dir),
        disk_free_bytes: free_bytes(data_dir).unwrap_or(0),
    }
}

/// User + system CPU time of this process.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Resident set size of this process.
fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}

/// Total size of the files under `dir` (errors skip the entry).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Free bytes (for unprivileged users) on the file system holding `dir`; `None` when unknown.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_something_on_linux() {
        let dir = std::env::temp_dir();
        let r = super::sample(&dir);
        assert!(r.cpu_cores >= 1);
        if cfg!(target_os = "linux") {
            assert!(r.memory_bytes > 0 && r.disk_free_bytes > 0 && r.cpu_seconds >= 0.0);
        }
    }
}
