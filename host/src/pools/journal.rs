//! The pools' files in the data folder: an append-only journal of [`Record`]s and a snapshot,
//! the scheme of Redis's AOF with rewrite. Chosen over an embedded database because the
//! store's whole job is "append these records, then one fsync for all of them" (group
//! commit), and the state is already an in-memory structure that a database would only
//! duplicate; a journal does that in one `write` and one `fdatasync` per batch.
//!
//! - `LOCK`: held (advisory lock) while a host uses the folder, so two hosts never share it.
//! - `journal-<n>.log`: frames `[len: u32 LE][crc32: u32 LE][seq: u64 LE][record JSON]`,
//!   the CRC over seq and JSON; `seq` counts records from 1 over the folder's life. The file
//!   is extended with zeros ahead of the frames, a [`Sizes::preallocate`] step at a time, so
//!   that a commit overwrites blocks the file already has: `fdatasync` then flushes only the
//!   data, not the file's size and block map as well (half the disk writes per commit). Zeros
//!   where a frame header should be end the file's records. The extending is done ahead of
//!   need by the [`keeper`](super::keeper), off the commit path.
//! - `snapshot.json`: the whole state at some `seq`, and the first journal to replay after
//!   it; replaced atomically (write, fsync, rename, fsync the folder).
//!
//! Each commit (one batch of frames, one fdatasync) starts with a marker frame (seq 0), so
//! recovery can tell a torn last batch from damage to a synced one: batches are synced one
//! after another, so a bad frame with a valid marker somewhere after it was in a synced batch.
//!
//! Recovery loads the snapshot and replays the journals from the one it names, in order,
//! requiring consecutive seqs. The last batch of the last journal may be torn (the host or
//! the machine died mid-write, and a disk may have kept any part of the write): from its first
//! bad frame on it is dropped, because that batch was never synced and so never answered. A
//! bad frame with a later batch after it, a gap, or a record that does not fit the state is
//! corruption and stops the start with an error naming the file and offset: never a silent
//! reset.

use super::record::Record;
use super::state::{Snapshot, State};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// How large journals grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// A journal is rolled into a new snapshot once it holds this many bytes of frames (and
    /// [`JOURNAL_PER_SNAPSHOT`] times the latest snapshot).
    roll_at: u64,
    /// How far a journal is extended with zeros at a time.
    preallocate: u64,
}

impl Sizes {
    /// The smallest journal a host may roll at.
    pub(crate) const MIN_ROLL_BYTES: u64 = 64 << 10;

    /// Journals rolled at `roll_at` bytes (at least [`Self::MIN_ROLL_BYTES`]), extended a
    /// sixteenth of that at a time, between 64 KiB and 4 MiB.
    #[must_use]
    pub(crate) fn rolling_at(roll_at: u64) -> Sizes {
        let roll_at = roll_at.max(Self::MIN_ROLL_BYTES);
        Sizes {
            roll_at,
            preallocate: (roll_at / 16).clamp(64 << 10, 4 << 20),
        }
    }

    /// When a journal is rolled into a snapshot, the latest snapshot being `snapshot_bytes`
    /// long: at the roll size, or at [`JOURNAL_PER_SNAPSHOT`] times the snapshot if that is
    /// more.
    pub(crate) fn roll_at(self, snapshot_bytes: u64) -> u64 {
        self.roll_at
            .max(snapshot_bytes.saturating_mul(JOURNAL_PER_SNAPSHOT))
    }
}

/// A journal is rolled only once it holds at least this many times the latest snapshot's
/// bytes, so writing snapshots costs at most half as much disk and keeper time as the journal
/// itself, however large the state grows (the rule of Redis's `auto-aof-rewrite-percentage
/// 100`). With a fixed roll size alone, a state whose snapshot outgrows the journal would be
/// snapshotted more often than it changes, each roll holding operations up a little longer;
/// the cost is a start-up replay of at most twice the state.
pub(crate) const JOURNAL_PER_SNAPSHOT: u64 = 2;

impl Default for Sizes {
    /// Rolled at 64 MiB, extended 4 MiB at a time.
    fn default() -> Sizes {
        Sizes::rolling_at(64 << 20)
    }
}

/// Zeros are written, and synced, this much at a time when a journal is extended: a commit's
/// `fdatasync` running meanwhile finds at most this much of them not yet on disk.
const ZERO_CHUNK_BYTES: u64 = 256 << 10;

