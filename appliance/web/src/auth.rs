//! Login for the on-box UI and API: argon2 password hashes, session cookies, a CSRF token per
//! session for every state-changing request, and a per-address limit on failed logins. The
//! first start creates the `admin` user. Only health and the login page itself are public.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aegis_store::{Session, Store};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ApiError, Body, WebState};

const COOKIE: &str = "aegis_session";
const SESSION_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Failed logins allowed per client address within `FAILURE_WINDOW`.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const MIN_PASSWORD: usize = 8;
/// Reachable without a session.
const PUBLIC: [&str; 3] = ["/api/health", "/login", "/api/auth/login"];
/// The file the first start writes the generated admin password to.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("hashing failed: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// On a store with no users, creates `admin`: with `AEGIS_ADMIN_PASSWORD` if set, else with a
/// generated password written to `dir/initial-admin-password` (mode 0600), whose path is
/// returned. Later starts change nothing.
pub fn ensure_admin(store: &Store, dir: &Path) -> Result<Option<PathBuf>, ApiError> {
    if store.user_count()? > 0 {
        return Ok(None);
    }
    let (password, generated) = match std::env::var("AEGIS_ADMIN_PASSWORD") {
        Ok(p) if p.len() >= MIN_PASSWORD => (p, false),
        Ok(_) => {
            return Err(ApiError::BadRequest(format!(
                "AEGIS_ADMIN_PASSWORD must be at least {MIN_PASSWORD} characters"
            )))
        }
        Err(_) => (random_token(12), true),
    };
    let file = dir.join(INITIAL_PASSWORD_FILE);
    if generated {
        use std::os::unix::fs::OpenOptionsExt;
        let mut tmp = file.clone().into_os_string();
        tmp.push(".tmp");
        // Created 0600 before anything is written, then made durable and renamed into place.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| ApiError::Internal(format!("{}: {e}", file.display())))?;
        aegis_base::write_durably(Path::new(&tmp), &file, format!("{password}\n").as_bytes())
            .map_err(|e| ApiError::Internal(format!("{}: {e}", file.display())))?;
    }
    store.add_user("admin", &hash_password(&password)?, now_ms())?;
    Ok(generated.then_some(file))
}

/// Login state shared by the handlers.
#[derive(Default)]
pub struct Auth {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Auth {
    /// Seconds until `ip` may try again, if it is over the limit.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let list = failures.get_mut(&ip)?;
        while list.front().is_some_and(|t| t.elapsed() >= FAILURE_WINDOW) {
            list.pop_front();
        }
        (list.len() >= MAX_FAILURES).then(|| {
            let oldest = list.front().expect("at least MAX_FAILURES");
            FAILURE_WINDOW.saturating_sub(oldest.elapsed()).as_secs() + 1
        })
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: addresses whose failures have all aged out are forgotten.
        if failures.len() > 10_000 {
            failures.retain(|_, l| l.back().is_some_and(|t| t.elapsed() < FAILURE_WINDOW));
        }
        failures.entry(ip).or_default().push_back(Instant::now());
    }

    fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// The session a request was made in (set by [`require_session`]).
#[derive(Clone)]
pub struct Current {
    token_sha256: String,
    session: Session,
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Lets public paths through; everything else needs a session, and a request that changes
/// anything also needs the session's CSRF token in `X-CSRF-Token`. A browser asking for a
/// page without a session is sent to the login page.
pub async fn require_session(State(s): State<WebState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if PUBLIC.contains(&path) {
        return next.run(req).await;
    }
    let token = session_token(req.headers()).map(sha256_hex);
    let session = match token.clone() {
        Some(t) => {
            let store = s.store.clone();
            tokio::task::spawn_blocking(move || store.session(&t, now_ms())).await
        }
        None => Ok(Ok(None)),
    };
    let session = match session {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (Some(session), Some(token_sha256)) = (session, token) else {
        if req.method() == Method::GET && !path.starts_with("/api/") && path != "/metrics" {
            return Redirect::to("/login").into_response();
        }
        return ApiError::Unauthorized("log in first (POST /api/auth/login)".into())
            .into_response();
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return ApiError::Forbidden("missing or wrong X-CSRF-Token".into()).into_response();
        }
    }
    req.extensions_mut().insert(Current {
        token_sha256,
        session,
    });
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

#[derive(Serialize)]
pub struct SessionInfo {
    user: String,
    /// Send back in `X-CSRF-Token` with every request that changes something.
    csrf_token: String,
}

fn cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("hex tokens are valid header values")
}

pub async fn login(
    State(s): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body<Login>,
) -> Result<Response, ApiError> {
    let ip = peer.ip();
    if let Some(wait) = s.auth.blocked(ip) {
        return Err(ApiError::TooManyRequests(wait));
    }
    let store = s.store.clone();
    let user = body.username.clone();
    let ok = tokio::task::spawn_blocking(move || -> Result<bool, ApiError> {
        Ok(match store.password_hash(&body.username)? {
            Some(hash) => verify_password(&body.password, &hash),
            None => {
                // As slow as a real check, so timing does not tell which names exist.
                let _ = hash_password(&body.password);
                false
            }
        })
    })
    .await??;
    if !ok {
        s.auth.failed(ip);
        tracing::warn!(%ip, user = %user, "failed login");
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    }
    s.auth.succeeded(ip);
    let token = random_token(32);
    let session = Session {
        user,
        csrf: random_token(32),
    };
    let now = now_ms();
    let expires = now + SESSION_TTL.as_millis() as i64;
    let (store, stored, hashed) = (s.store.clone(), session.clone(), sha256_hex(&token));
    tokio::task::spawn_blocking(move || store.add_session(&hashed, &stored, now, expires))
        .await??;
    let mut response = Json(SessionInfo {
        user: session.user,
        csrf_token: session.csrf,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&token, SESSION_TTL.as_secs()));
    Ok(response)
}

pub async fn logout(
    State(s): State<WebState>,
    Extension(current): Extension<Current>,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.remove_session(&current.token_sha256)).await??;
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0));
    Ok(response)
}

pub async fn session(Extension(current): Extension<Current>) -> Json<SessionInfo> {
    Json(SessionInfo {
        user: current.session.user,
        csrf_token: current.session.csrf,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current: String,
    new: String,
}

/// Changes the caller's password; every session of theirs ends (this one too).
pub async fn change_password(
    State(s): State<WebState>,
    Extension(current): Extension<Current>,
    Body(body): Body<PasswordChange>,
) -> Result<Response, ApiError> {
    if body.new.len() < MIN_PASSWORD {
        return Err(ApiError::Invalid(vec![aegis_config::FieldError {
            path: "new".into(),
            message: format!("at least {MIN_PASSWORD} characters"),
        }]));
    }
    let store = s.store.clone();
    let user = current.session.user.clone();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let hash = store.password_hash(&user)?.unwrap_or_default();
        if !verify_password(&body.current, &hash) {
            return Err(ApiError::Forbidden("the current password is wrong".into()));
        }
        store.set_password_hash(&user, &hash_password(&body.new)?)?;
        // The generated first-run password is no longer valid.
        let _ = std::fs::remove_file(store.dir().join(INITIAL_PASSWORD_FILE));
        Ok(())
    })
    .await??;
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0));
    Ok(response)
}
