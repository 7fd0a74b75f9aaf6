//! `shoal-node repair`: salvages the damaged replica of a shard that has no other replica to be rebuilt from
//! (DESIGN §6). The node must be stopped. The replica's directory is copied to `DATA_DIR/damaged/` first;
//! then its log keeps the longest prefix of entries that verify and everything after the first damage is
//! dropped, and the command reports exactly which log entries were lost.

use std::path::{Path, PathBuf};

/// Help text of the repair command.
pub const USAGE: &str = "usage: shoal-node repair --data-dir DIR --collection NAME --shard N [--uid UID]

Salvages a damaged shard replica that has no other replica to be rebuilt from (the node reports it as
quarantined, and its requests fail with StorageError). Stop the node first. The replica's directory is
copied to DIR/damaged/ before anything changes; the log keeps every entry up to the first damaged one and
drops the rest; the report lists what was lost. Start the node again afterwards: the shard serves what was
kept. Replicated shards need no repair: the node rebuilds them from their peers by itself.";

/// Runs the repair command with its arguments (after `repair`); returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match parse(args).and_then(|a| repair(&a)) {
        Ok(report) => {
            println!("{report}");
            0
        }
        Err(e) => {
            eprintln!("shoal-node repair: {e}\n\n{USAGE}");
            1
        }
    }
}

struct Args {
    data_dir: PathBuf,
    collection: String,
    shard: u32,
    uid: Option<u64>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut data_dir, mut collection, mut shard, mut uid) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("{key} needs a value"));
        match key {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--collection" => collection = Some(value()?),
            "--shard" => shard = Some(value()?.parse::<u32>().map_err(|_| "--shard needs a shard number".to_string())?),
            "--uid" => uid = Some(value()?.parse::<u64>().map_err(|_| "--uid needs a number".to_string())?),
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        data_dir: data_dir.ok_or("--data-dir is required")?,
        collection: collection.ok_or("--collection is required")?,
        shard: shard.ok_or("--shard is required")?,
        uid,
    })
}

fn repair(a: &Args) -> Result<String, String> {
    let lock_path = a.data_dir.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        return Err(format!("the node on {} is running: stop it first", a.data_dir.display()));
    }
    let shards = a.data_dir.join("shards");
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&shards)
        .map_err(|e| format!("cannot read {}: {e}", shards.display()))?
        .flatten()
        .filter_map(|d| {
            let name = d.file_name().to_string_lossy().to_string();
            let (coll, uid) = name.rsplit_once('@')?;
            (coll == a.collection).then(|| Some((uid.parse().ok()?, d.path().join(a.shard.to_string()))))?
        })
        .filter(|(uid, _)| a.uid.is_none_or(|u| u == *uid))
        .collect();
    found.sort();
    let (uid, dir) = match found.as_slice() {
        [] => {
            return Err(format!(
                "no replica of shard {} of collection {:?} under {}",
                a.shard,
                a.collection,
                shards.display()
            ));
        }
        [one] => one.clone(),
        many => {
            let uids: Vec<u64> = many.iter().map(|(u, _)| *u).collect();
            return Err(format!(
                "collection {:?} has directories of several incarnations {uids:?}: pass --uid",
                a.collection
            ));
        }
    };
    let log = dir.join("log");
    if !log.is_dir() {
        return Err(format!(
            "{} is missing: the replica's log is gone and nothing can be salvaged; every write of this shard is \
             lost (drop and re-create the collection, or restore a backup)",
            log.display()
        ));
    }
    let ms = shoal_core::hlc::system_ms();
    let backup = a.data_dir.join("damaged").join(format!("{}@{uid}-{}-{ms}-before-repair", a.collection, a.shard));
    copy_dir(&dir, &backup).map_err(|e| format!("backing up {} to {}: {e}", dir.display(), backup.display()))?;

    // The snapshot is the only copy of the entries the log purged: without it nothing before them is known.
    let snaps: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .map(|it| it.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "snap")).collect())
        .unwrap_or_default();
    for s in &snaps {
        if let Err(e) = shoal_raft::verify_snapshot_file(s) {
            return Err(format!(
                "{e}: the snapshot holds every write of the shard up to its index and is the only copy of them; \
                 it cannot be salvaged (backup of the replica: {})",
                backup.display()
            ));
        }
    }
    let r = shoal_raft::salvage(&log).map_err(|e| format!("salvaging {}: {e}", log.display()))?;
    let mut out = format!(
        "repaired shard {} of collection {:?} (uid {uid}) in {}\n  backup of the damaged replica: {}\n",
        a.shard,
        a.collection,
        dir.display(),
        backup.display()
    );
    match &r.first_damage {
        None => out.push_str("  the log verified whole: nothing was lost\n"),
        Some((path, offset, why)) => {
            out.push_str(&format!("  first damage: {} at byte offset {offset}: {why}\n", path.display()));
            let kept = r.kept_last_index.unwrap_or(0);
            out.push_str(&format!("  kept log entries up to index {kept}\n"));
            match r.committed_index {
                Some(c) if c > kept => out.push_str(&format!(
                    "  LOST: log entries {}..={c} were acknowledged (committed) and are gone; entries after {c}, if \
                     any, were never acknowledged\n",
                    kept + 1
                )),
                _ => out.push_str(&format!(
                    "  dropped entries after index {kept}: none of them was saved as committed on this node\n"
                )),
            }
            out.push_str(&format!(
                "  dropped {} bytes; removed {} later segment file(s)\n",
                r.dropped_bytes,
                r.removed_segments.len()
            ));
        }
    }
    if r.vote_reset {
        out.push_str("  the vote file was unreadable and was removed (the shard elects its leader anew)\n");
    }
    out.push_str("  start the node again: the shard serves what was kept");
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}