/// The largest record a journal may hold; a longer length field is corruption.
const MAX_RECORD_BYTES: usize = 64 << 20;

const HEADER_BYTES: usize = 16;

/// The snapshot format this host writes; it reads every format from 1 up to it. A folder's
/// snapshot is rewritten at every start, so a folder this host has opened names this format,
/// and an older host that cannot read the records refuses it by its format at once.
///
/// 1. Grant records spell out every option.
/// 2. Grant records leave out the options a grant does not have (deadline, release on
///    disconnect, request id).
const SNAPSHOT_FORMAT: u32 = 2;

/// Why the data folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("data folder: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Another host holds the folder.
    #[error("data folder {0} is in use by another resman host")]
    Locked(PathBuf),
    /// The folder was written by a newer host, in a format this one cannot read.
    #[error(
        "data folder: {path} was written by a newer resman (snapshot format {format}; this one \
         reads formats 1 to {SNAPSHOT_FORMAT}): run that version or a later one"
    )]
    Newer {
        /// The snapshot.
        path: PathBuf,
        /// Its format.
        format: u32,
    },
    /// A file holds something that cannot be right.
    #[error("data folder: {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The snapshot file.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    /// The last seq the snapshot includes.
    seq: u64,
    /// The first journal to replay after it.
    journal: u64,
    state: Snapshot,
}

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) state: State,
    /// The last seq in the folder.
    pub(crate) seq: u64,
    /// The next journal number to use.
    pub(crate) next_journal: u64,
    /// Records replayed from journals.
    pub(crate) replayed: u64,
    /// Bytes of a torn last record that were dropped.
    pub(crate) torn_bytes: u64,
}

/// An open data folder, locked for this host.
#[derive(Debug)]
pub(crate) struct Folder {
    path: PathBuf,
    _lock: File,
}

