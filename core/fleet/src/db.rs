//! The core's database: the device registry and every device's events, applied idempotently
//! (one row per device and event id). SQLite by default (`SqliteDb`), PostgreSQL when
//! configured (`crate::pg::PgDb`); both behave the same to the API and to ingest.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use aegis_base::{Clock, SystemClock};
use aegis_proto::v1;
use aegis_sync::ingest::{Sink, SinkError};
use aegis_sync::DeviceKey;
use rusqlite::{params, Connection};
use serde::Serialize;

/// One step per schema version; a fresh database runs them all. Written once for both
/// databases: `BIGINT` and `SERIAL_KEY` are spelled per dialect by [`schema_steps`].
const STEPS: [&str; 4] = [V1, V2, V3, V4];

const V1: &str = "
CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    version       TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    health        TEXT NOT NULL
);
CREATE TABLE events (
    seq         SERIAL_KEY,
    device      TEXT NOT NULL,
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stream      TEXT NOT NULL,
    label       TEXT NOT NULL,
    rule        TEXT,
    at_ms       BIGINT NOT NULL,
    payload     TEXT NOT NULL,
    ingested_ms BIGINT NOT NULL,
    UNIQUE (device, id)
);
CREATE INDEX events_at ON events (at_ms);
";

/// v2: each device's desired config, versioned.
const V2: &str = "
CREATE TABLE desired (
    device     TEXT PRIMARY KEY,
    version    BIGINT NOT NULL,
    cameras    TEXT NOT NULL,
    rules      TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
";

/// v3: each device's identity: a pending join token (its SHA-256), then its public nkey once
/// enrolled, and when it was revoked.
const V3: &str = "
CREATE TABLE identities (
    device           TEXT PRIMARY KEY,
    token_sha256     TEXT,
    token_expires_ms BIGINT,
    nkey             TEXT,
    enrolled_ms      BIGINT,
    revoked_ms       BIGINT
);
";

/// v4: the desired config may name the model.
const V4: &str = "ALTER TABLE desired ADD COLUMN model TEXT;";

pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// The schema steps from `version` (exclusive) to the latest, in one script for `dialect`;
/// and the latest version. A version newer than this build's is refused.
pub(crate) fn schema_steps(dialect: Dialect, version: i64) -> Result<(String, i64), SchemaTooNew> {
    let latest = STEPS.len() as i64;
    if version > latest {
        return Err(SchemaTooNew {
            found: version,
            supported: latest,
        });
    }
    let (bigint, serial) = match dialect {
        // SQLite's INTEGER is 64-bit; AUTOINCREMENT never reuses a seq.
        Dialect::Sqlite => ("INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        Dialect::Postgres => ("BIGINT", "BIGSERIAL PRIMARY KEY"),
    };
    let script = STEPS[version.max(0) as usize..]
        .concat()
        .replace("SERIAL_KEY", serial)
        .replace("BIGINT", bigint);
    Ok((script, latest))
}

/// Statements both databases run as they are, written with PostgreSQL's `$n` parameters;
/// [`sqlite`] spells them with SQLite's `?n`.
pub(crate) mod sql {
    pub const LIST_DEVICES: &str =
        "SELECT id, version, first_seen_ms, last_seen_ms, health FROM devices ORDER BY id";
    pub const PUT_DESIRED: &str = "INSERT INTO desired (device, version, cameras, rules, updated_ms, model) VALUES ($1, 1, $2, $3, $4, $5)
     ON CONFLICT (device) DO UPDATE SET version = desired.version + 1, cameras = $2, rules = $3, updated_ms = $4, model = $5
     RETURNING version";
    pub const GET_DESIRED: &str =
        "SELECT version, cameras, rules, model FROM desired WHERE device = $1";
    pub const ISSUE_TOKEN: &str =
        "INSERT INTO identities (device, token_sha256, token_expires_ms) VALUES ($1, $2, $3)
     ON CONFLICT (device) DO UPDATE SET token_sha256 = $2, token_expires_ms = $3";
    pub const ENROL: &str = "UPDATE identities SET nkey = $3, enrolled_ms = $4, revoked_ms = NULL,
         token_sha256 = NULL, token_expires_ms = NULL
     WHERE device = $1 AND token_sha256 = $2 AND token_expires_ms > $4";
    pub const REVOKE: &str = "UPDATE identities SET revoked_ms = $2, token_sha256 = NULL
     WHERE device = $1 AND nkey IS NOT NULL AND revoked_ms IS NULL";
    pub const DEVICE_KEYS: &str = "SELECT device, nkey FROM identities
     WHERE nkey IS NOT NULL AND revoked_ms IS NULL ORDER BY device";
    pub const HEARTBEAT: &str =
        "INSERT INTO devices (id, version, first_seen_ms, last_seen_ms, health)
     VALUES ($1, $2, $3, $3, $4)
     ON CONFLICT (id) DO UPDATE SET version = $2, last_seen_ms = $3, health = $4";
}

/// The events query: newest first, or oldest first after a seq (`$8`, for SSE). `CAST` types
/// the parameters for PostgreSQL and is harmless to SQLite.
pub(crate) fn events_query(ascending: bool) -> String {
    let order = if ascending { "ASC" } else { "DESC" };
    format!(
        "SELECT seq, device, ingested_ms, payload FROM events
         WHERE (CAST($1 AS TEXT) IS NULL OR device = $1) AND (CAST($2 AS TEXT) IS NULL OR stream = $2)
           AND (CAST($3 AS TEXT) IS NULL OR label = $3) AND (CAST($4 AS TEXT) IS NULL OR rule = $4)
           AND (CAST($5 AS BIGINT) IS NULL OR at_ms >= $5) AND (CAST($6 AS BIGINT) IS NULL OR at_ms < $6)
           AND (CAST($7 AS BIGINT) IS NULL OR seq < $7) AND (CAST($8 AS BIGINT) IS NULL OR seq > $8)
         ORDER BY seq {order} LIMIT $9"
    )
}

/// A shared statement with SQLite's parameter markers.
fn sqlite(statement: &str) -> String {
    statement.replace('$', "?")
}

/// What the API and ingest need of a database. Blocking: called off the async threads.
pub trait Database: Sink {
    fn list_devices(&self) -> Result<Vec<Device>, SinkError>;
    /// Events matching `q`: newest first, or oldest first after `q.after`.
    fn events(&self, q: &Query) -> Result<Vec<CoreEvent>, SinkError>;
    /// Records a new desired config for `device`, one version above the last.
    fn put_desired(&self, desired: &NewDesired) -> Result<v1::Desired, SinkError>;
    fn desired(&self, device: &str) -> Result<Option<v1::Desired>, SinkError>;
    /// Records a join token (by its hash) for `device`, replacing any earlier one.
    fn issue_token(
        &self,
        device: &str,
        token_sha256: &str,
        expires_ms: i64,
    ) -> Result<(), SinkError>;
    /// Enrols `device` with `nkey` if `token_sha256` is its live token; the token is used up.
    /// Returns whether it was.
    fn enrol(
        &self,
        device: &str,
        token_sha256: &str,
        nkey: &str,
        now_ms: i64,
    ) -> Result<bool, SinkError>;
    /// Revokes `device`'s identity. Returns whether it had one in force.
    fn revoke(&self, device: &str, now_ms: i64) -> Result<bool, SinkError>;
    /// The enrolled, unrevoked devices and their public nkeys.
    fn device_keys(&self) -> Result<Vec<DeviceKey>, SinkError>;
}

/// A desired config to record; the database gives it its version.
#[derive(Debug, Clone)]
pub struct NewDesired {
    pub device: String,
    pub cameras: serde_json::Value,
    pub rules: serde_json::Value,
    pub model: Option<String>,
}

/// A desired config as the database row holds it.
pub(crate) fn desired_from(
    device: String,
    version: i64,
    cameras: &str,
    rules: &str,
    model: Option<String>,
) -> Result<v1::Desired, SinkError> {
    Ok(v1::Desired {
        schema: v1::DESIRED_SCHEMA.into(),
        device,
        version: version as u64,
        cameras: serde_json::from_str(cameras)?,
        rules: serde_json::from_str(rules)?,
        model,
    })
}

/// A database newer than this build.
#[derive(Debug, thiserror::Error)]
#[error("the database has schema version {found}; this build knows up to {supported}")]
pub struct SchemaTooNew {
    pub found: i64,
    pub supported: i64,
}

pub struct SqliteDb {
    conn: Mutex<Connection>,
}

/// A device as the registry knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: String,
    pub version: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The last heartbeat.
    pub health: serde_json::Value,
}

/// An event as the core holds it.
#[derive(Debug, Clone, Serialize)]
pub struct CoreEvent {
    pub seq: i64,
    pub device: String,
    pub ingested_ms: i64,
    pub event: v1::Event,
}

/// Filters and cursor for listing events, newest first.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub device: Option<String>,
    pub camera: Option<String>,
    pub label: Option<String>,
    pub rule: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Strictly older than this seq (the previous page's cursor).
    pub before: Option<i64>,
    /// Strictly newer than this seq, and then oldest first (SSE).
    pub after: Option<i64>,
    pub limit: usize,
}

impl SqliteDb {
    pub fn open(path: &Path) -> Result<SqliteDb, SinkError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let (steps, latest) = schema_steps(Dialect::Sqlite, version)?;
        if version < latest {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {steps} PRAGMA user_version = {latest}; COMMIT;"
            ))?;
        }
        Ok(SqliteDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Database for SqliteDb {
    fn list_devices(&self) -> Result<Vec<Device>, SinkError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sqlite(sql::LIST_DEVICES))?;
        let rows = stmt.query_map([], |r| {
            let health: String = r.get(4)?;
            Ok(Device {
                id: r.get(0)?,
                version: r.get(1)?,
                first_seen_ms: r.get(2)?,
                last_seen_ms: r.get(3)?,
                health: serde_json::from_str(&health).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn events(&self, q: &Query) -> Result<Vec<CoreEvent>, SinkError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sqlite(&events_query(q.after.is_some())))?;
        let rows = stmt.query_map(
            params![
                q.device,
                q.camera,
                q.label,
                q.rule,
                q.since_ms,
                q.until_ms,
                q.before,
                q.after,
                q.limit as i64
            ],
            |r| {
                let payload: String = r.get(3)?;
                let event = serde_json::from_str(&payload).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?;
                Ok(CoreEvent {
                    seq: r.get(0)?,
                    device: r.get(1)?,
                    ingested_ms: r.get(2)?,
                    event,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_desired(&self, d: &NewDesired) -> Result<v1::Desired, SinkError> {
        let (c, r) = (d.cameras.to_string(), d.rules.to_string());
        let version: i64 = self.conn().query_row(
            &sqlite(sql::PUT_DESIRED),
            params![d.device, c, r, SystemClock.now_ms(), d.model],
            |row| row.get(0),
        )?;
        desired_from(d.device.clone(), version, &c, &r, d.model.clone())
    }

    fn desired(&self, device: &str) -> Result<Option<v1::Desired>, SinkError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sqlite(sql::GET_DESIRED))?;
        let mut rows = stmt.query(params![device])?;
        match rows.next()? {
            Some(r) => Ok(Some(desired_from(
                device.to_string(),
                r.get(0)?,
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                r.get(3)?,
            )?)),
            None => Ok(None),
        }
    }

    fn issue_token(
        &self,
        device: &str,
        token_sha256: &str,
        expires_ms: i64,
    ) -> Result<(), SinkError> {
        self.conn().execute(
            &sqlite(sql::ISSUE_TOKEN),
            params![device, token_sha256, expires_ms],
        )?;
        Ok(())
    }

    fn enrol(
        &self,
        device: &str,
        token_sha256: &str,
        nkey: &str,
        now_ms: i64,
    ) -> Result<bool, SinkError> {
        Ok(self.conn().execute(
            &sqlite(sql::ENROL),
            params![device, token_sha256, nkey, now_ms],
        )? == 1)
    }

    fn revoke(&self, device: &str, now_ms: i64) -> Result<bool, SinkError> {
        Ok(self
            .conn()
            .execute(&sqlite(sql::REVOKE), params![device, now_ms])?
            == 1)
    }

    fn device_keys(&self) -> Result<Vec<DeviceKey>, SinkError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sqlite(sql::DEVICE_KEYS))?;
        let rows = stmt.query_map([], |r| {
            Ok(DeviceKey {
                device: r.get(0)?,
                nkey: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Sink for SqliteDb {
    fn apply(&self, device: &str, events: &[v1::Event]) -> Result<u64, SinkError> {
        let now = SystemClock.now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut applied = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (device, id, kind, stream, label, rule, at_ms, payload, ingested_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (device, id) DO NOTHING",
            )?;
            for e in events {
                applied += stmt.execute(params![
                    device,
                    e.id,
                    e.kind,
                    e.stream,
                    e.label,
                    e.rule.as_ref().map(|r| r.name.as_str()),
                    e.at_ms,
                    serde_json::to_string(e)?,
                    now
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(applied)
    }

    fn heartbeat(&self, health: &v1::Health, received_ms: i64) -> Result<(), SinkError> {
        self.conn().execute(
            &sqlite(sql::HEARTBEAT),
            params![
                health.device,
                health.version,
                received_ms,
                serde_json::to_string(health)?
            ],
        )?;
        Ok(())
    }
}
