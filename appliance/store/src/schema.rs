use rusqlite::Connection;

use crate::StoreError;

/// The schema as first shipped, then one step per version. A new store runs them all, so the
/// upgrade path is exercised on every start-up of a fresh box, not only on old ones.
const STEPS: [&str; 6] = [V1, V2, V3, V4, V5, V6];

/// The version this build writes: the number of steps.
pub(crate) const VERSION: i64 = STEPS.len() as i64;

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

/// v2: events name their snapshot before its blob row exists (ADR 0003), so `events.snapshot`
/// loses its foreign key. SQLite cannot drop a constraint; the table is rebuilt.
const V2: &str = "
CREATE TABLE events_v2 (
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
    snapshot   TEXT
);
INSERT INTO events_v2 SELECT * FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_stream_seq ON events (stream, seq);
";

/// v3: cumulative counters that must survive restarts (events dropped before they were synced).
const V3: &str = "
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// v4: rule events. `kind` gains `rule`, and the rule's name and what it saw are kept beside
/// the event (`rule`, `rule_detail` as JSON). The CHECK constraint changes, so the table is
/// rebuilt.
const V4: &str = "
CREATE TABLE events_v4 (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('new', 'update', 'end', 'rule')),
    stream      TEXT NOT NULL,
    track_id    INTEGER NOT NULL,
    label       TEXT NOT NULL,
    score       REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    frame_w     INTEGER NOT NULL,
    frame_h     INTEGER NOT NULL,
    started_ms  INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    snapshot    TEXT,
    rule        TEXT,
    rule_detail TEXT
);
INSERT INTO events_v4 SELECT *, NULL, NULL FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_stream_seq ON events (stream, seq);
CREATE INDEX events_rule_seq ON events (rule, seq) WHERE rule IS NOT NULL;
";

/// v5: events by snapshot. Retention asks, per deleted snapshot, whether any event still names
/// it, and unlinking a lost snapshot finds its events; without this each is a full scan.
const V5: &str = "
CREATE INDEX events_snapshot ON events (snapshot) WHERE snapshot IS NOT NULL;
";

/// v6: users of the on-box UI (argon2 hashes) and their sessions (by token hash); events by
/// time, for the timeline's time range.
const V6: &str = "
CREATE INDEX events_at ON events (at_ms);
CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    hash       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    user         TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,
    expires_ms   INTEGER NOT NULL
);
";

pub(crate) fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Foreign keys are off while tables are rebuilt (the pragma only changes outside a
    // transaction). The version is read under the write lock, so two processes opening a
    // store at once upgrade it once; the steps and the version bump commit together or not at all.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let upgraded = upgrade(conn);
    conn.execute_batch(if upgraded.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    })?;
    upgraded?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn upgrade(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::SchemaVersion {
            found: version,
            supported: VERSION,
        });
    }
    if version < VERSION {
        let steps = STEPS[version as usize..].concat();
        conn.execute_batch(&format!("{steps} PRAGMA user_version = {VERSION};"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_store_is_upgraded_in_place_and_keeps_its_events() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("{V1} PRAGMA user_version = 1;"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO events (id, kind, stream, track_id, label, score, x1, y1, x2, y2, frame_w, frame_h, started_ms, at_ms)
             VALUES ('e1', 'new', 'cam', 1, 'person', 0.9, 0, 0, 1, 1, 10, 10, 5, 5);
             INSERT INTO outbox (event_seq, payload, created_ms) VALUES (1, '{}', 5);",
        )
        .unwrap();
        prepare(&conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        let id: String = conn
            .query_row("SELECT id FROM events WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, "e1");
        // v2's point: an event may name a snapshot whose blob row comes later.
        conn.execute_batch(
            "INSERT INTO events (id, kind, stream, track_id, label, score, x1, y1, x2, y2, frame_w, frame_h, started_ms, at_ms, snapshot)
             VALUES ('e2', 'new', 'cam', 2, 'person', 0.9, 0, 0, 1, 1, 10, 10, 6, 6, 'urn:aegis:blob:later');",
        )
        .unwrap();
        // Foreign keys are back on: an outbox row for no event is refused.
        assert!(conn
            .execute_batch(
                "INSERT INTO outbox (event_seq, payload, created_ms) VALUES (99, '{}', 0);"
            )
            .is_err());
        prepare(&conn).unwrap();
    }
}
