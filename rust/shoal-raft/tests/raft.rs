//! Integration tests of shoal-raft: openraft's storage conformance Suite on our log store and
//! state machine, log store recovery (reopen, torn tail, corruption, purge), and RaftGroup
//! durability across clean stops, snapshots and crashes (including a real `kill -9`), and
//! (in `raft/multi_node.rs`) three-node groups over the gRPC transport.

#[path = "raft/multi_node.rs"]
mod multi_node;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use parking_lot::Mutex;
use shoal_raft::Command;
use shoal_raft::Error;
use shoal_raft::GroupOptions;
use shoal_raft::LogStore;
use shoal_raft::LogStoreOptions;
use shoal_raft::RaftGroup;
use shoal_raft::StateMachineApp;
use shoal_raft::StateMachineStore;
use shoal_raft::TypeConfig;
use shoal_raft::types::Entry;
use shoal_raft::types::EntryPayload;
use shoal_raft::types::LeaderId;
use shoal_raft::types::LogId;
use shoal_raft::types::Membership;
use shoal_raft::types::Vote;
use shoal_testkit::TempDir;

// ---------------------------------------------------------------------------------------------
// A toy app: a key-value map. Command = `key \0 value`; reply = the command's log index.

#[derive(Default)]
struct KvApp {
    /// The applied state: key -> value.
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

fn kv_command(key: &str, value: &[u8]) -> Vec<u8> {
    let mut c = key.as_bytes().to_vec();
    c.push(0);
    c.extend_from_slice(value);
    c
}

impl StateMachineApp for KvApp {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let split = command.iter().position(|b| *b == 0).expect("kv command has a separator");
        let key = String::from_utf8(command[..split].to_vec()).expect("utf-8 key");
        self.map.lock().insert(key, command[split + 1..].to_vec());
        index.to_le_bytes().to_vec()
    }

    fn snapshot(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let map = self.map.lock();
        w.write_all(&(map.len() as u64).to_le_bytes())?;
        for (k, v) in map.iter() {
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(k.as_bytes())?;
            w.write_all(&(v.len() as u32).to_le_bytes())?;
            w.write_all(v)?;
        }
        Ok(())
    }

    fn restore(&self, _index: u64, r: &mut dyn Read) -> std::io::Result<()> {
        let mut n = [0u8; 8];
        r.read_exact(&mut n)?;
        let mut map = BTreeMap::new();
        for _ in 0..u64::from_le_bytes(n) {
            let mut l = [0u8; 4];
            r.read_exact(&mut l)?;
            let mut k = vec![0u8; u32::from_le_bytes(l) as usize];
            r.read_exact(&mut k)?;
            r.read_exact(&mut l)?;
            let mut v = vec![0u8; u32::from_le_bytes(l) as usize];
            r.read_exact(&mut v)?;
            map.insert(String::from_utf8(k).expect("utf-8 key"), v);
        }
        *self.map.lock() = map;
        Ok(())
    }
}

impl KvApp {
    fn snapshot_map(&self) -> BTreeMap<String, Vec<u8>> {
        self.map.lock().clone()
    }
}

fn key(i: u64) -> String {
    format!("k{i:06}")
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// openraft's storage conformance Suite.

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new("raft-suite");
        let to_sto = |e: Error| StorageError::read(TypeConfig::err_from_string(e.to_string()));
        let log = LogStore::open_with(
            &dir.path().join("log"),
            // Small segments so that the Suite's purges and truncations cross segment files.
            LogStoreOptions { segment_bytes: 200 },
        )
        .map_err(to_sto)?;
        let sm = StateMachineStore::open(&dir.path().join("snapshots"), Arc::new(KvApp::default())).map_err(to_sto)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("openraft storage Suite");
}

// ---------------------------------------------------------------------------------------------
// LogStore recovery.

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: 1 }, index)
}

fn normal(term: u64, index: u64, bytes: Vec<u8>) -> Entry {
    Entry::new_normal(lid(term, index), Command(bytes))
}

fn payload_of(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; (i as usize * 37) % 700 + 1]
}

async fn append_range(log: &mut LogStore, term: u64, range: std::ops::Range<u64>) {
    let entries: Vec<Entry> = range.map(|i| normal(term, i, payload_of(i))).collect();
    log.blocking_append(entries).await.expect("append");
}

