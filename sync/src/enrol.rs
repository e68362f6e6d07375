//! A box's identity on the bus. The box makes its own nkey pair (the seed never leaves it) and
//! enrols once: it sends the public key with a join token the core issued for this device, and
//! from then on its leaf connection authenticates with the seed. The hub lets it publish only
//! on its own subjects and read only its own desired config (ADR 0007).

use std::path::{Path, PathBuf};

use aegis_proto::v1::EnrolRequest;

/// The box's key pair, kept in `dir`.
pub struct Identity {
    dir: PathBuf,
    pub seed: String,
    pub public_key: String,
}

impl Identity {
    /// Loads the seed from `dir/identity.seed`, or makes a new key pair and stores it there
    /// (owner-only).
    pub fn load_or_create(dir: &Path) -> Result<Identity, String> {
        let path = dir.join("identity.seed");
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let seed = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(err)?;
                let seed = nkeys::KeyPair::new_user()
                    .seed()
                    .map_err(|e| e.to_string())?;
                let tmp = dir.join("identity.seed.tmp");
                std::fs::write(&tmp, &seed).map_err(err)?;
                std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(err)?;
                aegis_base::write_durably(&tmp, &path, seed.as_bytes()).map_err(err)?;
                seed
            }
            Err(e) => return Err(err(e)),
        };
        let public_key = nkeys::KeyPair::from_seed(&seed)
            .map_err(|e| format!("{}: not an nkey seed: {e}", path.display()))?
            .public_key();
        Ok(Identity {
            dir: dir.to_owned(),
            seed,
            public_key,
        })
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("enrolled")
    }

    /// Whether this key pair has been enrolled.
    pub fn is_enrolled(&self) -> bool {
        std::fs::read_to_string(self.marker()).is_ok_and(|k| k.trim() == self.public_key)
    }

    /// Enrols with the core at `core` (its API's base URL) using `token`.
    pub async fn enrol(&self, core: &str, device: &str, token: &str) -> Result<(), String> {
        let url = format!("{}/api/enrol", core.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .post(&url)
            .json(&EnrolRequest {
                device: device.into(),
                token: token.into(),
                public_key: self.public_key.clone(),
            })
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("{url}: {status}: {body}"));
        }
        aegis_base::write_durably(
            &self.dir.join("enrolled.tmp"),
            &self.marker(),
            self.public_key.as_bytes(),
        )
        .map_err(|e| format!("{}: {e}", self.marker().display()))
    }
}