impl Folder {
    /// Opens (creating) and locks the folder.
    pub(crate) fn open(path: &Path) -> Result<Folder, StoreError> {
        fs::create_dir_all(path).map_err(io_error(path))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(path.to_owned())),
            Err(fs::TryLockError::Error(err)) => return Err(io_error(&lock_path)(err)),
        }
        Ok(Folder {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn snapshot_path(&self) -> PathBuf {
        self.path.join("snapshot.json")
    }

    fn journal_path(&self, number: u64) -> PathBuf {
        self.path.join(format!("journal-{number:08}.log"))
    }

    /// The journal numbers present, ascending.
    fn journals(&self) -> Result<Vec<u64>, StoreError> {
        let mut numbers = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_error(&self.path))? {
            let entry = entry.map_err(io_error(&self.path))?;
            let name = entry.file_name();
            let number = name
                .to_str()
                .and_then(|name| name.strip_prefix("journal-"))
                .and_then(|rest| rest.strip_suffix(".log"))
                .and_then(|digits| digits.parse::<u64>().ok());
            numbers.extend(number);
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Loads the snapshot and replays the journals after it.
    pub(crate) fn recover(&self) -> Result<Recovered, StoreError> {
        let snapshot_path = self.snapshot_path();
        let (mut state, mut seq, first_journal) = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let corrupt = |reason: String| StoreError::Corrupt {
                    path: snapshot_path.clone(),
                    offset: 0,
                    reason,
                };
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|err| corrupt(err.to_string()))?;
                if file.format > SNAPSHOT_FORMAT {
                    return Err(StoreError::Newer {
                        path: snapshot_path,
                        format: file.format,
                    });
                }
                if file.format == 0 {
                    return Err(corrupt("unknown format 0".into()));
                }
                let state = State::restore(file.state).map_err(corrupt)?;
                (state, file.seq, file.journal)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => (State::default(), 0, 0),
            Err(err) => return Err(io_error(&snapshot_path)(err)),
        };
        let journals: Vec<u64> = self
            .journals()?
            .into_iter()
            .filter(|&n| n >= first_journal)
            .collect();
        // A torn tail is allowed in the last journal that holds a frame: a journal without
        // one after it was created by a start or roll that stopped before writing to it.
        let written = journals
            .iter()
            .rposition(|&number| holds_frames(&self.journal_path(number)));
        let (mut replayed, mut torn_bytes) = (0, 0);
        for (index, &number) in journals.iter().enumerate() {
            let path = self.journal_path(number);
            let bytes = fs::read(&path).map_err(io_error(&path))?;
            let last = written.is_none_or(|written| index >= written);
            let read = replay(&bytes, last, &mut state, &mut seq).map_err(|(offset, reason)| {
                StoreError::Corrupt {
                    path: path.clone(),
                    offset,
                    reason,
                }
            })?;
            replayed += read.records;
            torn_bytes += read.torn_bytes;
        }
        let next_journal = journals.last().map_or(first_journal, |n| n + 1);
        Ok(Recovered {
            state,
            seq,
            next_journal,
            replayed,
            torn_bytes,
        })
    }

    /// Writes `state` as the snapshot at `seq`, replaying from journal `journal` on, and
    /// removes the journals before that one. Returns the snapshot's size in bytes.
    pub(crate) fn write_snapshot(
        &self,
        mut state: Snapshot,
        seq: u64,
        journal: u64,
    ) -> Result<u64, StoreError> {
        state.sort();
        let file = SnapshotFile {
            format: SNAPSHOT_FORMAT,
            seq,
            journal,
            state,
        };
        let path = self.snapshot_path();
        let temp = self.path.join("snapshot.json.tmp");
        let bytes = serde_json::to_vec(&file).expect("a snapshot serializes");
        let mut out = File::create(&temp).map_err(io_error(&temp))?;
        out.write_all(&bytes).map_err(io_error(&temp))?;
        out.sync_all().map_err(io_error(&temp))?;
        fs::rename(&temp, &path).map_err(io_error(&path))?;
        self.sync()?;
        for number in self.journals()? {
            if number < journal {
                let old = self.journal_path(number);
                fs::remove_file(&old).map_err(io_error(&old))?;
            }
        }
        Ok(bytes.len() as u64)
    }

    /// Creates journal `number`, empty, for appending, with its first step of zeros.
    pub(crate) fn create_journal(&self, number: u64, sizes: Sizes) -> Result<Journal, StoreError> {
        let path = self.journal_path(number);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let file = Arc::new(JournalFile {
            file,
            path,
            step: sizes.preallocate,
            room: Mutex::new(Room::default()),
            grown: Condvar::new(),
        });
        file.reserve(1)?;
        self.sync()?;
        Ok(Journal {
            file,
            number,
            len: 0,
        })
    }

    /// Makes the folder's entries (new and renamed files) durable.
    fn sync(&self) -> Result<(), StoreError> {
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.path))
    }
}

/// Why a commit did not happen.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// The file could not be extended to hold the frames (the disk is full, say), so none
    /// of them was written: the same commit may be tried again once there is room.
    NoRoom(StoreError),
    /// Writing or syncing the frames failed: what reached the disk is unknown.
    Failed(StoreError),
}

/// The journal being appended to, by the committer.
#[derive(Debug)]
pub(crate) struct Journal {
    file: Arc<JournalFile>,
    pub(crate) number: u64,
    /// Bytes of frames written.
    pub(crate) len: u64,
}

impl Journal {
    /// Appends a commit's frames and makes them durable: one write and one fdatasync. Waits
    /// for (or makes) room first if the zeros ahead ran out.
    pub(crate) fn commit(&mut self, commit: &Commit) -> Result<(), CommitError> {
        debug_assert!(holds_marker(&commit.frames[..MARKER_FRAME_BYTES]));
        self.append(&commit.frames)
    }

    /// Writes `bytes` as they are (frames with their markers, or not), for tests that build
    /// files frame by frame.
    #[cfg(test)]
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> Result<(), CommitError> {
        self.append(bytes)
    }

