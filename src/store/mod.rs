//! The database: one `sqlx::AnyPool` over SQLite or PostgreSQL, the same schema on both
//! (migrations/sqlite and migrations/postgres, same numbering).
//!
//! SQL is written once with `$1, $2, …` placeholders numbered in order of first appearance:
//! PostgreSQL reads them as positional parameters, SQLite as named parameters that sqlx
//! maps back to the argument with that number. Times are fixed-format RFC 3339 UTC text
//! ([`fmt_time`]), so they compare and sort the same on both backends.

mod agents;
mod api_keys;
mod calls;
mod programs;
mod recordings;
mod registrations;
mod stats;
mod trunks;
mod webhooks;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

pub use agents::{Agent, AgentAuth, AgentPatch, Credentials, NewAgent, Presence};
pub use api_keys::{generate_api_key, hash_api_key, ApiKey, API_KEY_PREFIX};
pub use calls::{call_event_data, AgentCallCounts, Call, CallFilter, Leg, GATEWAY_RESTART};
pub use programs::{
    flow_references, CatalogNames, IvrFlowRow, NewPrompt, PromptRow, QueueRow, QueueSpec,
};
pub use recordings::{
    recording_event_data, NewRecording, Recording, RecordingChannels, RecordingEnd,
    RecordingFilter, RecordingStatus, RecordingStorage,
};
pub use registrations::{Registration, RegistrationChange};
pub use stats::{CostTotal, StatsGroup, StatsGroupBy, StatsRow};
pub use trunks::{NumberRow, TrunkRow};
pub use webhooks::{
    generate_webhook_secret, pattern_is_known, pattern_matches, AttemptResult, ClaimedEvent,
    Delivery, NewWebhook, NextStep, OutboxEvent, Subscription, Webhook, WebhookPatch, CALL_EVENTS,
    EVENT_TYPES, TEST_EVENT,
};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a SQLite connection waits on a locked database before failing.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint on `field` was violated.
    #[error("conflict: {field} already exists")]
    Conflict { field: &'static str },
    /// The row is still referred to (a trunk with numbers): the message says by what.
    #[error("{0}")]
    InUse(String),
    /// A stored value could not be decoded (a bug or a hand-edited database).
    #[error("bad stored value in column {column}: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// The database refused a write for breaking a constraint (an engine bug such as a
    /// leg of an unknown call), or the data cannot be written as it is: retrying the same
    /// write cannot help. Everything else (a lost connection, a pool timeout, a busy or
    /// restarting database, a serialization failure) may pass on a retry.
    pub fn is_rejected(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => {
                !matches!(db.kind(), sqlx::error::ErrorKind::Other)
            }
            StoreError::Corrupt { .. }
            | StoreError::Conflict { .. }
            | StoreError::InUse(_)
            | StoreError::NotFound => true,
            _ => false,
        }
    }
}

/// Which database the pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One page of a cursor-paginated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// The store: cheap to clone (the pool is reference-counted).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Webhook subscriptions cache and the delivery worker's wake-up, shared by clones.
    hooks: std::sync::Arc<webhooks::Hooks>,
    /// API keys verified in the last second, shared by clones.
    keys: std::sync::Arc<api_keys::KeyCache>,
}

impl Store {
    /// Connect (creating the SQLite file and its directory if missing). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Per connection: these pragmas are not persistent (except WAL,
                        // which is harmless to repeat).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute(
                            format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                        )
                        .await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    } else {
                        // Plan every execution with the tables' sizes of the moment. sqlx
                        // keeps prepared statements per connection, and PostgreSQL otherwise
                        // settles on a generic plan after five runs: one made while `legs`
                        // and `calls` were nearly empty scans them whole, and the record
                        // writer's multi-row UPDATEs then slow down as the tables grow
                        // (measured: 2 ms to 11 ms per statement within 15 s at 1,000
                        // calls/s, until new calls were shed).
                        conn.execute("SET plan_cache_mode = force_custom_plan")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store {
            pool,
            backend,
            hooks: std::sync::Arc::default(),
            keys: std::sync::Arc::default(),
        })
    }

    /// Apply pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&self.pool).await?,
        }
        Ok(())
    }

    /// A transaction that will write. On SQLite it takes the write lock at BEGIN
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and then writes fails
    /// at once with SQLITE_BUSY ("database is locked", no busy wait) when another writer
    /// committed in between, as two concurrent API writes showed (a PATCH of a trunk
    /// answered 500); an immediate one waits its turn under `busy_timeout` instead.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for tests and diagnostics.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Create the directory of a file-backed SQLite URL and make sqlx create the file.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(match query {
        Some(q) if q.contains("mode=") => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    })
}

