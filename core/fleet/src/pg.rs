//! The core's database on PostgreSQL: the same tables and behaviour as SQLite's. A batch of
//! events is one `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT DO NOTHING`: one round trip
//! and one implicit transaction however many events it holds.

use std::sync::{Arc, Mutex};

use aegis_base::{Clock, SystemClock};
use aegis_proto::v1;
use aegis_sync::ingest::{Sink, SinkError};
use aegis_sync::DeviceKey;
use tokio::runtime::Handle;
use tokio_postgres::{Client, NoTls};

use crate::db::{
    desired_from, events_query, schema_steps, sql, CoreEvent, Database, Device, Dialect,
    NewDesired, Query,
};

pub struct PgDb {
    url: String,
    /// Replaced by a new connection when PostgreSQL has closed this one (a restart, say).
    client: Mutex<Arc<Client>>,
    /// The runtime the connection task runs on; blocking callers wait on it.
    runtime: Handle,
}

/// Opens a connection; its I/O runs as a task on the current runtime.
async fn open(url: &str) -> Result<Client, SinkError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "PostgreSQL connection lost");
        }
    });
    Ok(client)
}

impl PgDb {
    /// Connects (a `postgres://` URL) and brings the schema up to date. Call inside a Tokio
    /// runtime.
    pub async fn connect(url: &str) -> Result<PgDb, SinkError> {
        let mut client = open(url).await?;
        let tx = client.transaction().await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS aegis_schema (version INT NOT NULL);
             LOCK TABLE aegis_schema IN EXCLUSIVE MODE;",
        )
        .await?;
        let version: i64 = tx
            .query_opt("SELECT version FROM aegis_schema", &[])
            .await?
            .map_or(0, |r| i64::from(r.get::<_, i32>(0)));
        let (steps, latest) = schema_steps(Dialect::Postgres, version)?;
        if version < latest {
            tx.batch_execute(&steps).await?;
            tx.batch_execute(&format!(
                "DELETE FROM aegis_schema; INSERT INTO aegis_schema VALUES ({latest});"
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(PgDb {
            url: url.to_owned(),
            client: Mutex::new(Arc::new(client)),
            runtime: Handle::current(),
        })
    }

    /// The connection, opened again if PostgreSQL closed it. Until it can be, each call fails
    /// (ingest leaves its messages unacknowledged and they come again).
    fn client(&self) -> Result<Arc<Client>, SinkError> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_closed() {
            *client = Arc::new(self.wait(open(&self.url))?);
            tracing::info!("PostgreSQL connection opened again");
        }
        Ok(client.clone())
    }

    fn wait<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }
}

impl Database for PgDb {
    fn list_devices(&self) -> Result<Vec<Device>, SinkError> {
        let rows = self.wait(self.client()?.query(sql::LIST_DEVICES, &[]))?;
        Ok(rows
            .iter()
            .map(|r| Device {
                id: r.get(0),
                version: r.get(1),
                first_seen_ms: r.get(2),
                last_seen_ms: r.get(3),
                health: serde_json::from_str(r.get(4)).unwrap_or_default(),
            })
            .collect())
    }

    fn events(&self, q: &Query) -> Result<Vec<CoreEvent>, SinkError> {
        let rows = self.wait(self.client()?.query(
            &events_query(q.after.is_some()),
            &[
                &q.device,
                &q.camera,
                &q.label,
                &q.rule,
                &q.since_ms,
                &q.until_ms,
                &q.before,
                &q.after,
                &(q.limit as i64),
            ],
        ))?;
        rows.iter()
            .map(|r| {
                Ok(CoreEvent {
                    seq: r.get(0),
                    device: r.get(1),
                    ingested_ms: r.get(2),
                    event: serde_json::from_str(r.get(3))?,
                })
            })
            .collect()
    }

    fn put_desired(&self, d: &NewDesired) -> Result<v1::Desired, SinkError> {
        let (c, r) = (d.cameras.to_string(), d.rules.to_string());
        let row = self.wait(self.client()?.query_one(
            sql::PUT_DESIRED,
            &[&d.device, &c, &r, &SystemClock.now_ms(), &d.model],
        ))?;
        desired_from(d.device.clone(), row.get(0), &c, &r, d.model.clone())
    }

    fn desired(&self, device: &str) -> Result<Option<v1::Desired>, SinkError> {
        let row = self.wait(self.client()?.query_opt(sql::GET_DESIRED, &[&device]))?;
        row.map(|r| desired_from(device.to_string(), r.get(0), r.get(1), r.get(2), r.get(3)))
            .transpose()
    }

    fn issue_token(
        &self,
        device: &str,
        token_sha256: &str,
        expires_ms: i64,
    ) -> Result<(), SinkError> {
        self.wait(
            self.client()?
                .execute(sql::ISSUE_TOKEN, &[&device, &token_sha256, &expires_ms]),
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
        Ok(self.wait(
            self.client()?
                .execute(sql::ENROL, &[&device, &token_sha256, &nkey, &now_ms]),
        )? == 1)
    }

    fn revoke(&self, device: &str, now_ms: i64) -> Result<bool, SinkError> {
        Ok(self.wait(self.client()?.execute(sql::REVOKE, &[&device, &now_ms]))? == 1)
    }

    fn device_keys(&self) -> Result<Vec<DeviceKey>, SinkError> {
        let rows = self.wait(self.client()?.query(sql::DEVICE_KEYS, &[]))?;
        Ok(rows
            .iter()
            .map(|r| DeviceKey {
                device: r.get(0),
                nkey: r.get(1),
            })
            .collect())
    }
}

impl Sink for PgDb {
    fn apply(&self, device: &str, events: &[v1::Event]) -> Result<u64, SinkError> {
        let mut payloads = Vec::with_capacity(events.len());
        for e in events {
            payloads.push(serde_json::to_string(e)?);
        }
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let streams: Vec<&str> = events.iter().map(|e| e.stream.as_str()).collect();
        let labels: Vec<&str> = events.iter().map(|e| e.label.as_str()).collect();
        let rules: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.rule.as_ref().map(|r| r.name.as_str()))
            .collect();
        let at: Vec<i64> = events.iter().map(|e| e.at_ms).collect();
        let now = SystemClock.now_ms();
        Ok(self.wait(self.client()?.execute(
            "INSERT INTO events (device, id, kind, stream, label, rule, at_ms, payload, ingested_ms)
             SELECT $1, u.id, u.kind, u.stream, u.label, u.rule, u.at_ms, u.payload, $9
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[])
                  AS u (id, kind, stream, label, rule, at_ms, payload)
             ON CONFLICT (device, id) DO NOTHING",
            &[&device, &ids, &kinds, &streams, &labels, &rules, &at, &payloads, &now],
        ))?)
    }

    fn heartbeat(&self, health: &v1::Health, received_ms: i64) -> Result<(), SinkError> {
        self.wait(self.client()?.execute(
            sql::HEARTBEAT,
            &[
                &health.device,
                &health.version,
                &received_ms,
                &serde_json::to_string(health)?,
            ],
        ))?;
        Ok(())
    }
}
