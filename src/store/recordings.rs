//! Call recordings (SPEC §4 recordings): one row per recording, the audio in a file whose
//! key (`recordings/YYYY/MM/DD/<id>.wav`) is relative to the storage root.
//!
//! A row is written when recording starts, so a recording that a crash cut short is still
//! known at start-up ([`Store::interrupted_recordings`]) and completes with the audio its
//! repaired file holds. Completing a recording and its `recording.completed` webhook rows
//! are one transaction (SPEC §5).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::calls::Where;
use super::webhooks::Outbox;
use super::{
    fmt_time, get_enum, get_i64, get_opt_i64, get_opt_str, get_opt_time, get_str, get_time,
    into_page, limit_plus_one, now, Page, Store, StoreError,
};

/// `mono` (both parties mixed) or `dual` (left = agent/internal, right = lead/external).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecordingChannels {
    Mono,
    #[default]
    Dual,
}

impl RecordingChannels {
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordingChannels::Mono => "mono",
            RecordingChannels::Dual => "dual",
        }
    }

    /// Channels in the WAV file.
    pub const fn count(self) -> u16 {
        match self {
            RecordingChannels::Mono => 1,
            RecordingChannels::Dual => 2,
        }
    }
}

impl FromStr for RecordingChannels {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "mono" => Ok(RecordingChannels::Mono),
            "dual" => Ok(RecordingChannels::Dual),
            _ => Err(()),
        }
    }
}

/// Where a recording is in its life. `recording` and `paused` are live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordingStatus {
    Recording,
    Paused,
    Completed,
    Failed,
}

impl RecordingStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Paused => "paused",
            RecordingStatus::Completed => "completed",
            RecordingStatus::Failed => "failed",
        }
    }

    pub const fn is_live(self) -> bool {
        matches!(self, RecordingStatus::Recording | RecordingStatus::Paused)
    }
}

impl FromStr for RecordingStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "recording" => Ok(RecordingStatus::Recording),
            "paused" => Ok(RecordingStatus::Paused),
            "completed" => Ok(RecordingStatus::Completed),
            "failed" => Ok(RecordingStatus::Failed),
            _ => Err(()),
        }
    }
}

impl fmt::Display for RecordingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the audio lives: under the data dir, or (later) an S3-compatible bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecordingStorage {
    #[default]
    Local,
    S3,
}

impl RecordingStorage {
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordingStorage::Local => "local",
            RecordingStorage::S3 => "s3",
        }
    }
}

impl FromStr for RecordingStorage {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "local" => Ok(RecordingStorage::Local),
            "s3" => Ok(RecordingStorage::S3),
            _ => Err(()),
        }
    }
}

/// One row of `recordings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    pub call_id: String,
    pub agent_id: Option<String>,
    pub channels: RecordingChannels,
    pub status: RecordingStatus,
    pub storage: RecordingStorage,
    /// The object's key relative to the storage root.
    pub path: String,
    pub sample_rate: u32,
    pub duration_ms: Option<i64>,
    pub size_bytes: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A recording that starts now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecording {
    pub id: String,
    pub call_id: String,
    pub agent_id: Option<String>,
    pub channels: RecordingChannels,
    pub sample_rate: u32,
    pub started_at: DateTime<Utc>,
}

impl NewRecording {
    /// The object key of this recording: `recordings/YYYY/MM/DD/<id>.wav` by its start
    /// (UTC).
    pub fn path(&self) -> String {
        format!(
            "recordings/{}/{}.wav",
            self.started_at.format("%Y/%m/%d"),
            self.id
        )
    }
}

/// How a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingEnd {
    /// `Completed`, or `Failed` when nothing usable was written.
    pub status: RecordingStatus,
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub ended_at: DateTime<Utc>,
}

/// Filters of `GET /v1/recordings`.
#[derive(Clone, Debug, Default)]
pub struct RecordingFilter {
    pub call_id: Option<String>,
    /// An agent id (the API resolves usernames).
    pub agent_id: Option<String>,
    /// `started_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `started_at < until`.
    pub until: Option<DateTime<Utc>>,
}