/// The one stored time format: RFC 3339, UTC, milliseconds, `Z`. Fixed width so that
/// text order is time order.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    let buf = time_bytes(t);
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&buf).into_owned()
}

/// [`fmt_time`] into a stack buffer, for serialising without an allocation: chrono's
/// `format` interprets its pattern on every call, which made up a good part of a call
/// list's serialisation (eight times per call with its legs).
pub fn time_bytes(t: DateTime<Utc>) -> [u8; 24] {
    use chrono::{Datelike, Timelike};
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    // Years outside 0..=9999 do not occur in the store (RFC 3339 cannot write them);
    // clamp rather than write a wider field.
    put(0, 4, t.year().clamp(0, 9999).unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    // A leap second is kept in the nanoseconds (chrono): show it as :60.
    let nanos = t.nanosecond();
    put(17, 2, t.second() + nanos / 1_000_000_000);
    put(20, 3, (nanos % 1_000_000_000) / 1_000_000);
    b
}

/// The current time, truncated to what the store keeps (milliseconds).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn parse_time(column: &'static str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    if let Some(t) = parse_stored_time(s) {
        return Ok(t);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            column,
            reason: format!("{s:?}: {e}"),
        })
}

/// The one stored format (`2026-01-31T09:00:00.123Z`) read directly; anything else
/// (`None`) goes through the general RFC 3339 parser.
fn parse_stored_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = chrono::NaiveTime::from_hms_milli_opt(
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
        num(20, 23)?,
    )?;
    Some(date.and_time(time).and_utc())
}

fn get_str(row: &AnyRow, column: &'static str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(column)?)
}

fn get_opt_str(row: &AnyRow, column: &'static str) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

fn get_i64(row: &AnyRow, column: &'static str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(column)?)
}

fn get_opt_i64(row: &AnyRow, column: &'static str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

fn get_time(row: &AnyRow, column: &'static str) -> Result<DateTime<Utc>, StoreError> {
    parse_time(column, &get_str(row, column)?)
}

fn get_opt_time(row: &AnyRow, column: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_opt_str(row, column)?
        .map(|s| parse_time(column, &s))
        .transpose()
}

fn get_enum<T: FromStr>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let s = get_str(row, column)?;
    s.parse().map_err(|_| StoreError::Corrupt {
        column,
        reason: format!("unexpected value {s:?}"),
    })
}

/// Map a unique-constraint violation to `Conflict { field }`.
fn conflict_on(field: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict { field },
        _ => StoreError::Db(e),
    }
}

/// Split `limit + 1` fetched rows into a page: the extra row only says "there is more".
fn into_page<T>(mut rows: Vec<T>, limit: usize, id: impl Fn(&T) -> &str) -> Page<T> {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| id(r).to_owned())
    } else {
        None
    };
    Page { data: rows, next }
}

/// `limit` as an SQL parameter, fetching one extra row to know whether a next page exists.
fn limit_plus_one(limit: usize) -> i64 {
    i64::try_from(limit)
        .unwrap_or(i64::MAX - 1)
        .saturating_add(1)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn stored_time_round_trips() {
        for s in [
            "2026-01-31T09:00:00.123Z",
            "0001-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let t = parse_time("t", s).ok();
            assert_eq!(t.map(fmt_time).as_deref(), Some(s));
        }
        // Other RFC 3339 forms still parse; nonsense does not.
        let t = parse_time("t", "2026-01-31T10:00:00+01:00").ok();
        assert_eq!(t.map(fmt_time).as_deref(), Some("2026-01-31T09:00:00.000Z"));
        assert!(parse_time("t", "2026-02-30T09:00:00.000Z").is_err());
        assert!(parse_time("t", "2026-01-31T09:00:00.12xZ").is_err());
        // The same text as chrono's formatter.
        let now = Utc::now();
        assert_eq!(
            fmt_time(now),
            now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        );
    }
}
