//! The journal and snapshot files: what recovery keeps, drops and refuses.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn journal_path(folder: &Folder, number: u64) -> PathBuf {
    folder.path().join(format!("journal-{number:08}.log"))
}

/// The records of a little of everything, and the state they build.
fn workload() -> (State, Vec<Record>) {
    let mut t = TestState::new();
    t.add("p", &["r0", "r1", "r2", "r3"]);
    let first = t.grant(1, AcquireRequest::count("p", 2).ttl_ms(60_000));
    let once = t.grant(2, AcquireRequest::count("p", 1).request_id("once"));
    t.state.kv_set("plugin", "k", "v", &mut t.log).unwrap();
    t.release(first.id).unwrap();
    t.state.renew(once.id, 5_000, t.now, &mut t.log).unwrap();
    t.add("q", &["s0"]);
    let both = AcquireRequest::of(vec![Want::count("p", 1), Want::ids("q", ["s0"])]);
    t.grant(3, both.release_on_disconnect());
    t.release(once.id).unwrap();
    assert!(t.log.len() >= 8);
    (t.state, t.log)
}

/// Frames for `records` numbered from `first_seq`, each committed on its own (after a commit
/// marker), and where each record's frame starts.
fn frames(records: &[Record], first_seq: u64) -> (Vec<u8>, Vec<usize>) {
    let (mut bytes, mut starts) = (Vec::new(), Vec::new());
    for (seq, record) in (first_seq..).zip(records) {
        bytes.extend_from_slice(&journal::marker_frame());
        starts.push(bytes.len());
        journal::encode(seq, record, &mut bytes);
    }
    (bytes, starts)
}

fn replayed(records: &[Record]) -> State {
    let mut state = State::default();
    for record in records {
        state.apply(record).expect("records of a live run apply");
    }
    state
}

fn write_journal(folder: &Folder, number: u64, bytes: &[u8]) {
    let mut journal = folder.create_journal(number, Sizes::default()).unwrap();
    journal.write_raw(bytes).unwrap();
    assert_eq!(journal.len, bytes.len() as u64);
}

/// A folder with one journal holding `records`.
fn folder_with(dir: &Path, records: &[Record]) -> (Folder, Vec<u8>, Vec<usize>) {
    let folder = Folder::open(dir).unwrap();
    let (bytes, starts) = frames(records, 1);
    write_journal(&folder, 0, &bytes);
    (folder, bytes, starts)
}

fn corrupt_at(err: StoreError) -> (PathBuf, u64) {
    match err {
        StoreError::Corrupt { path, offset, .. } => (path, offset),
        other => panic!("expected corruption, got {other}"),
    }
}

/// The workload's state and records, and what recovering a folder of its journal gives.
fn recovered_workload(dir: &Path) -> (State, Vec<Record>, journal::Recovered) {
    let (state, records) = workload();
    let (folder, _, _) = folder_with(dir, &records);
    let recovered = folder.recover().unwrap();
    (state, records, recovered)
}

#[test]
fn a_journal_recovers_the_state_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let (state, records, recovered) = recovered_workload(dir.path());
    assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
    assert_eq!(recovered.seq, records.len() as u64);
    assert_eq!(
        (recovered.replayed, recovered.torn_bytes),
        (records.len() as u64, 0)
    );
    assert_eq!(recovered.next_journal, 1);
    assert!(recovered.state.check().is_ok());
}

#[test]
fn a_recovered_lease_shares_its_names_with_its_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records, recovered) = recovered_workload(dir.path());
    drop(records);
    let lease = recovered.state.holdings()[&("q".to_owned(), "s0".to_owned())];
    let view = recovered.state.view(lease).unwrap();
    let grant = view
        .grants
        .iter()
        .find(|grant| &*grant.pool == "q")
        .unwrap();
    // Each name is held by the pool's map (as key and in its entry) and by the lease, not
    // by a copy of its own.
    assert_eq!(Arc::strong_count(&grant.id), 3, "resource id {}", grant.id);
    assert!(Arc::strong_count(&grant.pool) >= 2, "pool {}", grant.pool);
}

