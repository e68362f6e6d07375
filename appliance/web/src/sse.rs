//! `GET /api/events/stream`: committed events as Server-Sent Events, `id` = event seq. A client
//! that reconnects with `Last-Event-ID` (or `?after=`) first gets what it missed from the store,
//! then the live feed, with nothing repeated and nothing skipped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use aegis_pipeline::LiveEvent;
use aegis_store::{EventQuery, Store, StoredEvent};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{ApiError, WebState};

const CATCH_UP_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    after: Option<i64>,
}

struct Feed {
    store: Arc<Store>,
    rx: broadcast::Receiver<LiveEvent>,
    backlog: VecDeque<StoredEvent>,
    /// Highest seq sent; also where catch-up resumes.
    high: i64,
    /// True while the store may hold events newer than `high` that the feed has not delivered.
    behind: bool,
    shutdown: aegis_base::Shutdown,
}

async fn page_after(store: &Arc<Store>, after: i64) -> Result<Vec<StoredEvent>, ApiError> {
    let store = store.clone();
    let q = EventQuery {
        after: Some(after),
        limit: CATCH_UP_PAGE,
        ..Default::default()
    };
    Ok(tokio::task::spawn_blocking(move || store.events(&q)).await??)
}

fn to_sse(e: &StoredEvent) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event("event")
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"))
}

pub(crate) async fn stream(
    State(s): State<WebState>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let header_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event seq".into()))
        })
        .transpose()?;
    // Subscribe before reading the store, so nothing committed in between is missed.
    let rx = s.live.subscribe();
    let (high, behind) = match header_id.or(p.after) {
        Some(id) => (id, true),
        None => {
            let store = s.store.clone();
            (
                tokio::task::spawn_blocking(move || store.last_seq()).await??,
                false,
            )
        }
    };
    let feed = Feed {
        store: s.store.clone(),
        rx,
        backlog: VecDeque::new(),
        high,
        behind,
        shutdown: s.shutdown.clone(),
    };
    let events = futures::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.backlog.pop_front() {
                f.high = e.seq;
                return Some((Ok(to_sse(&e)), f));
            }
            if f.behind {
                match page_after(&f.store, f.high).await {
                    Ok(page) => {
                        f.behind = page.len() == CATCH_UP_PAGE;
                        f.backlog.extend(page);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SSE catch-up failed");
                        return None;
                    }
                }
            }
            let next = tokio::select! {
                r = f.rx.recv() => r,
                () = f.shutdown.triggered() => return None,
            };
            match next {
                Ok(live) if live.stored.seq > f.high => f.backlog.push_back(live.stored),
                Ok(_) => {}
                // Fell behind the live feed: fetch the gap from the store.
                Err(RecvError::Lagged(_)) => f.behind = true,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
