//! Retention: events and their snapshots are deleted by age, to keep the store under a size
//! budget, and to keep free space on its disk, oldest first. An event deleted before the core
//! acknowledged it is never lost silently: it is counted (`events_dropped_unsynced`, kept across
//! restarts) and logged.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{lock, Store, StoreError};

/// The most events deleted per transaction: small enough that writers are never held up long.
const BATCH: i64 = 200;

const DROPPED_UNSYNCED: &str = "events_dropped_unsynced";

/// What one pass of [`Store::prune`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    pub events: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Of `events`, those the core had not acknowledged.
    pub unsynced: u64,
}

/// What retention keeps to. Each limit is off when `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events older than this (event time, ms since the Unix epoch) are deleted.
    pub older_than_ms: Option<i64>,
    /// The store (database pages in use plus snapshot bytes) is kept under this.
    pub max_bytes: Option<u64>,
    /// The disk holding the store keeps at least this much free.
    pub min_free_bytes: Option<u64>,
}

impl Store {
    /// Deletes events older than `older_than_ms` (by event time), then the oldest events until
    /// the store fits in `max_bytes` and its disk has `min_free_bytes` free. A snapshot goes
    /// with the last event that names it. Files are removed after their rows are gone, so a
    /// crash leaves at worst orphan files, which `check --repair` removes.
    pub fn prune(&self, limits: Limits) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        if let Some(t) = limits.older_than_ms {
            while self.delete_batch(Some(t), BATCH, &mut report)? {}
        }
        while let Some(max) = limits.max_bytes {
            let size = self.size()?;
            if size <= max {
                break;
            }
            // About as many events as the excess, at the store's average size per event.
            if !self.delete_batch(None, self.events_for(size - max, size)?, &mut report)? {
                break;
            }
        }
        while let Some(min) = limits.min_free_bytes {
            let short = min.saturating_sub(self.disk_free()?);
            if short == 0 {
                break;
            }
            // Deleted rows free pages inside the database file, which it reuses, not space on
            // the disk: only snapshot files give space back. Without any, deleting events gains
            // nothing, and none are deleted.
            let snapshots = self.snapshot_bytes()?;
            if snapshots == 0 {
                break;
            }
            if !self.delete_batch(None, self.events_for(short, snapshots)?, &mut report)? {
                break;
            }
        }
        if report.unsynced > 0 {
            tracing::warn!(
                events = report.unsynced,
                "retention deleted events the core had not received"
            );
        }
        Ok(report)
    }

    /// How many of the oldest events to delete to free about `bytes`, when all events together
    /// hold `total` bytes: at least one, at most a batch.
    fn events_for(&self, bytes: u64, total: u64) -> Result<i64, StoreError> {
        let per_event = (total / self.event_count()?.max(1)).max(1);
        Ok((bytes / per_event + 1).min(BATCH as u64) as i64)
    }

    /// Database pages in use plus blob bytes.
    pub fn size(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.writer);
        let pages: i64 = conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| r.get(0),
        )?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        drop(conn);
        Ok(pages as u64 * page_size as u64 + self.snapshot_bytes()?)
    }

    /// The bytes of every stored blob (snapshot) file.
    fn snapshot_bytes(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.writer);
        let bytes: i64 =
            conn.query_row("SELECT COALESCE(SUM(size), 0) FROM blobs", [], |r| r.get(0))?;
        Ok(bytes as u64)
    }

    fn event_count(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.writer);
        Ok(conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Events retention deleted before the core acknowledged them, since the store was made.
    pub fn dropped_unsynced(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        let n: Option<i64> = conn
            .query_row(
                "SELECT value FROM counters WHERE name = ?1",
                params![DROPPED_UNSYNCED],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// Deletes up to `limit` of the oldest events (older than `before_ms` when given).
    /// Returns whether anything was deleted.
    fn delete_batch(
        &self,
        before_ms: Option<i64>,
        limit: i64,
        report: &mut PruneReport,
    ) -> Result<bool, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let doomed: Vec<(i64, Option<String>, bool)> = {
            let mut stmt = tx.prepare(
                "SELECT e.seq, e.snapshot, o.sent_ms IS NULL FROM events e
                 LEFT JOIN outbox o ON o.event_seq = e.seq
                 WHERE ?1 IS NULL OR e.at_ms < ?1 ORDER BY e.seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before_ms, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if doomed.is_empty() {
            return Ok(false);
        }
        let unsynced = doomed.iter().filter(|d| d.2).count() as i64;
        for (seq, _, _) in &doomed {
            tx.execute("DELETE FROM outbox WHERE event_seq = ?1", params![seq])?;
            tx.execute("DELETE FROM events WHERE seq = ?1", params![seq])?;
        }
        let mut files = Vec::new();
        let mut urns: Vec<&String> = doomed.iter().filter_map(|d| d.1.as_ref()).collect();
        urns.sort();
        urns.dedup();
        for urn in urns {
            if let Some((path, size)) = orphaned_blob(&tx, urn)? {
                tx.execute("DELETE FROM blobs WHERE urn = ?1", params![urn])?;
                files.push(self.blob_dir().join(path));
                report.blobs += 1;
                report.blob_bytes += size;
            }
        }
        if unsynced > 0 {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + ?2",
                params![DROPPED_UNSYNCED, unsynced],
            )?;
        }
        tx.commit()?;
        drop(conn);
        for f in files {
            remove_file(f)?;
        }
        report.events += doomed.len() as u64;
        report.unsynced += unsynced as u64;
        Ok(true)
    }
}

/// The path and size of a blob no remaining event names.
fn orphaned_blob(conn: &Connection, urn: &str) -> Result<Option<(String, u64)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT path, size FROM blobs WHERE urn = ?1
             AND NOT EXISTS (SELECT 1 FROM events WHERE snapshot = ?1)",
            params![urn],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
        )
        .optional()?)
}

/// A file already gone is fine: that is what was wanted.
pub(crate) fn remove_file(path: PathBuf) -> Result<(), StoreError> {
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::Io { path, source: e })
        }
        _ => Ok(()),
    }
}