/// A journal's file as it can be found: the frames alone, or followed by the zeros the
/// journal was extended with ahead of them.
fn layouts(bytes: &[u8]) -> [Vec<u8>; 2] {
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len() + 4096, 0);
    [bytes.to_vec(), padded]
}

#[test]
fn a_last_frame_cut_anywhere_is_dropped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let (folder, bytes, starts) = folder_with(dir.path(), &records);
    let kept = &records[..records.len() - 1];
    let expected = snapshot_text(&replayed(kept));
    let last = *starts.last().unwrap();
    for cut in last..bytes.len() {
        for file in layouts(&bytes[..cut]) {
            let what = format!("cut at {cut} of a {}-byte file", file.len());
            fs::write(journal_path(&folder, 0), &file).unwrap();
            let recovered = folder
                .recover()
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(recovered.seq, kept.len() as u64, "{what}");
            assert!(recovered.torn_bytes <= (cut - last) as u64, "{what}");
            assert_eq!(snapshot_text(&recovered.state), expected, "{what}");
        }
    }
}

#[test]
fn a_last_frame_with_a_flipped_bit_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let (folder, bytes, starts) = folder_with(dir.path(), &records);
    let last = *starts.last().unwrap();
    // The seq, then the first, a middle and the last byte of the record.
    for at in [
        last + 8,
        last + 16,
        (last + bytes.len()) / 2,
        bytes.len() - 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        for file in layouts(&damaged) {
            let what = format!("flip at {at} of a {}-byte file", file.len());
            fs::write(journal_path(&folder, 0), &file).unwrap();
            let recovered = folder
                .recover()
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(recovered.seq, records.len() as u64 - 1, "{what}");
            assert_eq!(recovered.torn_bytes, (bytes.len() - last) as u64, "{what}");
        }
    }
}

/// Zeros after the frames are the room a journal is extended with, or a crash's hole.
#[test]
fn zeros_after_the_frames_end_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (state, records) = workload();
    let (folder, bytes, _) = folder_with(dir.path(), &records);
    for zeros in [1, 15, 16, 4096] {
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + zeros, 0);
        fs::write(journal_path(&folder, 0), &padded).unwrap();
        let recovered = folder.recover().unwrap();
        assert_eq!(recovered.seq, records.len() as u64, "{zeros} zeros");
        assert_eq!(recovered.torn_bytes, 0, "{zeros} zeros are no torn write");
        assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
    }
}

#[test]
fn a_damaged_frame_before_the_last_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let (folder, bytes, starts) = folder_with(dir.path(), &records);
    let mut damaged = bytes.clone();
    damaged[starts[2] + 20] ^= 0x01;
    fs::write(journal_path(&folder, 0), &damaged).unwrap();
    let err = folder.recover().unwrap_err();
    assert!(err.to_string().contains("journal-00000000.log"), "{err}");
    assert_eq!(
        corrupt_at(err),
        (journal_path(&folder, 0), starts[2] as u64)
    );
}

#[test]
fn a_damaged_tail_of_a_journal_before_the_last_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let folder = Folder::open(dir.path()).unwrap();
    let split = records.len() / 2;
    let (older, starts) = frames(&records[..split], 1);
    write_journal(&folder, 0, &older);
    write_journal(&folder, 1, &frames(&records[split..], split as u64 + 1).0);
    assert_eq!(folder.recover().unwrap().seq, records.len() as u64);
    let mut flipped = older.clone();
    *flipped.last_mut().unwrap() ^= 0x01;
    let cut = older[..older.len() - 1].to_vec();
    let last = *starts.last().unwrap() as u64;
    for file in [flipped, cut].iter().flat_map(|damaged| layouts(damaged)) {
        fs::write(journal_path(&folder, 0), &file).unwrap();
        let err = folder.recover().unwrap_err();
        assert_eq!(corrupt_at(err), (journal_path(&folder, 0), last));
    }
}