const RECORDING_COLUMNS: &str = "id, call_id, agent_id, channels, status, storage, path, \
     sample_rate, duration_ms, size_bytes, started_at, ended_at, created_at, updated_at";

fn recording_from_row(row: &AnyRow) -> Result<Recording, StoreError> {
    let sample_rate = get_i64(row, "sample_rate")?;
    Ok(Recording {
        id: get_str(row, "id")?,
        call_id: get_str(row, "call_id")?,
        agent_id: get_opt_str(row, "agent_id")?,
        channels: get_enum(row, "channels")?,
        status: get_enum(row, "status")?,
        storage: get_enum(row, "storage")?,
        path: get_str(row, "path")?,
        sample_rate: u32::try_from(sample_rate).map_err(|_| StoreError::Corrupt {
            column: "sample_rate",
            reason: format!("{sample_rate} is not a sample rate"),
        })?,
        duration_ms: get_opt_i64(row, "duration_ms")?,
        size_bytes: get_opt_i64(row, "size_bytes")?,
        started_at: get_time(row, "started_at")?,
        ended_at: get_opt_time(row, "ended_at")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

/// The data of a `recording.completed` event: the recording as the API shows it.
pub fn recording_event_data(r: &Recording) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "call_id": r.call_id,
        "agent_id": r.agent_id,
        "channels": r.channels.as_str(),
        "status": r.status.as_str(),
        "sample_rate": r.sample_rate,
        "duration_ms": r.duration_ms,
        "size_bytes": r.size_bytes,
        "started_at": fmt_time(r.started_at),
        "ended_at": r.ended_at.map(fmt_time),
    })
}

impl Store {
    /// Record that a recording has started (status `recording`).
    pub async fn insert_recording(&self, new: &NewRecording) -> Result<Recording, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let inserted = insert_recording_row(&mut conn, new, &fmt_time(now())).await?;
        drop(conn);
        if !inserted {
            return Err(StoreError::Conflict { field: "id" });
        }
        self.get_recording(&new.id).await
    }

    /// Pause or resume a live recording. A recording that has ended is a conflict.
    pub async fn set_recording_paused(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<Recording, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let changed = set_paused_row(&mut conn, id, paused, &fmt_time(now())).await?;
        drop(conn);
        if !changed {
            let r = self.get_recording(id).await?;
            return Err(StoreError::InUse(format!(
                "recording {id} is {}, not live",
                r.status
            )));
        }
        self.get_recording(id).await
    }

    /// End a live recording, with its `recording.completed` webhook rows in the same
    /// transaction. Ending one that has already ended changes nothing (the writer may
    /// retry after a crash) and sends no second event.
    pub async fn complete_recording(
        &self,
        id: &str,
        end: RecordingEnd,
    ) -> Result<Recording, StoreError> {
        let subs = self.subscriptions().await?;
        let mut tx = self.begin_write().await?;
        let ended = end_recording_row(&mut tx, id, end, &fmt_time(now())).await?;
        let mut outbox = Outbox::new(subs);
        if let Some(rec) = &ended {
            outbox.push(
                "recording.completed",
                Some(&rec.call_id),
                &recording_event_data(rec),
                None,
            );
            outbox.write(&mut tx).await?;
        }
        tx.commit().await?;
        if !outbox.is_empty() {
            self.notify_webhooks();
        }
        self.get_recording(id).await
    }

    pub async fn get_recording(&self, id: &str) -> Result<Recording, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        recording_from_row(&row)
    }

    /// Newest first, cursor-paginated by id.
    pub async fn list_recordings(
        &self,
        filter: &RecordingFilter,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Recording>, StoreError> {
        let mut w = Where::default();
        if let Some(after) = after {
            let p = w.param(after);
            w.clauses.push(format!("id < {p}"));
        }
        if let Some(call) = &filter.call_id {
            let p = w.param(call.as_str());
            w.clauses.push(format!("call_id = {p}"));
        }
        if let Some(agent) = &filter.agent_id {
            let p = w.param(agent.as_str());
            w.clauses.push(format!("agent_id = {p}"));
        }
        if let Some(since) = filter.since {
            let p = w.param(fmt_time(since));
            w.clauses.push(format!("started_at >= {p}"));
        }
        if let Some(until) = filter.until {
            let p = w.param(fmt_time(until));
            w.clauses.push(format!("started_at < {p}"));
        }
        let sql = format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE {} ORDER BY id DESC LIMIT ${}",
            w.sql(),
            w.binds.len() + 1
        );
        let mut q = sqlx::query(&sql);
        for b in &w.binds {
            q = q.bind(b.as_str());
        }
        let rows = q.bind(limit_plus_one(limit)).fetch_all(&self.pool).await?;
        let recs = rows
            .iter()
            .map(recording_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(recs, limit, |r| r.id.as_str()))
    }

    /// Delete an ended recording's row; returns it so the caller can remove the audio.
    /// A live recording is [`StoreError::InUse`].
    pub async fn delete_recording(&self, id: &str) -> Result<Recording, StoreError> {
        let rec = self.get_recording(id).await?;
        if rec.status.is_live() {
            return Err(StoreError::InUse(format!(
                "recording {id} is still {}; stop it first",
                rec.status
            )));
        }
        let done = sqlx::query(
            "DELETE FROM recordings WHERE id = $1 AND status NOT IN ('recording', 'paused')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(rec)
    }

    /// Recordings still marked live: at start-up, those a crash (or kill -9) cut short.
    pub async fn interrupted_recordings(&self) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings \
             WHERE status IN ('recording', 'paused') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }
}

