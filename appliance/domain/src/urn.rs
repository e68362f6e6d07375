use std::fmt;

use serde::{Deserialize, Serialize};

const PREFIX: &str = "urn:aegis:blob:";

/// The claim-check name of a stored blob: `urn:aegis:blob:<uuid>`.
/// Messages and API responses carry this; the bytes stay in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobUrn(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a blob URN (expected {PREFIX}<uuid>): {0:?}")]
pub struct UrnError(pub String);

impl BlobUrn {
    pub fn new(id: uuid::Uuid) -> Self {
        Self(format!("{PREFIX}{id}"))
    }

    pub fn parse(s: &str) -> Result<Self, UrnError> {
        let id = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| UrnError(s.to_owned()))?;
        let id = uuid::Uuid::try_parse(id).map_err(|_| UrnError(s.to_owned()))?;
        Ok(Self::new(id))
    }

    /// The unique part, safe to use as a file name.
    pub fn id(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobUrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for BlobUrn {
    type Error = UrnError;
    fn try_from(s: String) -> Result<Self, UrnError> {
        Self::parse(&s)
    }
}

impl From<BlobUrn> for String {
    fn from(u: BlobUrn) -> String {
        u.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_path_tricks() {
        let u = BlobUrn::new(uuid::Uuid::now_v7());
        assert_eq!(BlobUrn::parse(u.as_str()).unwrap(), u);
        assert!(BlobUrn::parse("urn:aegis:blob:../../etc/passwd").is_err());
        assert!(BlobUrn::parse("urn:other:x").is_err());
    }
}
