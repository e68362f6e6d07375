//! Users and login sessions of the on-box UI. The store keeps what the web layer hands it:
//! password hashes (argon2, computed by the caller) and sessions by the SHA-256 of their token,
//! so a copy of the database does not hold a usable session.

use rusqlite::{params, OptionalExtension};

use crate::{lock, Store, StoreError};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub csrf: String,
}

impl Store {
    pub fn user_count(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    /// Adds a user; `Ok(false)` if the name is taken.
    pub fn add_user(&self, name: &str, hash: &str, now_ms: i64) -> Result<bool, StoreError> {
        let conn = lock(&self.writer);
        let n = conn.execute(
            "INSERT OR IGNORE INTO users (name, hash, created_ms) VALUES (?1, ?2, ?3)",
            params![name, hash, now_ms],
        )?;
        Ok(n == 1)
    }

    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn
            .query_row("SELECT hash FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Replaces a user's password and ends all of their sessions.
    pub fn set_password_hash(&self, name: &str, hash: &str) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE users SET hash = ?2 WHERE name = ?1",
            params![name, hash],
        )?;
        tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Records a session; expired ones are swept at the same time.
    pub fn add_session(
        &self,
        token_sha256: &str,
        session: &Session,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
        tx.execute(
            "INSERT INTO sessions (token_sha256, user, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            params![token_sha256, session.user, session.csrf, expires_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The session for a token hash, if it exists and has not expired.
    pub fn session(&self, token_sha256: &str, now_ms: i64) -> Result<Option<Session>, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn
            .query_row(
                "SELECT user, csrf FROM sessions WHERE token_sha256 = ?1 AND expires_ms > ?2",
                params![token_sha256, now_ms],
                |r| {
                    Ok(Session {
                        user: r.get(0)?,
                        csrf: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn remove_session(&self, token_sha256: &str) -> Result<(), StoreError> {
        let conn = lock(&self.writer);
        conn.execute(
            "DELETE FROM sessions WHERE token_sha256 = ?1",
            [token_sha256],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_end_with_a_password_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.user_count().unwrap(), 0);
        assert!(store.add_user("admin", "h1", 0).unwrap());
        assert!(
            !store.add_user("admin", "h2", 0).unwrap(),
            "names are unique"
        );
        assert_eq!(store.password_hash("admin").unwrap().as_deref(), Some("h1"));
        let s = Session {
            user: "admin".into(),
            csrf: "c".into(),
        };
        store.add_session("t1", &s, 0, 1000).unwrap();
        assert_eq!(store.session("t1", 999).unwrap(), Some(s.clone()));
        assert_eq!(store.session("t1", 1000).unwrap(), None, "expired");
        store.add_session("t2", &s, 0, 5000).unwrap();
        store.set_password_hash("admin", "h3").unwrap();
        assert_eq!(store.session("t2", 1).unwrap(), None);
        store.add_session("t3", &s, 0, 5000).unwrap();
        store.remove_session("t3").unwrap();
        assert_eq!(store.session("t3", 1).unwrap(), None);
    }
}
