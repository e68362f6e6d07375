//! `aegis check`: verifies the store's invariants and repairs what is safe to repair.

use std::path::{Path, PathBuf};

use rusqlite::params;
use sha2::{Digest, Sha256};

use crate::{forget_snapshot, io_err, lock, lost_snapshots, Store, StoreError};

/// What `check` found (and, with repair, fixed).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct CheckReport {
    pub integrity: String,
    pub events: u64,
    pub blobs_checked: u64,
    /// Blob rows whose file is gone.
    pub missing_blobs: Vec<String>,
    /// Blob rows whose file has the wrong size or hash.
    pub corrupt_blobs: Vec<String>,
    /// Files under `blobs/` with no row: leftovers of a crash between file and row.
    pub orphan_files: Vec<PathBuf>,
    /// Snapshots that events name but that never landed (a crash between the event and its
    /// blob). Repair unlinks them from their events.
    pub lost_snapshots: Vec<String>,
    /// Must always be zero: events and outbox rows are written together.
    pub events_without_outbox: u64,
    pub repaired: bool,
}

impl CheckReport {
    /// Nothing wrong (after repair, if repair ran).
    pub fn is_clean(&self) -> bool {
        self.integrity == "ok"
            && self.events_without_outbox == 0
            && (self.repaired
                || (self.missing_blobs.is_empty()
                    && self.corrupt_blobs.is_empty()
                    && self.lost_snapshots.is_empty()
                    && self.orphan_files.is_empty()))
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl Store {
    /// Checks every invariant. With `repair`: orphan and temporary files are deleted, rows of
    /// blobs whose bytes are lost or damaged are removed, and lost snapshots are unlinked (their
    /// events are kept, without a snapshot). Events are never deleted.
    ///
    /// It runs on a stopped appliance only (the store's lock refuses a second process): a
    /// running one has snapshots in flight, whose files and rows are briefly apart.
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let mut conn = lock(&self.writer);
        let mut report = CheckReport {
            integrity: conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?,
            events: conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64,
            events_without_outbox: conn.query_row(
                "SELECT COUNT(*) FROM events e LEFT JOIN outbox o ON o.event_seq = e.seq WHERE o.event_seq IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64,
            lost_snapshots: lost_snapshots(&conn, 0)?
                .into_iter()
                .map(|(urn, _)| urn)
                .collect(),
            ..Default::default()
        };
        let blob_dir = self.blob_dir();
        let mut known = std::collections::HashSet::new();
        let mut damaged_files = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT urn, path, size, sha256 FROM blobs")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                let (urn, rel, size, sha) = row?;
                report.blobs_checked += 1;
                let path = blob_dir.join(&rel);
                known.insert(path.clone());
                match std::fs::read(&path) {
                    Err(_) => report.missing_blobs.push(urn),
                    Ok(bytes) => {
                        if bytes.len() as i64 != size || hex::encode(Sha256::digest(&bytes)) != sha
                        {
                            report.corrupt_blobs.push(urn);
                            damaged_files.push(path);
                        }
                    }
                }
            }
        }
        let mut files = Vec::new();
        walk(&blob_dir, &mut files)?;
        report.orphan_files = files.into_iter().filter(|f| !known.contains(f)).collect();
        report.orphan_files.sort();

        if repair {
            for f in report.orphan_files.iter().chain(&damaged_files) {
                std::fs::remove_file(f).map_err(io_err(f))?;
            }
            let tx = conn.transaction()?;
            for urn in report.missing_blobs.iter().chain(&report.corrupt_blobs) {
                forget_snapshot(&tx, urn)?;
                tx.execute("DELETE FROM blobs WHERE urn = ?1", params![urn])?;
            }
            for urn in &report.lost_snapshots {
                forget_snapshot(&tx, urn)?;
            }
            tx.commit()?;
            report.repaired = true;
        }
        Ok(report)
    }
}