/// What `Pools::open` leaves when it stops between creating its journal and writing
/// the snapshot: the torn tail is still the last thing ever written.
#[test]
fn a_torn_tail_followed_only_by_an_empty_journal_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let (folder, bytes, _) = folder_with(dir.path(), &records);
    fs::write(journal_path(&folder, 0), &bytes[..bytes.len() - 3]).unwrap();
    folder.create_journal(1, Sizes::default()).unwrap();
    let recovered = folder.recover().unwrap();
    assert_eq!(recovered.seq, records.len() as u64 - 1);
    assert_eq!(recovered.next_journal, 2);
}

#[test]
fn a_record_that_does_not_fit_the_state_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, _, starts) = folder_with(dir.path(), &[Record::Release { lease: 42 }]);
    let (path, offset) = corrupt_at(folder.recover().unwrap_err());
    assert_eq!((path, offset), (journal_path(&folder, 0), starts[0] as u64));
}

#[test]
fn a_torn_write_that_kept_a_later_part_of_its_batch_is_dropped() {
    // One commit of three records; the disk kept the marker, the first frame and the
    // last, but not the middle one (a power cut mid-write may keep any part).
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let folder = Folder::open(dir.path()).unwrap();
    let mut bytes = journal::marker_frame();
    let mut starts = Vec::new();
    for (seq, record) in (1..).zip(&records[..3]) {
        starts.push(bytes.len());
        journal::encode(seq, record, &mut bytes);
    }
    bytes[starts[1]..starts[2]].fill(0);
    write_journal(&folder, 0, &bytes);
    let recovered = folder.recover().unwrap();
    assert_eq!(
        recovered.seq, 1,
        "the first record is kept, the rest of the batch dropped"
    );
    assert!(recovered.torn_bytes > 0);

    // The same damage with a later commit after it was synced before that commit: corrupt.
    let (later, _) = frames(&records[3..4], 4);
    bytes.extend_from_slice(&later);
    fs::write(journal_path(&folder, 0), &bytes).unwrap();
    let (_, offset) = corrupt_at(folder.recover().unwrap_err());
    assert_eq!(offset, starts[1] as u64);
}

#[test]
fn a_gap_in_the_seqs_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (_, records) = workload();
    let folder = Folder::open(dir.path()).unwrap();
    let (mut bytes, _) = frames(&records[..1], 1);
    let gap = bytes.len() as u64;
    journal::encode(3, &records[1], &mut bytes);
    write_journal(&folder, 0, &bytes);
    assert_eq!(
        corrupt_at(folder.recover().unwrap_err()),
        (journal_path(&folder, 0), gap)
    );
}

/// The snapshot is taken under the lock in the state's own (hash) order and put in order
/// only when written: the file must list pools by name, each pool's free resources in grant
/// order then its held ones by id, and leases by id, and read back as the same state.
#[test]
fn a_written_snapshot_is_in_order_and_reads_back_as_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = TestState::new();
    let ids: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    t.add("q", &ids);
    t.add("p", &["x"]);
    let leases: Vec<_> = (0..30)
        .map(|i| {
            t.grant(
                i,
                AcquireRequest::count("q", 1).request_id(format!("job-{i}")),
            )
        })
        .collect();
    for lease in leases.iter().step_by(3) {
        t.release(lease.id).unwrap();
    }
    let free_order = t.free("q");
    let folder = Folder::open(dir.path()).unwrap();
    folder.write_snapshot(t.state.snapshot(), 1, 0).unwrap();

    let text = fs::read(folder.path().join("snapshot.json")).unwrap();
    let file: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let pools = file["state"]["pools"].as_array().unwrap();
    let names: Vec<&str> = pools.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["p", "q"]);
    let listed: Vec<&str> = (pools[1]["resources"].as_array().unwrap().iter())
        .map(|r| r[0].as_str().unwrap())
        .collect();
    let mut held: Vec<&str> = (leases.iter().enumerate())
        .filter(|(i, _)| i % 3 != 0)
        .flat_map(|(_, lease)| lease.grants.iter().map(|grant| &*grant.id))
        .collect();
    held.sort_unstable();
    assert_eq!(
        listed[..free_order.len()],
        free_order[..],
        "free ones, in grant order"
    );
    assert_eq!(
        listed[free_order.len()..],
        held[..],
        "then the held ones, by id"
    );
    let lease_ids: Vec<u64> = (file["state"]["leases"].as_array().unwrap().iter())
        .map(|l| l["lease"].as_u64().unwrap())
        .collect();
    assert!(
        lease_ids.is_sorted() && lease_ids.len() == 20,
        "{lease_ids:?}"
    );

    let snapshot: Snapshot = serde_json::from_value(file["state"].clone()).unwrap();
    let restored = State::restore(snapshot).unwrap();
    assert_eq!(snapshot_text(&restored), snapshot_text(&t.state));
}