/// Inserts a recording's row (status `recording`); an existing id changes nothing (the
/// writer may retry a batch): false then.
pub(super) async fn insert_recording_row(
    conn: &mut AnyConnection,
    new: &NewRecording,
    t: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(&format!(
        "INSERT INTO recordings ({RECORDING_COLUMNS}) \
         VALUES ($1, $2, $3, $4, 'recording', 'local', $5, $6, NULL, NULL, $7, NULL, $8, $9) \
         ON CONFLICT (id) DO NOTHING"
    ))
    .bind(new.id.as_str())
    .bind(new.call_id.as_str())
    .bind(new.agent_id.as_deref())
    .bind(new.channels.as_str())
    .bind(new.path())
    .bind(i64::from(new.sample_rate))
    .bind(fmt_time(new.started_at))
    .bind(t)
    .bind(t)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Marks a live recording paused or recording again; false if it is not live.
pub(super) async fn set_paused_row(
    conn: &mut AnyConnection,
    id: &str,
    paused: bool,
    t: &str,
) -> Result<bool, StoreError> {
    let status = if paused {
        RecordingStatus::Paused
    } else {
        RecordingStatus::Recording
    };
    let done = sqlx::query(
        "UPDATE recordings SET status = $1, updated_at = $2 \
         WHERE id = $3 AND status IN ('recording', 'paused')",
    )
    .bind(status.as_str())
    .bind(t)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends a live recording; the ended recording if this completed it (its
/// `recording.completed` is due), `None` if it had ended already or failed.
pub(super) async fn end_recording_row(
    conn: &mut AnyConnection,
    id: &str,
    end: RecordingEnd,
    t: &str,
) -> Result<Option<Recording>, StoreError> {
    let done = sqlx::query(
        "UPDATE recordings SET status = $1, duration_ms = $2, size_bytes = $3, \
         ended_at = $4, updated_at = $5 WHERE id = $6 AND status IN ('recording', 'paused')",
    )
    .bind(end.status.as_str())
    .bind(end.duration_ms)
    .bind(end.size_bytes)
    .bind(fmt_time(end.ended_at))
    .bind(t)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let rec = recording_from_row(&row)?;
    Ok((rec.status == RecordingStatus::Completed).then_some(rec))
}
