//! API keys. A key is `vxk_` + 64 hex chars (32 random bytes); only its SHA-256 is stored.
//! With 256 bits of entropy a fast hash is enough: there is nothing to brute-force.

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use super::{
    fmt_time, get_opt_time, get_str, get_time, into_page, limit_plus_one, now, Page, Store,
    StoreError,
};
use crate::ids::{new_id, IdKind};

/// The prefix of generated keys.
pub const API_KEY_PREFIX: &str = "vxk_";

/// How stale `last_used_at` may get before a request refreshes it (one write a minute
/// at most per key, not one per request).
const TOUCH_INTERVAL_SECONDS: i64 = 60;

/// One row of `api_keys` (the key itself is not stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first 8 characters of the key, to recognise it in lists.
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A new random key.
pub fn generate_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a key.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn key_prefix(key: &str) -> String {
    key.chars().take(8).collect()
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: get_str(row, "id")?,
        name: get_str(row, "name")?,
        key_prefix: get_str(row, "key_prefix")?,
        created_at: get_time(row, "created_at")?,
        last_used_at: get_opt_time(row, "last_used_at")?,
    })
}

const KEY_COLUMNS: &str = "id, name, key_prefix, created_at, last_used_at";

impl Store {
    /// Create a key; returns the row and the plaintext key, which is never seen again.
    pub async fn create_api_key(&self, name: &str) -> Result<(ApiKey, String), StoreError> {
        let key = generate_api_key();
        let row = self.insert_api_key(name, &key).await?;
        Ok((row, key))
    }

    /// Store a given key (the configured bootstrap key) unless a key with the same hash
    /// exists. Returns whether it was inserted. Idempotent across restarts.
    pub async fn ensure_api_key(&self, name: &str, key: &str) -> Result<bool, StoreError> {
        let exists = sqlx::query("SELECT 1 FROM api_keys WHERE key_hash = $1")
            .bind(hash_api_key(key))
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if exists {
            return Ok(false);
        }
        match self.insert_api_key(name, key).await {
            Ok(_) => Ok(true),
            // Another node inserted it at the same moment.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn insert_api_key(&self, name: &str, key: &str) -> Result<ApiKey, StoreError> {
        let row = ApiKey {
            id: new_id(IdKind::ApiKey),
            name: name.to_owned(),
            key_prefix: key_prefix(key),
            created_at: now(),
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_prefix, key_hash, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.key_prefix)
        .bind(hash_api_key(key))
        .bind(fmt_time(row.created_at))
        .execute(&self.pool)
        .await
        .map_err(super::conflict_on("key"))?;
        Ok(row)
    }

    pub async fn count_api_keys(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        super::get_i64(&row, "n")
    }

    pub async fn list_api_keys(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<ApiKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .iter()
            .map(api_key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(keys, limit, |k| &k.id))
    }

    pub async fn get_api_key(&self, id: &str) -> Result<ApiKey, StoreError> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        api_key_from_row(&row)
    }

    pub async fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        let r = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Look a presented key up by its hash; on success refresh `last_used_at` if it is
    /// older than a minute.
    pub async fn verify_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(hash_api_key(key))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut found = api_key_from_row(&row)?;
        let t = now();
        let stale = found
            .last_used_at
            .is_none_or(|last| t - last >= Duration::seconds(TOUCH_INTERVAL_SECONDS));
        if stale {
            let cutoff = fmt_time(t - Duration::seconds(TOUCH_INTERVAL_SECONDS));
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)",
            )
            .bind(fmt_time(t))
            .bind(&found.id)
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
            found.last_used_at = Some(t);
        }
        Ok(Some(found))
    }
}
