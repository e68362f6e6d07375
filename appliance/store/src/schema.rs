use rusqlite::Connection;

use crate::StoreError;

/// Bump when the schema changes, and add the upgrade step to `UPGRADES`.
pub(crate) const VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE blobs (
    urn          TEXT PRIMARY KEY,
    path         TEXT NOT NULL UNIQUE,
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('new', 'update', 'end')),
    stream     TEXT NOT NULL,
    track_id   INTEGER NOT NULL,
    label      TEXT NOT NULL,
    score      REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    frame_w    INTEGER NOT NULL,
    frame_h    INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    snapshot   TEXT REFERENCES blobs (urn)
);
CREATE INDEX events_stream_seq ON events (stream, seq);
CREATE TABLE outbox (
    event_seq  INTEGER PRIMARY KEY REFERENCES events (seq),
    payload    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms    INTEGER
);
CREATE INDEX outbox_unsent ON outbox (event_seq) WHERE sent_ms IS NULL;
";

pub(crate) fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            conn.execute_batch(&format!(
                "BEGIN; {V1} PRAGMA user_version = {VERSION}; COMMIT;"
            ))?;
        }
        VERSION => {}
        found => {
            return Err(StoreError::SchemaVersion {
                found,
                supported: VERSION,
            })
        }
    }
    Ok(())
}
