//! The box's durable store: SQLite (WAL, `synchronous=FULL`) for events, the outbox and the blob
//! index; blob bytes as files under `blobs/`.
//!
//! Discipline (as in Moonfire NVR): a blob is written to a temporary file, fsynced, renamed into
//! place and its directory fsynced *before* its row is inserted, so a row never points at a torn
//! file. An event and its outbox row go in one transaction. Snapshots are taken off the hot path
//! (ADR 0003): an event names its snapshot's URN when it is committed, and the blob's row follows
//! once the file is durable. After a crash the worst cases are an orphan file with no row and an
//! event whose snapshot never landed; [`Store::recover_snapshots`] and `check` resolve both.

mod check;
mod retention;
mod schema;
mod users;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use aegis_domain::{BBox, BlobUrn, Event, EventKind, RuleHit};
use aegis_proto::v1;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

pub use check::CheckReport;
pub use retention::{Limits, PruneReport};
pub use users::Session;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database schema version {found} is not one this build understands ({supported})")]
    SchemaVersion { found: i64, supported: i64 },
    #[error("corrupt row {seq}: {reason}")]
    Corrupt { seq: i64, reason: String },
    #[error("{0} is in use by another process (a running appliance?); stop it first")]
    InUse(PathBuf),
    #[error(
        "{path} is damaged ({reason}) and was left as it is: restore it from a backup, or move \
         it aside to start with an empty store (what it holds then stays in the moved file)"
    )]
    Damaged { path: PathBuf, reason: String },
}

/// Names the database file when SQLite finds it damaged or not a database at all; other errors
/// pass through.
fn damaged(path: &Path) -> impl FnOnce(StoreError) -> StoreError + '_ {
    move |e| match e {
        StoreError::Db(rusqlite::Error::SqliteFailure(f, _))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Damaged {
                path: path.to_owned(),
                reason: rusqlite::Error::SqliteFailure(f, None).to_string(),
            }
        }
        e => e,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A blob whose file is durable on disk but whose row is not yet written.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    pub urn: BlobUrn,
    pub size: u64,
    pub sha256: String,
    pub content_type: &'static str,
    relative_path: String,
}

impl StagedBlob {
    fn new(urn: BlobUrn, bytes: &[u8], content_type: &'static str) -> Self {
        let ext = if content_type == "image/jpeg" {
            "jpg"
        } else {
            "bin"
        };
        let id = urn.id();
        let relative_path = format!("{}/{id}.{ext}", &id[id.len() - 2..]);
        StagedBlob {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            urn,
            content_type,
            relative_path,
        }
    }
}

/// Where a blob's bytes are written before the rename that makes them visible.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.tmp"))
}

/// How many of the newest events start-up recovery looks at: far more than the snapshot queue
/// (8 frames) can hold in flight.
const RECOVERY_WINDOW: i64 = 100_000;

/// Snapshots are the only blobs events name.
const SNAPSHOT_TYPE: &str = "image/jpeg";

/// What start-up recovery did with snapshots a crash interrupted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRecovery {
    /// Files that were complete (renamed into place) but had no row yet: their rows are written.
    pub adopted: usize,
    /// Snapshots with no complete file: unlinked from their events.
    pub lost: usize,
}

/// An event as stored, with its position in the log (the cursor and SSE id).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// Filters and cursor for listing events.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub stream: Option<String>,
    pub label: Option<String>,
    /// Only the events this rule raised.
    pub rule: Option<String>,
    /// Only events at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only events before this time.
    pub until_ms: Option<i64>,
    /// Newest first, strictly older than this seq (the cursor of the previous page).
    pub before: Option<i64>,
    /// Oldest first, strictly newer than this seq (SSE resume).
    pub after: Option<i64>,
    pub limit: usize,
}

/// An event's wire payload waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub seq: i64,
    /// The event id: the bus deduplicates by it and the core applies by it.
    pub id: String,
    /// The v1 wire event, JSON.
    pub payload: String,
}

/// A blob's location and metadata, for serving it.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
}

pub struct Store {
    dir: PathBuf,
    /// Held for the store's life: one process at a time. Start-up recovery and `check` assume
    /// no other writer, and an exclusive lock makes that true.
    _lock: File,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// Snapshots found lost since start-up. A later event of the same object may still name one
    /// (its lifecycle refers to its first snapshot); `commit` leaves it out. Locked only while
    /// `writer` is held, so a commit and a forget never interleave.
    lost: Mutex<HashSet<String>>,
}