async fn read_all(log: &mut LogStore) -> Vec<Entry> {
    log.get_log_reader().await.try_get_log_entries(..).await.expect("read")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn small_segments() -> LogStoreOptions {
    LogStoreOptions { segment_bytes: 4096 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_reopen_sees_everything() {
    let dir = TempDir::new("raft");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open_with(&path, small_segments()).unwrap();
        log.blocking_append([Entry::new_blank(lid(1, 0))]).await.unwrap();
        let membership = Membership::new_with_defaults(vec![[1u64, 2, 3].into()], [4u64]);
        log.blocking_append([Entry::new_membership(lid(1, 1), membership)]).await.unwrap();
        append_range(&mut log, 2, 2..300).await;
        assert!(log.segment_count() > 3, "small segments roll");
        log.close();
    }
    let mut log = LogStore::open_with(&path, small_segments()).unwrap();
    let entries = read_all(&mut log).await;
    assert_eq!(entries.len(), 300);
    assert_eq!(entries[0].payload, EntryPayload::Blank);
    match &entries[1].payload {
        EntryPayload::Membership(m) => {
            assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
            assert_eq!(m.learner_ids().collect::<Vec<_>>(), vec![4]);
        }
        p => panic!("expected a membership entry, got {p:?}"),
    }
    for (i, e) in entries.iter().enumerate().skip(2) {
        assert_eq!(e.log_id, lid(2, i as u64));
        assert_eq!(e.payload, EntryPayload::Normal(Command(payload_of(i as u64))));
    }
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(lid(2, 299)));
    assert_eq!(st.last_purged_log_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_vote_and_committed_round_trip() {
    let dir = TempDir::new("raft");
    let path = dir.path().join("log");
    let vote = Vote::new_committed(7, 3);
    {
        let mut log = LogStore::open(&path).unwrap();
        assert_eq!(log.get_log_reader().await.read_vote().await.unwrap(), None);
        append_range(&mut log, 7, 0..10).await;
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(lid(7, 8))).await.unwrap();
        log.close();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(log.get_log_reader().await.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(lid(7, 8)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_second_open_of_a_directory_is_refused() {
    let dir = TempDir::new("raft");
    let log = LogStore::open(dir.path()).unwrap();
    assert!(matches!(LogStore::open(dir.path()), Err(Error::Locked(_))));
    log.close();
    LogStore::open(dir.path()).expect("reopen after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_torn_tail_is_truncated() {
    let dir = TempDir::new("raft");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open(&path).unwrap();
        append_range(&mut log, 1, 0..50).await;
        log.close();
    }
    // A record cut short: the last entry is gone, everything before it survives.
    let seg = segments(&path).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
    {
        let mut log = LogStore::open(&path).unwrap();
        let entries = read_all(&mut log).await;
        assert_eq!(entries.len(), 49);
        assert_eq!(entries.last().unwrap().log_id, lid(1, 48));
        // The log continues after the repaired tail.
        append_range(&mut log, 2, 49..60).await;
        log.close();
    }
    // Garbage after the last record (a torn write of a new record): dropped.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xAB; 5]).unwrap();
    f.write_all(&u32::MAX.to_le_bytes()).unwrap();
    drop(f);
    let mut log = LogStore::open(&path).unwrap();
    let entries = read_all(&mut log).await;
    assert_eq!(entries.len(), 60);
    assert_eq!(entries.last().unwrap().log_id, lid(2, 59));
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.payload, EntryPayload::Normal(Command(payload_of(i as u64))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_corruption_in_the_middle_is_an_error() {
    let dir = TempDir::new("raft");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open_with(&path, small_segments()).unwrap();
        append_range(&mut log, 1, 0..100).await;
        log.close();
    }
    let segs = segments(&path);
    assert!(segs.len() >= 3);

    // A flipped byte in the middle of the last segment, with valid records after it.
    let last = segs.last().unwrap();
    let mut data = std::fs::read(last).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    std::fs::write(last, &data).unwrap();
    match LogStore::open_with(&path, small_segments()) {
        Err(Error::Corrupt { reason, .. }) => {
            assert!(reason.contains("followed by a valid record"), "{reason}")
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a store"),
    }
    data[mid] ^= 0x55;
    std::fs::write(last, &data).unwrap();

    // A sealed (older) segment cut short.
    let first = &segs[0];
    let len = std::fs::metadata(first).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(first).unwrap().set_len(len - 10).unwrap();
    match LogStore::open_with(&path, small_segments()) {
        Err(Error::Corrupt { reason, .. }) => {
            assert!(reason.contains("sealed segment"), "{reason}")
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a store"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_purge_and_truncate_survive_reopen() {
    let dir = TempDir::new("raft");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open_with(&path, small_segments()).unwrap();
        append_range(&mut log, 1, 0..200).await;
        let before = segments(&path).len();
        log.purge(lid(1, 150)).await.unwrap();
        let after = segments(&path).len();
        assert!(after < before, "purge deletes whole segments ({before} -> {after})");
        log.truncate_after(Some(lid(1, 180))).await.unwrap();
        append_range(&mut log, 2, 181..190).await;
        log.close();
    }
    let mut log = LogStore::open_with(&path, small_segments()).unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(lid(1, 150)));
    assert_eq!(st.last_log_id, Some(lid(2, 189)));
    let entries = read_all(&mut log).await;
    assert_eq!(entries.first().unwrap().log_id, lid(1, 151));
    assert_eq!(entries.len(), 39);
    assert_eq!(entries[30].log_id, lid(2, 181));

    // Purge past the last entry: the log is empty and continues after the purge point.
    log.purge(lid(3, 250)).await.unwrap();
    append_range(&mut log, 3, 251..253).await;
    log.close();
    drop(log);
    let mut log = LogStore::open_with(&path, small_segments()).unwrap();
    let st = log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(lid(3, 250)));
    assert_eq!(st.last_log_id, Some(lid(3, 252)));
    let ids: Vec<LogId> = read_all(&mut log).await.iter().map(|e| e.log_id).collect();
    assert_eq!(ids, vec![lid(3, 251), lid(3, 252)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_with_a_hole_is_rejected_whole() {
    let dir = TempDir::new("raft");
    let mut log = LogStore::open(dir.path()).unwrap();
    append_range(&mut log, 1, 0..5).await;
    let bad = vec![normal(1, 5, vec![5]), normal(1, 7, vec![7])];
    assert!(log.blocking_append(bad).await.is_err());
    assert_eq!(read_all(&mut log).await.len(), 5, "a rejected batch changes nothing");
    append_range(&mut log, 1, 5..8).await;
    assert_eq!(read_all(&mut log).await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_large_entry_round_trip() {
    let dir = TempDir::new("raft");
    let path = dir.path().join("log");
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    {
        let mut log = LogStore::open(&path).unwrap();
        log.blocking_append([normal(1, 0, vec![1]), normal(1, 1, big.clone()), normal(1, 2, vec![2])]).await.unwrap();
        log.close();
    }
    let mut log = LogStore::open(&path).unwrap();
    let entries = read_all(&mut log).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1].payload, EntryPayload::Normal(Command(big)));
    let limited = log.get_log_reader().await.limited_get_log_entries(0, 3).await.unwrap();
    assert!(!limited.is_empty());
}

// ---------------------------------------------------------------------------------------------
// StateMachineStore snapshots.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restored_at_open_and_damage_detected() {
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::RaftStateMachine;

    let dir = TempDir::new("raft");
    let path = dir.path().join("snapshots");
    let app = Arc::new(KvApp::default());
    let mut sm = StateMachineStore::open(&path, app.clone()).unwrap();
    let membership = Membership::new_with_defaults(vec![[1u64].into()], []);
    let mut entries = vec![Entry::new_membership(lid(1, 0), membership)];
    entries.extend((1..=20).map(|i| normal(1, i, kv_command(&key(i), &value(i)))));
    let items = entries.into_iter().map(|e| Ok((e, None)));
    sm.apply(futures::stream::iter(items)).await.unwrap();
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(lid(1, 20)));
    assert_eq!(snap.meta.last_membership.log_id(), &Some(lid(1, 0)));
    drop(sm);

    let app2 = Arc::new(KvApp::default());
    let mut sm = StateMachineStore::open(&path, app2.clone()).unwrap();
    assert_eq!(app2.snapshot_map(), expected(1..21));
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(1, 20)));
    assert_eq!(mem.voter_ids().collect::<Vec<_>>(), vec![1]);
    drop(sm);

    // One flipped byte in the app data: refused at open, never restored silently.
    let file = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let at = data.len() - 10;
    data[at] ^= 0x01;
    std::fs::write(&file, &data).unwrap();
    match StateMachineStore::open(&path, Arc::new(KvApp::default())) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("checksum"), "{reason}"),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a store"),
    }
}

// ---------------------------------------------------------------------------------------------
// RaftGroup.

fn fast_opts() -> GroupOptions {
    GroupOptions { snapshot_every: 1_000_000, ..GroupOptions::default() }
}

const WAIT: Duration = Duration::from_secs(10);

async fn open_group(dir: &Path, app: Arc<KvApp>, opts: GroupOptions) -> RaftGroup {
    let g = RaftGroup::open(dir, 1, "127.0.0.1:7301".into(), app, opts).await.expect("open group");
    g.wait_leader(WAIT).await.expect("leader");
    g
}

async fn write_kv(g: &RaftGroup, range: std::ops::Range<u64>) {
    let mut last = 0u64;
    for i in range {
        let reply = g.write(kv_command(&key(i), &value(i))).await.expect("write");
        let index = u64::from_le_bytes(reply.try_into().expect("8-byte reply"));
        assert!(index > last, "reply is the command's log index");
        last = index;
    }
}

fn expected(range: std::ops::Range<u64>) -> BTreeMap<String, Vec<u8>> {
    range.map(|i| (key(i), value(i))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_write_shutdown_reopen() {
    let dir = TempDir::new("raft");
    let app = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app.clone(), fast_opts()).await;
    assert!(g.is_leader());
    assert_eq!(g.leader_id(), Some(1));
    write_kv(&g, 0..1000).await;
    g.ensure_linearizable().await.unwrap();
    assert_eq!(app.snapshot_map(), expected(0..1000));
    let applied = g.applied_index();
    assert!(applied >= 1000, "applied index {applied}");
    g.shutdown().await.unwrap();
    assert!(matches!(g.write(kv_command("x", b"y")).await, Err(Error::Shutdown)));
    drop(g);

    let app2 = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app2.clone(), fast_opts()).await;
    assert_eq!(app2.snapshot_map(), expected(0..1000));
    assert!(g.applied_index() > applied, "new term's blank entry applied");
    write_kv(&g, 1000..1010).await;
    assert_eq!(app2.snapshot_map(), expected(0..1010));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_snapshot_purge_reopen() {
    let dir = TempDir::new("raft");
    let opts = GroupOptions { snapshot_every: 100, log_segment_bytes: 8 << 10, ..GroupOptions::default() };
    let app = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app.clone(), opts.clone()).await;
    write_kv(&g, 0..1000).await;
    g.raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 900) && m.purged.is_some_and(|p| p.index >= 800),
            "snapshot built and log purged",
        )
        .await
        .expect("snapshot and purge");
    let seg_count = segments(&dir.path().join("log")).len();
    g.shutdown().await.unwrap();
    drop(g);
    let snaps: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert_eq!(snaps.len(), 1, "only the latest snapshot is kept");
    assert!(seg_count < 10, "purged segments are deleted ({seg_count} left)");

    // Reopen with an empty app: the snapshot is restored at open, the log after it re-applied.
    let app2 = Arc::new(KvApp::default());
    let g = RaftGroup::open(dir.path(), 1, "127.0.0.1:7301".into(), app2.clone(), opts.clone()).await.unwrap();
    assert!(app2.snapshot_map().len() >= 800, "restored from the snapshot at open");
    g.wait_leader(WAIT).await.unwrap();
    assert_eq!(app2.snapshot_map(), expected(0..1000));
    write_kv(&g, 1000..1100).await;
    assert_eq!(app2.snapshot_map(), expected(0..1100));
    g.shutdown().await.unwrap();
    drop(g);

    // Damage: a byte flipped in the snapshot is corruption naming the file; the file is left as found.
    let snap = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&snap, &bytes).unwrap();
    let open = |app| RaftGroup::open(dir.path(), 1, "127.0.0.1:7301".into(), app, opts.clone());
    match open(Arc::new(KvApp::default())).await {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, snap),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a group"),
    }
    assert_eq!(std::fs::read(&snap).unwrap(), bytes);
    // ... and a deleted snapshot, which the purged log needs, too.
    std::fs::remove_file(&snap).unwrap();
    match open(Arc::new(KvApp::default())).await {
        Err(Error::Corrupt { path, reason }) => {
            assert_eq!(path, dir.path().join("snapshots"));
            assert!(reason.contains("purged up to index"), "{reason}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a group"),
    }
}

#[test]
fn group_crash_without_shutdown_then_torn_tail() {
    let dir = TempDir::new("raft");
    // "Crash": the runtime running the group is torn down without RaftGroup::shutdown.
    {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let app = Arc::new(KvApp::default());
            let g = open_group(dir.path(), app, fast_opts()).await;
            write_kv(&g, 0..300).await;
            drop(g); // no shutdown: the runtime is torn down under the group
        });
        rt.shutdown_timeout(Duration::from_secs(5));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let app = Arc::new(KvApp::default());
        let g = open_group(dir.path(), app.clone(), fast_opts()).await;
        assert_eq!(app.snapshot_map(), expected(0..300), "every acknowledged write survives");
        g.shutdown().await.unwrap();
    });

    // Damage after a clean stop: the last segment loses its last bytes. It looks like a torn write, but the
    // node had saved those entries as committed (acknowledged): corruption, reported, and nothing changed.
    let seg = segments(&dir.path().join("log")).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();
    rt.block_on(async {
        let app = Arc::new(KvApp::default());
        match RaftGroup::open(dir.path(), 1, "127.0.0.1:7301".into(), app, fast_opts()).await {
            Err(Error::Corrupt { path, reason }) => {
                assert_eq!(path, seg);
                assert!(reason.contains("at offset") && reason.contains("committed entries"), "{reason}");
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, got a group"),
        }
    });
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len - 5, "the damaged file is left as found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_drop_without_shutdown_then_reopen() {
    let dir = TempDir::new("raft");
    let app = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app, fast_opts()).await;
    write_kv(&g, 0..50).await;
    drop(g); // stops in the background
    let app2 = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app2.clone(), fast_opts()).await;
    assert_eq!(app2.snapshot_map(), expected(0..50));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_concurrent_writes() {
    let dir = TempDir::new("raft");
    let app = Arc::new(KvApp::default());
    let g = Arc::new(open_group(dir.path(), app.clone(), fast_opts()).await);
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let g = g.clone();
            tokio::spawn(async move { write_kv(&g, t * 100..t * 100 + 100).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(app.snapshot_map(), expected(0..800));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_large_command() {
    let dir = TempDir::new("raft");
    let app = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app.clone(), fast_opts()).await;
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8 + 1).collect();
    g.write(kv_command("big", &big)).await.unwrap();
    g.shutdown().await.unwrap();
    drop(g);
    let app2 = Arc::new(KvApp::default());
    let g = open_group(dir.path(), app2.clone(), fast_opts()).await;
    assert_eq!(app2.snapshot_map().get("big"), Some(&big));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_not_bootstrapped_is_not_leader() {
    let dir = TempDir::new("raft");
    let opts = GroupOptions { bootstrap_single: false, ..fast_opts() };
    let g = RaftGroup::open(dir.path(), 1, "127.0.0.1:7301".into(), Arc::new(KvApp::default()), opts).await.unwrap();
    assert!(!g.is_leader());
    match g.write(kv_command("a", b"b")).await {
        Err(Error::NotLeader { leader: None, .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(matches!(g.ensure_linearizable().await, Err(Error::NotLeader { .. })));
    assert!(matches!(g.wait_leader(Duration::from_millis(300)).await, Err(Error::Timeout(_))));
    g.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// kill -9: a child process (this test binary, running `kill9_child`) writes and reports each
// acknowledged write; the parent SIGKILLs it mid-stream, reopens, and checks every ack.

const CHILD_DIR_ENV: &str = "SHOAL_RAFT_KILL9_DIR";

#[test]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // only runs as the child of `group_survives_kill_9`
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let app = Arc::new(KvApp::default());
        let opts = GroupOptions { snapshot_every: 200, log_segment_bytes: 256 << 10, ..GroupOptions::default() };
        let g = open_group(Path::new(&dir), app, opts).await;
        let mut out = std::io::stdout();
        for i in 0..1_000_000u64 {
            // Values of varying size, up to 64 KiB, so the kill often lands inside a write.
            let v = vec![(i % 200) as u8 + 1; (i as usize * 7919) % (64 << 10) + 1];
            g.write(kv_command(&key(i), &v)).await.expect("child write");
            writeln!(out, "ACK {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn group_survives_kill_9() {
    let dir = TempDir::new("raft");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["kill9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Option<u64> = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            let n: u64 = n.trim().parse().unwrap();
            acked = Some(n);
            if n >= 700 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = acked.expect("the child acknowledged writes");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let app = Arc::new(KvApp::default());
        let opts = GroupOptions { snapshot_every: 200, log_segment_bytes: 256 << 10, ..GroupOptions::default() };
        let g = open_group(dir.path(), app.clone(), opts).await;
        let map = app.snapshot_map();
        for i in 0..=acked {
            let v = map.get(&key(i)).unwrap_or_else(|| panic!("acknowledged write {i} lost"));
            assert_eq!(v.len(), (i as usize * 7919) % (64 << 10) + 1);
        }
        g.shutdown().await.unwrap();
    });
}
