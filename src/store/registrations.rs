//! SIP registrations (contact bindings), persisted write-behind by the registrar so a
//! restart keeps them.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;

use super::{fmt_time, get_i64, get_opt_str, get_str, get_time, now, Store, StoreError};

/// One contact binding of an agent (a row of `registrations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub agent_id: String,
    pub contact: String,
    /// `udp`, `tcp`, `tls`, `ws` or `wss` (lower case).
    pub transport: String,
    /// `ip:port` the REGISTER came from.
    pub source: String,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub call_id: String,
    pub cseq: i64,
}

/// A change queued by the registrar and applied in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationChange {
    /// Insert or update the binding keyed by `(agent_id, contact)`. An existing row keeps
    /// its `id` and `created_at`. Skipped if the agent no longer exists (deleted while the
    /// change was queued), so a late write cannot fail the whole batch or resurrect it.
    Upsert(Registration),
    Remove {
        agent_id: String,
        contact: String,
    },
    RemoveAllForAgent {
        agent_id: String,
    },
}

pub(super) const REGISTRATION_COLUMNS: &str =
    "id, agent_id, contact, transport, source, expires_at, user_agent, call_id, cseq";

pub(super) fn registration_from_row(row: &AnyRow) -> Result<Registration, StoreError> {
    Ok(Registration {
        id: get_str(row, "id")?,
        agent_id: get_str(row, "agent_id")?,
        contact: get_str(row, "contact")?,
        transport: get_str(row, "transport")?,
        source: get_str(row, "source")?,
        expires_at: get_time(row, "expires_at")?,
        user_agent: get_opt_str(row, "user_agent")?,
        call_id: get_str(row, "call_id")?,
        cseq: get_i64(row, "cseq")?,
    })
}

impl Store {
    /// Apply all changes in ONE transaction: on any error nothing is written.
    pub async fn apply_registration_changes(
        &self,
        changes: &[RegistrationChange],
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let t = fmt_time(now());
        let mut tx = self.begin_write().await?;
        for change in changes {
            match change {
                RegistrationChange::Upsert(r) => {
                    let exists = sqlx::query("SELECT 1 FROM agents WHERE id = $1")
                        .bind(&r.agent_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .is_some();
                    if !exists {
                        tracing::debug!(agent_id = %r.agent_id, "registration for a deleted agent skipped");
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO registrations (id, agent_id, contact, transport, source, \
                         expires_at, user_agent, call_id, cseq, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT (agent_id, contact) DO UPDATE SET \
                         transport = excluded.transport, source = excluded.source, \
                         expires_at = excluded.expires_at, user_agent = excluded.user_agent, \
                         call_id = excluded.call_id, cseq = excluded.cseq, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(&r.id)
                    .bind(&r.agent_id)
                    .bind(&r.contact)
                    .bind(&r.transport)
                    .bind(&r.source)
                    .bind(fmt_time(r.expires_at))
                    .bind(&r.user_agent)
                    .bind(&r.call_id)
                    .bind(r.cseq)
                    .bind(&t)
                    .bind(&t)
                    .execute(&mut *tx)
                    .await?;
                }
                RegistrationChange::Remove { agent_id, contact } => {
                    sqlx::query("DELETE FROM registrations WHERE agent_id = $1 AND contact = $2")
                        .bind(agent_id)
                        .bind(contact)
                        .execute(&mut *tx)
                        .await?;
                }
                RegistrationChange::RemoveAllForAgent { agent_id } => {
                    sqlx::query("DELETE FROM registrations WHERE agent_id = $1")
                        .bind(agent_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every stored registration (expired ones included), in creation order.
    pub async fn all_registrations(&self) -> Result<Vec<Registration>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REGISTRATION_COLUMNS} FROM registrations ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// Every stored registration of one agent (expired ones included), in creation order.
    pub async fn registrations_for_agent(
        &self,
        agent_id: &str,
    ) -> Result<Vec<Registration>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE agent_id = $1 ORDER BY id"
        ))
        .bind(agent_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// Delete registrations with `expires_at <= now`; returns how many.
    pub async fn delete_expired_registrations(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(fmt_time(now))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