/// A snapshot shares what it can with the state (plugin stores, lease grants); what changes
/// after it is taken must not reach it.
#[test]
fn changes_after_a_snapshot_do_not_reach_it() {
    let mut t = TestState::new();
    t.add("p", &["r0"]);
    let lease = t.grant(1, AcquireRequest::count("p", 1));
    t.state.kv_set("plugin", "k", "before", &mut t.log).unwrap();
    let snapshot = t.state.snapshot();
    t.state.kv_set("plugin", "k", "after", &mut t.log).unwrap();
    t.state.kv_set("plugin", "new", "x", &mut t.log).unwrap();
    t.release(lease.id).unwrap();

    let restored = State::restore(snapshot).unwrap();
    assert_eq!(restored.kv_get("plugin", "k").as_deref(), Some("before"));
    assert_eq!(restored.kv_get("plugin", "new"), None);
    assert!(
        restored.lease(lease.id).is_ok(),
        "the lease is held in the snapshot"
    );
    assert_eq!(t.state.kv_get("plugin", "k").as_deref(), Some("after"));
}

/// A folder holding only a snapshot of the workload's state: the folder, the state, the
/// snapshot's path and its JSON, for tests to rewrite. The folder lasts as long as `_dir`
/// is kept.
struct WrittenSnapshot {
    _dir: tempfile::TempDir,
    folder: Folder,
    state: State,
    path: PathBuf,
    good: serde_json::Value,
}

fn written_snapshot() -> WrittenSnapshot {
    let dir = tempfile::tempdir().unwrap();
    let (state, records) = workload();
    let folder = Folder::open(dir.path()).unwrap();
    folder
        .write_snapshot(state.snapshot(), records.len() as u64, 0)
        .unwrap();
    let path = folder.path().join("snapshot.json");
    let good = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    WrittenSnapshot {
        _dir: dir,
        folder,
        state,
        path,
        good,
    }
}

#[test]
fn a_corrupt_snapshot_is_an_error_naming_it() {
    let WrittenSnapshot {
        _dir: _kept,
        folder,
        path,
        good,
        ..
    } = written_snapshot();
    let mut unknown = good.clone();
    unknown["format"] = 0.into();
    let mut impossible = good.clone();
    impossible["state"]["leases"][0]["resources"][0][1] = "nowhere".into();
    let texts = [
        b"{\"format\": 1, \"seq\"".to_vec(),
        unknown.to_string().into(),
        impossible.to_string().into(),
    ];
    for text in texts {
        fs::write(&path, &text).unwrap();
        assert_eq!(corrupt_at(folder.recover().unwrap_err()).0, path);
    }
}

