//! `GET /api/events/stream`: every device's events as Server-Sent Events, `id` = the core's
//! event seq, optionally for one device. A client that reconnects with `Last-Event-ID` (or
//! `?after=`) gets what it missed, then new events as ingest applies them: nothing repeated,
//! nothing skipped. The database is the only source: events are read after the last seq sent,
//! and ingest's one connection commits them in seq order.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::db::{self, CoreEvent};
use crate::{internal, problem, CoreState};

const PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    device: Option<String>,
    after: Option<i64>,
}

struct Feed {
    state: CoreState,
    device: Option<String>,
    backlog: VecDeque<CoreEvent>,
    /// The highest seq sent.
    high: i64,
}

impl Feed {
    async fn page(&self, after: Option<i64>, limit: usize) -> Result<Vec<CoreEvent>, String> {
        let q = db::Query {
            device: self.device.clone(),
            after,
            limit,
            ..Default::default()
        };
        self.state.with_db(move |db| db.events(&q)).await
    }
}

fn to_sse(e: &CoreEvent) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event("event")
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"))
}

pub(crate) async fn stream(
    State(s): State<CoreState>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Response {
    let p = match params {
        Ok(Query(p)) => p,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let header_id = match headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()))
    {
        Some(None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID must be an event seq".into(),
            )
        }
        Some(Some(id)) => Some(id),
        None => None,
    };
    let mut feed = Feed {
        state: s,
        device: p.device,
        backlog: VecDeque::new(),
        high: 0,
    };
    feed.high = match header_id.or(p.after) {
        Some(id) => id,
        // From now on: after the newest event there is.
        None => match feed.page(None, 1).await {
            Ok(newest) => newest.first().map_or(0, |e| e.seq),
            Err(e) => return internal(e),
        },
    };
    let events = futures::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.backlog.pop_front() {
                f.high = e.seq;
                return Some((Ok::<_, Infallible>(to_sse(&e)), f));
            }
            // Listen before reading, so that a batch applied in between wakes us.
            let changed = f.state.ingest.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match f.page(Some(f.high), PAGE).await {
                Ok(page) if !page.is_empty() => {
                    f.backlog.extend(page);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "SSE read failed");
                    return None;
                }
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = f.state.shutdown.triggered() => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