/// Lost snapshots remembered; past this the memory starts again (start-up recovery and
/// `check --repair` unlink any that are named after that).
const LOST_REMEMBERED: usize = 10_000;

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: `dir/aegis.db` and `dir/blobs/`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir.join("blobs")).map_err(io_err(dir))?;
        let lock_path = dir.join("aegis.lock");
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse(dir.to_owned()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let db = dir.join("aegis.db");
        let writer = Connection::open(&db)?;
        schema::prepare(&writer).map_err(damaged(&db))?;
        let reader = Connection::open(&db)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store {
            dir: dir.to_owned(),
            _lock: lock_file,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            lost: Mutex::default(),
        })
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    /// Writes a blob durably (temp file, fsync, rename, fsync directory) under a URN chosen by
    /// the caller (events name their snapshot before it exists). The row comes after, in
    /// [`Store::attach_blobs`].
    pub fn stage_blob(
        &self,
        urn: BlobUrn,
        bytes: &[u8],
        content_type: &'static str,
    ) -> Result<StagedBlob, StoreError> {
        let blob = StagedBlob::new(urn, bytes, content_type);
        let dest = self.blob_dir().join(&blob.relative_path);
        let dir = dest.parent().expect("blob paths have a shard directory");
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        if let Err(e) = aegis_base::write_durably(&temp_path(&dest), &dest, bytes) {
            // It may have been renamed into place before the failure; no row will name it.
            let _ = retention::remove_file(dest.clone());
            return Err(io_err(&dest)(e));
        }
        Ok(blob)
    }

    /// Commits events and their outbox rows in one transaction. Returns each event's seq.
    /// A snapshot already found lost is left out of the event.
    pub fn commit(&self, events: &[Event]) -> Result<Vec<i64>, StoreError> {
        let mut conn = lock(&self.writer);
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let mut seqs = Vec::with_capacity(events.len());
        for e in events {
            let unlinked;
            let e = match &e.snapshot {
                Some(urn) if lost.contains(urn.as_str()) => {
                    unlinked = Event {
                        snapshot: None,
                        ..e.clone()
                    };
                    &unlinked
                }
                _ => e,
            };
            tx.execute(
                "INSERT INTO events (id, kind, stream, track_id, label, score, x1, y1, x2, y2, frame_w, frame_h, started_ms, at_ms, snapshot, rule, rule_detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    e.id,
                    e.kind.as_str(),
                    e.stream,
                    e.track_id as i64,
                    e.label,
                    f64::from(e.score),
                    f64::from(e.bbox.x1),
                    f64::from(e.bbox.y1),
                    f64::from(e.bbox.x2),
                    f64::from(e.bbox.y2),
                    e.frame_size.0,
                    e.frame_size.1,
                    e.started_at_ms,
                    e.at_ms,
                    e.snapshot.as_ref().map(BlobUrn::as_str),
                    e.rule.as_ref().map(|r| r.name.as_str()),
                    e.rule.as_ref().map(|r| r.detail.to_string()),
                ],
            )?;
            let seq = tx.last_insert_rowid();
            let payload = serde_json::to_string(&to_wire(e)).expect("v1 events always serialise");
            tx.execute(
                "INSERT INTO outbox (event_seq, payload, created_ms) VALUES (?1, ?2, ?3)",
                params![seq, payload, e.at_ms],
            )?;
            seqs.push(seq);
        }
        tx.commit()?;
        Ok(seqs)
    }

    /// Inserts the rows of blobs staged with [`Store::stage_blob`], in one transaction. If they
    /// cannot be written (a full disk), the staged files are removed: nothing would name them.
    pub fn attach_blobs(&self, blobs: &[StagedBlob], now_ms: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let attached = (|| {
            let tx = conn.transaction()?;
            for b in blobs {
                insert_blob(&tx, b, now_ms)?;
            }
            Ok(tx.commit()?)
        })();
        if attached.is_err() {
            for b in blobs {
                let _ = retention::remove_file(self.blob_dir().join(&b.relative_path));
            }
        }
        attached
    }

    /// Unlinks snapshots that will never land (their encoding or write failed) from the events
    /// that name them, and from those events' outbox payloads not yet sent.
    pub fn forget_snapshots(&self, urns: &[BlobUrn]) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            if lost.len() + urns.len() > LOST_REMEMBERED {
                lost.clear();
            }
            lost.extend(urns.iter().map(|u| u.as_str().to_owned()));
        }
        let tx = conn.transaction()?;
        for urn in urns {
            forget_snapshot(&tx, urn.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// At start-up, before any writer runs: finishes what a crash interrupted between an event
    /// and its snapshot's row. A file that was renamed into place is complete (it was fsynced
    /// first), so its row is written; a torn temporary file is removed and the snapshot
    /// unlinked from its events.
    pub fn recover_snapshots(&self) -> Result<SnapshotRecovery, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let mut recovery = SnapshotRecovery::default();
        // Only the newest events can have snapshots in flight (the snapshot queue holds a few
        // frames), so start-up does not scan the whole history; `check` does.
        let newest: i64 =
            tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
        for (urn, at_ms) in lost_snapshots(&tx, newest - RECOVERY_WINDOW)? {
            let landed = BlobUrn::parse(&urn).ok().and_then(|urn| {
                let blob = StagedBlob::new(urn, &[], SNAPSHOT_TYPE);
                let dest = self.blob_dir().join(&blob.relative_path);
                let _ = std::fs::remove_file(temp_path(&dest));
                let bytes = std::fs::read(&dest).ok()?;
                Some(StagedBlob::new(blob.urn, &bytes, SNAPSHOT_TYPE))
            });
            match landed {
                Some(blob) => {
                    insert_blob(&tx, &blob, at_ms)?;
                    recovery.adopted += 1;
                }
                None => {
                    forget_snapshot(&tx, &urn)?;
                    recovery.lost += 1;
                }
            }
        }
        tx.commit()?;
        Ok(recovery)
    }

    /// The latest event of each object that began among the newest events and never ended:
    /// the objects in view when the appliance last stopped without ending them (a crash, a
    /// kill). An object is its stream, track id and start time (track ids start over with each
    /// run). Oldest first.
    pub fn open_objects(&self) -> Result<Vec<Event>, StoreError> {
        let seqs: Vec<i64> = {
            let conn = lock(&self.reader);
            let mut stmt = conn.prepare(
                "SELECT MAX(seq) FROM events
                 WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events) - ?1
                   AND kind IN ('new', 'update', 'end')
                 GROUP BY stream, track_id, started_ms
                 HAVING SUM(kind = 'new') > 0 AND SUM(kind = 'end') = 0
                 ORDER BY 1",
            )?;
            let seqs = stmt
                .query_map([RECOVERY_WINDOW], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            seqs
        };
        let mut open = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let q = EventQuery {
                after: Some(seq - 1),
                limit: 1,
                ..EventQuery::default()
            };
            open.extend(self.events(&q)?.into_iter().map(|s| s.event));
        }
        Ok(open)
    }

    pub fn events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = lock(&self.reader);
        let (order, cmp, bound) = match (q.after, q.before) {
            (Some(after), _) => ("ASC", ">", after),
            (None, Some(before)) => ("DESC", "<", before),
            (None, None) => ("DESC", "<", i64::MAX),
        };
        let sql = format!(
            "SELECT seq, id, kind, stream, track_id, label, score, x1, y1, x2, y2, frame_w, frame_h, started_ms, at_ms, snapshot, rule, rule_detail
             FROM events WHERE seq {cmp} ?1 AND (?2 IS NULL OR stream = ?2) AND (?3 IS NULL OR label = ?3)
             AND (?5 IS NULL OR rule = ?5) AND (?6 IS NULL OR at_ms >= ?6) AND (?7 IS NULL OR at_ms < ?7)
             ORDER BY seq {order} LIMIT ?4"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                bound,
                q.stream,
                q.label,
                q.limit as i64,
                q.rule,
                q.since_ms,
                q.until_ms
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    [
                        r.get::<_, f64>(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ],
                    (r.get::<_, u32>(11)?, r.get::<_, u32>(12)?),
                    (r.get::<_, i64>(13)?, r.get::<_, i64>(14)?),
                    r.get::<_, Option<String>>(15)?,
                    (
                        r.get::<_, Option<String>>(16)?,
                        r.get::<_, Option<String>>(17)?,
                    ),
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (
                seq,
                id,
                kind,
                stream,
                track_id,
                label,
                f,
                frame_size,
                (started, at),
                snapshot,
                rule,
            ) = row?;
            let corrupt = |reason: String| StoreError::Corrupt { seq, reason };
            out.push(StoredEvent {
                seq,
                event: Event {
                    id,
                    kind: EventKind::parse(&kind)
                        .ok_or_else(|| corrupt(format!("kind {kind:?}")))?,
                    stream,
                    track_id: track_id as u64,
                    label,
                    score: f[0] as f32,
                    bbox: BBox::new(f[1] as f32, f[2] as f32, f[3] as f32, f[4] as f32),
                    frame_size,
                    started_at_ms: started,
                    at_ms: at,
                    snapshot: snapshot
                        .map(|s| BlobUrn::parse(&s).map_err(|e| corrupt(e.to_string())))
                        .transpose()?,
                    rule: match rule {
                        (Some(name), detail) => Some(RuleHit {
                            name,
                            detail: serde_json::from_str(detail.as_deref().unwrap_or("null"))
                                .map_err(|e| corrupt(format!("rule detail: {e}")))?,
                        }),
                        (None, _) => None,
                    },
                },
            });
        }
        Ok(out)
    }

    pub fn blob(&self, urn: &BlobUrn) -> Result<Option<BlobInfo>, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn
            .query_row(
                "SELECT path, size, sha256, content_type FROM blobs WHERE urn = ?1",
                params![urn.as_str()],
                |r| {
                    Ok(BlobInfo {
                        path: self.blob_dir().join(r.get::<_, String>(0)?),
                        size: r.get::<_, i64>(1)? as u64,
                        sha256: r.get(2)?,
                        content_type: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Up to `limit` outbox entries not yet handed to the sync bus, oldest first.
    pub fn unsent(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT o.event_seq, e.id, o.payload FROM outbox o JOIN events e ON e.seq = o.event_seq
             WHERE o.sent_ms IS NULL ORDER BY o.event_seq LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(OutboxEntry {
                seq: r.get(0)?,
                id: r.get(1)?,
                payload: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that the bus acknowledged these entries (by event seq), in one transaction.
    pub fn mark_sent(&self, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET sent_ms = ?2 WHERE event_seq = ?1 AND sent_ms IS NULL",
            )?;
            for seq in seqs {
                stmt.execute(params![seq, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Events not yet handed to the sync bus.
    pub fn outbox_backlog(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Bytes free for an unprivileged writer on the store's file system.
    pub fn disk_free(&self) -> Result<u64, StoreError> {
        let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())
            .map_err(|e| io_err(&self.dir)(std::io::Error::other(e)))?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `path` is NUL-terminated and `st` is writable memory of the right type.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io_err(&self.dir)(std::io::Error::last_os_error()));
        }
        // SAFETY: statvfs succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        // The field types are 32 bits wide on some targets (32-bit ARM boxes), 64 on others.
        #[allow(clippy::unnecessary_cast)]
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// The highest event seq, for SSE clients that start now.
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }
}

fn insert_blob(conn: &Connection, b: &StagedBlob, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO blobs (urn, path, size, sha256, content_type, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![b.urn.as_str(), b.relative_path, b.size as i64, b.sha256, b.content_type, now_ms],
    )?;
    Ok(())
}

/// Snapshot URNs that events after `after_seq` name but no blob row backs, with the time of the
/// first such event.
fn lost_snapshots(conn: &Connection, after_seq: i64) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT e.snapshot, MIN(e.at_ms) FROM events e LEFT JOIN blobs b ON b.urn = e.snapshot
         WHERE e.seq > ?1 AND e.snapshot IS NOT NULL AND b.urn IS NULL
         GROUP BY e.snapshot ORDER BY e.snapshot",
    )?;
    let urns = stmt
        .query_map([after_seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(urns)
}

fn forget_snapshot(conn: &Connection, urn: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE outbox SET payload = json_remove(payload, '$.snapshot')
         WHERE sent_ms IS NULL AND event_seq IN (SELECT seq FROM events WHERE snapshot = ?1)",
        params![urn],
    )?;
    conn.execute(
        "UPDATE events SET snapshot = NULL WHERE snapshot = ?1",
        params![urn],
    )?;
    Ok(())
}

fn to_wire(e: &Event) -> v1::Event {
    v1::Event {
        schema: v1::EVENT_SCHEMA.to_owned(),
        id: e.id.clone(),
        kind: e.kind.as_str().to_owned(),
        stream: e.stream.clone(),
        track_id: e.track_id,
        label: e.label.clone(),
        score: e.score,
        bbox: [e.bbox.x1, e.bbox.y1, e.bbox.x2, e.bbox.y2],
        frame_size: [e.frame_size.0, e.frame_size.1],
        started_at_ms: e.started_at_ms,
        at_ms: e.at_ms,
        snapshot: e.snapshot.as_ref().map(ToString::to_string),
        rule: e.rule.as_ref().map(|r| v1::RuleHit {
            name: r.name.clone(),
            detail: r.detail.clone(),
        }),
    }
}
