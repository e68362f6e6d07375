//! Enrolment: the core issues a one-time join token for a device; the box enrols with it and
//! its own public nkey; the hub then lets that key in as that device, with that device's
//! permissions only. Revoking a device takes its key out of the hub, which closes its leaf
//! connection (ADR 0007).

use aegis_base::{Clock, SystemClock};
use aegis_proto::v1::EnrolRequest;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{internal, problem, CoreState};

/// How long a join token stays good.
pub const TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;

/// 256 random bits, hex.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl CoreState {
    /// A new join token for `device` (any earlier one stops working). Only its hash is kept.
    pub async fn issue_token(&self, device: &str) -> Result<(String, i64), String> {
        let token = random_hex();
        let expires = SystemClock.now_ms() + TOKEN_TTL_MS;
        let (d, hash) = (device.to_string(), sha256_hex(&token));
        self.with_db(move |db| db.issue_token(&d, &hash, expires))
            .await?;
        Ok((token, expires))
    }

    /// Enrols a box; `Ok(false)` when the token is wrong, used or expired.
    pub async fn enrol(&self, request: &EnrolRequest) -> Result<bool, String> {
        let (r, now) = (request.clone(), SystemClock.now_ms());
        let enrolled = self
            .with_db(move |db| db.enrol(&r.device, &sha256_hex(&r.token), &r.public_key, now))
            .await?;
        if enrolled {
            self.put_hub_config().await?;
        }
        Ok(enrolled)
    }

    /// Revokes a device; `Ok(false)` when it had no identity in force.
    pub async fn revoke(&self, device: &str) -> Result<bool, String> {
        let (d, now) = (device.to_string(), SystemClock.now_ms());
        let revoked = self.with_db(move |db| db.revoke(&d, now)).await?;
        if revoked {
            self.put_hub_config().await?;
        }
        Ok(revoked)
    }

    /// Restarts the hub with the devices enrolled now (see `NatsServer::restart` for why not a
    /// reload); the boxes reconnect within a second.
    async fn put_hub_config(&self) -> Result<(), String> {
        let keys = self.with_db(|db| db.device_keys()).await?;
        self.hub
            .restart(self.hub_auth.role(keys))
            .map_err(|e| e.to_string())
    }
}

/// `POST /api/devices/{id}/token`: a join token for the device, shown once.
pub(crate) async fn issue(State(s): State<CoreState>, Path(id): Path<String>) -> Response {
    if !aegis_proto::subject::valid_device_id(&id) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a device id is 1-63 lowercase letters, digits or '-'".into(),
        );
    }
    match s.issue_token(&id).await {
        Ok((token, expires_ms)) => {
            Json(serde_json::json!({"device": id, "token": token, "expires_ms": expires_ms}))
                .into_response()
        }
        Err(e) => internal(e),
    }
}

/// `POST /api/enrol`: a box enrols with its token and public key (no session: the token is
/// the credential).
pub(crate) async fn enrol(
    State(s): State<CoreState>,
    body: Result<Json<EnrolRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    if nkeys::KeyPair::from_public_key(&request.public_key).is_err()
        || !request.public_key.starts_with('U')
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "public_key must be a user nkey (U…)".into(),
        );
    }
    match s.enrol(&request).await {
        Ok(true) => Json(serde_json::json!({"device": request.device})).into_response(),
        Ok(false) => problem(
            StatusCode::FORBIDDEN,
            "the join token is wrong, used or expired".into(),
        ),
        Err(e) => internal(e),
    }
}

/// `POST /api/devices/{id}/revoke`: the device's key no longer gets in.
pub(crate) async fn revoke(State(s): State<CoreState>, Path(id): Path<String>) -> Response {
    match s.revoke(&id).await {
        Ok(true) => Json(serde_json::json!({"device": id, "revoked": true})).into_response(),
        Ok(false) => problem(
            StatusCode::NOT_FOUND,
            format!("{id} has no identity in force"),
        ),
        Err(e) => internal(e),
    }
}
