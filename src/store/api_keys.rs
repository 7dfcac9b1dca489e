//! API keys. A key is `vxk_` + 64 hex chars (32 random bytes); only its SHA-256 is stored.
//! With 256 bits of entropy a fast hash is enough: there is nothing to brute-force.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

/// How long a verified key is believed without asking the database again. A key deleted
/// through this process stops working at once (the deletion empties the cache); one
/// deleted by another node sharing the database, or by hand, works here for at most this
/// long. The database was asked on every request before: one of a list page's few
/// queries, and the same answer thousands of times a second.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Most keys the cache holds; only keys that verified are cached, so this is reached
/// only with that many keys in use within a second, and then the cache starts over.
const KEY_CACHE_MAX: usize = 1024;

/// Keys that verified recently, by the hash of the presented key.
#[derive(Debug, Default)]
pub(super) struct KeyCache {
    inner: Mutex<KeyCacheInner>,
}

#[derive(Debug, Default)]
struct KeyCacheInner {
    /// Bumped by every deletion through this process: a lookup that read the database
    /// before a deletion must not put the deleted key into the cache after it.
    generation: u64,
    keys: HashMap<String, (ApiKey, Instant)>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCacheInner> {
        // The map is valid after any panic elsewhere (every update is one insert or
        // remove), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key with this hash if it verified less than [`KEY_CACHE_TTL`] ago.
    fn get(&self, hash: &str, now: Instant) -> Option<ApiKey> {
        let inner = self.lock();
        let (key, at) = inner.keys.get(hash)?;
        (now.saturating_duration_since(*at) < KEY_CACHE_TTL).then(|| key.clone())
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remember a key read from the database, unless a deletion happened since the
    /// lookup began (`generation`).
    fn put(&self, generation: u64, hash: String, key: ApiKey, at: Instant) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.keys.len() >= KEY_CACHE_MAX && !inner.keys.contains_key(&hash) {
            inner.keys.clear();
        }
        inner.keys.insert(hash, (key, at));
    }

    /// The key's `last_used_at` was refreshed to `t`.
    fn touched(&self, hash: &str, t: DateTime<Utc>) {
        if let Some((key, _)) = self.lock().keys.get_mut(hash) {
            key.last_used_at = Some(t);
        }
    }

    /// Forget the key with this id: it was deleted.
    fn revoke(&self, id: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.keys.retain(|_, (key, _)| key.id != id);
    }
}

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
        // Also when nothing was deleted here: another node may have deleted it.
        self.keys.revoke(id);
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Look a presented key up by its hash (answered from memory for a key that verified
    /// within the last second, see [`KEY_CACHE_TTL`]); on success refresh `last_used_at`
    /// if it is older than a minute.
    pub async fn verify_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = hash_api_key(key);
        let checked = Instant::now();
        let found = match self.keys.get(&hash, checked) {
            Some(found) => found,
            None => {
                let generation = self.keys.generation();
                let row = sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
                ))
                .bind(&hash)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let found = api_key_from_row(&row)?;
                self.keys
                    .put(generation, hash.clone(), found.clone(), checked);
                found
            }
        };
        let mut found = found;
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
            self.keys.touched(&hash, t);
        }
        Ok(Some(found))
    }
}