    /// Writes `bytes` after the frames, then one fdatasync.
    fn append(&mut self, bytes: &[u8]) -> Result<(), CommitError> {
        let reserved = self.file.reserve(self.len + bytes.len() as u64);
        reserved.map_err(CommitError::NoRoom)?;
        let file = &self.file.file;
        let written = file
            .write_all_at(bytes, self.len)
            .and_then(|()| file.sync_data())
            .map_err(io_error(&self.file.path));
        written.map_err(CommitError::Failed)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The file, to be extended by one step ([`JournalFile::extend`]), once less than half a
    /// step of zeros is left ahead of the frames; `None` while an extending is asked for or
    /// under way, or after one failed (the disk is full, say) until one succeeds.
    pub(crate) fn wants_room(&self) -> Option<Arc<JournalFile>> {
        let mut room = self.file.lock();
        let low = room.allocated.saturating_sub(self.len) < self.file.step / 2;
        (low && !room.asked && !room.extending && !room.failed).then(|| {
            room.asked = true;
            Arc::clone(&self.file)
        })
    }
}

/// A journal's file, shared by the committer that appends frames and the keeper that extends
/// it with zeros ahead of them. Frames are written at their offsets (`pwrite`), so the two
/// never share a cursor.
#[derive(Debug)]
pub(crate) struct JournalFile {
    file: File,
    path: PathBuf,
    /// How far the file is extended at a time.
    step: u64,
    room: Mutex<Room>,
    /// Signalled when an extending ends.
    grown: Condvar,
}

#[derive(Debug, Default)]
struct Room {
    /// Bytes the file has, frames then zeros, all durable.
    allocated: u64,
    /// An extending was asked for by [`Journal::wants_room`] and has not started.
    asked: bool,
    /// Someone is writing zeros to the file; what they write is not room yet.
    extending: bool,
    /// The last extending failed: the keeper is not asked again (it would only fail and
    /// warn at every commit) until one succeeds, the committer's own when it runs out.
    failed: bool,
}

impl JournalFile {
    /// Extends the file by a step of zeros, as [`Journal::wants_room`] asked; nothing if
    /// the committer, out of room, is extending it already.
    pub(crate) fn extend(&self) -> Result<(), StoreError> {
        let mut room = self.lock();
        room.asked = false;
        if room.extending {
            return Ok(());
        }
        room.extending = true;
        let from = room.allocated;
        drop(room);
        self.finish_growing(from, from + self.step)
    }