/// A snapshot of a later format is refused as a newer host's, by name and not as corruption;
/// one of the first format, whose grant records spell out every option, still reads.
#[test]
fn a_snapshot_is_read_by_its_format() {
    let WrittenSnapshot {
        _dir: _kept,
        folder,
        state,
        path,
        good,
    } = written_snapshot();
    assert_eq!(good["format"], 2);

    let mut newer = good.clone();
    newer["format"] = 3.into();
    fs::write(&path, newer.to_string()).unwrap();
    let err = folder.recover().unwrap_err();
    assert!(
        matches!(&err, StoreError::Newer { path: named, format: 3 } if *named == path),
        "{err}"
    );
    assert!(err.to_string().contains("newer resman"), "{err}");

    let mut first = good.clone();
    first["format"] = 1.into();
    for lease in first["state"]["leases"].as_array_mut().unwrap() {
        for option in ["expires_at_ms", "request_id"] {
            lease
                .as_object_mut()
                .unwrap()
                .entry(option)
                .or_insert(serde_json::Value::Null);
        }
        lease
            .as_object_mut()
            .unwrap()
            .entry("on_disconnect")
            .or_insert(false.into());
    }
    fs::write(&path, first.to_string()).unwrap();
    let recovered = folder.recover().unwrap().state;
    assert_eq!(snapshot_text(&recovered), snapshot_text(&state));
}

#[test]
fn a_locked_folder_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().unwrap();
    let folder = Folder::open(dir.path()).unwrap();
    let second = Folder::open(dir.path()).unwrap_err();
    assert!(
        matches!(&second, StoreError::Locked(path) if path == dir.path()),
        "{second}"
    );
    drop(folder);
    assert!(
        Folder::open(dir.path()).is_ok(),
        "the lock goes with the folder"
    );
}

#[test]
fn a_snapshot_and_the_journals_after_it_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (state, records) = workload();
    let split = records.len() / 2;
    let (folder, _, _) = folder_with(dir.path(), &records[..split]);
    let snapshot = replayed(&records[..split]).snapshot();
    folder.write_snapshot(snapshot, split as u64, 1).unwrap();
    assert!(
        !journal_path(&folder, 0).exists(),
        "the snapshot replaces journal 0"
    );
    write_journal(&folder, 1, &frames(&records[split..], split as u64 + 1).0);
    let recovered = folder.recover().unwrap();
    assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
    assert_eq!(recovered.seq, records.len() as u64);
    assert_eq!(
        (recovered.replayed, recovered.next_journal),
        ((records.len() - split) as u64, 2)
    );
}

/// A crash between writing a snapshot and removing the journal it covers.
#[test]
fn records_the_snapshot_covers_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (state, records) = workload();
    let (folder, _, _) = folder_with(dir.path(), &records);
    let split = 3;
    let snapshot = replayed(&records[..split]).snapshot();
    folder.write_snapshot(snapshot, split as u64, 0).unwrap();
    let recovered = folder.recover().unwrap();
    assert_eq!(snapshot_text(&recovered.state), snapshot_text(&state));
    assert_eq!(recovered.replayed, (records.len() - split) as u64);
}

/// A journal is extended a step ahead when it runs low (the keeper's job), and by the
/// committer itself when it runs out first; either way what follows the frames reads as
/// zeros, the end of the records.
#[test]
fn a_journal_grows_ahead_of_its_frames_and_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let folder = Folder::open(dir.path()).unwrap();
    let sizes = Sizes::rolling_at(Sizes::MIN_ROLL_BYTES);
    let mut journal = folder.create_journal(0, sizes).unwrap();
    let size = || fs::metadata(journal_path(&folder, 0)).unwrap().len();
    let step = size();
    let marker = journal::marker_frame();
    while journal.len < step / 2 {
        assert!(
            journal.wants_room().is_none(),
            "room left at {}",
            journal.len
        );
        journal.write_raw(&marker).unwrap();
    }
    let asked = journal.wants_room().expect("low on room");
    assert!(journal.wants_room().is_none(), "asked once");
    while journal.len <= step {
        journal.write_raw(&marker).unwrap();
    }
    assert_eq!(size(), 2 * step, "extended by the writer that ran out");
    asked.extend().unwrap();
    assert_eq!(size(), 3 * step, "extended as asked");
    let recovered = folder.recover().unwrap();
    assert_eq!((recovered.seq, recovered.torn_bytes), (0, 0));
}