    /// Waits until the file has `len` bytes, extending it here unless someone is writing
    /// zeros already (an extending only asked for is not waited for: the keeper may be busy
    /// with a snapshot).
    fn reserve(&self, len: u64) -> Result<(), StoreError> {
        let mut room = self.lock();
        loop {
            if room.allocated >= len {
                return Ok(());
            }
            if !room.extending {
                break;
            }
            room = self
                .grown
                .wait(room)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        room.extending = true;
        let from = room.allocated;
        drop(room);
        self.finish_growing(from, len.next_multiple_of(self.step))
    }

    /// Writes zeros from `from` to `to`, a synced chunk at a time, then records the new size
    /// and ends the extending (also when it failed, so that a waiter tries for itself).
    fn finish_growing(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let zeros = vec![0; ZERO_CHUNK_BYTES as usize];
        let mut at = from;
        let mut written = Ok(());
        while at < to && written.is_ok() {
            let chunk = (to - at).min(ZERO_CHUNK_BYTES);
            written = self
                .file
                .write_all_at(&zeros[..chunk as usize], at)
                .and_then(|()| self.file.sync_data());
            at += chunk;
        }
        let mut room = self.lock();
        if written.is_ok() {
            room.allocated = room.allocated.max(to);
        }
        room.failed = written.is_err();
        room.extending = false;
        drop(room);
        self.grown.notify_all();
        written.map_err(io_error(&self.path))
    }

    fn lock(&self) -> MutexGuard<'_, Room> {
        self.room
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The payload of the marker frame that starts every commit.
const MARKER: &[u8] = b"commit";

/// The size of the marker frame.
const MARKER_FRAME_BYTES: usize = HEADER_BYTES + MARKER.len();

/// A commit being gathered: the marker frame that starts every commit, then the frames of
/// the records that operations made since the last one, encoded by each operation as it
/// ran. Encoding where records are made, rather than on the committer, keeps the records
/// (and the shared names they hold) on the thread that made them: the committer only swaps
/// the buffer and writes it.
#[derive(Debug)]
pub(crate) struct Commit {
    frames: Vec<u8>,
    records: usize,
}

impl Default for Commit {
    fn default() -> Self {
        let mut frames = Vec::new();
        start_commit(&mut frames);
        Commit { frames, records: 0 }
    }
}

impl Commit {
    /// Appends `record`'s frame with `seq`.
    pub(crate) fn push(&mut self, seq: u64, record: &Record) {
        encode(seq, record, &mut self.frames);
        self.records += 1;
    }

    /// How many records it holds.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// Whether it holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The bytes of its frames, records only (the marker left out).
    pub(crate) fn record_bytes(&self) -> usize {
        self.frames.len() - MARKER_FRAME_BYTES
    }

    /// Empties it back to its marker, keeping its allocation.
    pub(crate) fn clear(&mut self) {
        self.frames.truncate(MARKER_FRAME_BYTES);
        self.records = 0;
    }
}

/// Appends the marker frame that starts every commit (seq 0, payload [`MARKER`]) to `out`.
fn start_commit(out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(MARKER.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(MARKER);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The marker frame alone, for tests that build journals frame by frame.
#[cfg(test)]
pub(crate) fn marker_frame() -> Vec<u8> {
    let mut frame = Vec::with_capacity(MARKER_FRAME_BYTES);
    start_commit(&mut frame);
    frame
}

/// Whether `bytes` hold a valid marker frame anywhere: a commit that started after them.
fn holds_marker(bytes: &[u8]) -> bool {
    let size = MARKER_FRAME_BYTES;
    (0..bytes.len().saturating_sub(size - 1)).any(|at| {
        let frame = &bytes[at..at + size];
        frame[0..4] == (MARKER.len() as u32).to_le_bytes()
            && frame[8..16] == [0; 8]
            && frame[HEADER_BYTES..] == *MARKER
            && crc32fast::hash(&frame[8..]).to_le_bytes() == frame[4..8]
    })
}

/// Appends `record`'s frame with `seq` to `out`.
pub(crate) fn encode(seq: u64, record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&seq.to_le_bytes());
    record.write_json(out);
    let len = (out.len() - start - HEADER_BYTES) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

struct Replayed {
    records: u64,
    torn_bytes: u64,
}

/// Whether a journal holds a frame: one that holds none is empty or all zeros (see
/// [`Sizes::preallocate`]). A file that cannot be read counts as holding one, so that reading
/// it reports the error.
fn holds_frames(path: &Path) -> bool {
    let mut head = [0; HEADER_BYTES];
    let read = File::open(path).and_then(|mut file| file.read(&mut head));
    read.map_or(true, |n| head[..n].iter().any(|&b| b != 0))
}

/// Replays one journal's frames onto `state`; `last` allows a torn tail. Errors carry the
/// offset of the bad frame.
fn replay(
    bytes: &[u8],
    last: bool,
    state: &mut State,
    seq: &mut u64,
) -> Result<Replayed, (u64, String)> {
    let mut offset = 0;
    let mut records = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        // A frame that does not read back: the torn end of the last batch, unless a later
        // batch follows it (then it was synced, and damaged since).
        let bad = |reason: &str| -> Result<Replayed, (u64, String)> {
            if last && !holds_marker(&rest[1..]) {
                // Count the bytes of the torn write, not the zeros after it.
                let written = rest.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
                Ok(Replayed {
                    records,
                    torn_bytes: written as u64,
                })
            } else {
                Err((offset as u64, reason.to_owned()))
            }
        };
        if rest.len() < HEADER_BYTES {
            return bad("a frame header is cut short");
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 && rest.iter().all(|&b| b == 0) {
            // The zeros the journal is extended with: the end of its records.
            break;
        }
        if len > MAX_RECORD_BYTES {
            return bad(&format!("a frame claims {len} bytes"));
        }
        let end = HEADER_BYTES + len;
        if rest.len() < end {
            return bad("a frame is cut short");
        }
        if crc32fast::hash(&rest[8..end]) != crc {
            return bad("checksum mismatch");
        }
        let record_seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        if record_seq == 0 {
            // A commit's marker.
            offset += end;
            continue;
        }
        if record_seq <= *seq {
            // Already in the snapshot (a crash between snapshot and journal removal).
            offset += end;
            continue;
        }
        if record_seq != *seq + 1 {
            return Err((
                offset as u64,
                format!("record {record_seq} follows record {seq}"),
            ));
        }
        let record: Record = serde_json::from_slice(&rest[HEADER_BYTES..end])
            .map_err(|err| (offset as u64, format!("unreadable record: {err}")))?;
        state
            .apply(&record)
            .map_err(|reason| (offset as u64, reason))?;
        *seq = record_seq;
        records += 1;
        offset += end;
    }
    Ok(Replayed {
        records,
        torn_bytes: 0,
    })
}
