//! Agents: SIP users who register softphones and take calls. Passwords are never stored,
//! only the digest HA1 values the registrar needs (RFC 2617 MD5, RFC 8760 SHA-256).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use super::webhooks::Outbox;
use super::{
    conflict_on, fmt_time, get_enum, get_i64, get_opt_str, get_opt_time, get_str, get_time,
    into_page, limit_plus_one, now, Page, Registration, Store, StoreError,
};
use crate::ids::{new_id, IdKind};

/// An agent's own availability setting (the derived call state lives elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Available,
    Away,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Available => "available",
            Presence::Away => "away",
        }
    }
}

impl std::str::FromStr for Presence {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "available" => Ok(Presence::Available),
            "away" => Ok(Presence::Away),
            _ => Err(()),
        }
    }
}

/// One row of `agents`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub ha1_md5: String,
    pub ha1_sha256: String,
    pub realm: String,
    pub skills: Vec<String>,
    pub max_concurrent_calls: i64,
    pub wrap_up_seconds: i64,
    pub presence: Presence,
    /// After-call work until then (set by the engine when a call ends); not offered
    /// queue calls before it.
    pub wrap_up_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the registrar needs to challenge and verify an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAuth {
    pub id: String,
    pub username: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
    pub realm: String,
    pub max_concurrent_calls: i64,
    /// Set `away` (`POST /v1/agents/{id}/status`): registered, but not offered calls.
    pub away: bool,
}

/// Digest credentials derived from a password; the password itself is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl Credentials {
    /// HA1 = H("username:realm:password") with MD5 (RFC 2617 §3.2.2.2) and SHA-256
    /// (RFC 8760 §2).
    pub fn new(username: &str, realm: &str, password: &str) -> Credentials {
        let a1 = format!("{username}:{realm}:{password}");
        Credentials {
            realm: realm.to_owned(),
            ha1_md5: hex::encode(Md5::digest(a1.as_bytes())),
            ha1_sha256: hex::encode(Sha256::digest(a1.as_bytes())),
        }
    }
}

#[derive(Clone, Debug)]
pub struct NewAgent {
    pub username: String,
    pub display_name: Option<String>,
    pub credentials: Credentials,
    pub skills: Vec<String>,
    pub max_concurrent_calls: i64,
    pub wrap_up_seconds: i64,
}

/// A partial update; `None` leaves the column unchanged.
#[derive(Clone, Debug, Default)]
pub struct AgentPatch {
    /// `Some(None)` clears the display name.
    pub display_name: Option<Option<String>>,
    pub credentials: Option<Credentials>,
    pub skills: Option<Vec<String>>,
    pub max_concurrent_calls: Option<i64>,
    pub wrap_up_seconds: Option<i64>,
    pub presence: Option<Presence>,
}

impl AgentPatch {
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none()
            && self.credentials.is_none()
            && self.skills.is_none()
            && self.max_concurrent_calls.is_none()
            && self.wrap_up_seconds.is_none()
            && self.presence.is_none()
    }
}

const AGENT_COLUMNS: &str = "id, username, display_name, ha1_md5, ha1_sha256, realm, skills, \
     max_concurrent_calls, wrap_up_seconds, presence, wrap_up_until, created_at, updated_at";

fn agent_from_row(row: &AnyRow) -> Result<Agent, StoreError> {
    let skills_json = get_str(row, "skills")?;
    let skills = serde_json::from_str(&skills_json).map_err(|e| StoreError::Corrupt {
        column: "skills",
        reason: e.to_string(),
    })?;
    Ok(Agent {
        id: get_str(row, "id")?,
        username: get_str(row, "username")?,
        display_name: get_opt_str(row, "display_name")?,
        ha1_md5: get_str(row, "ha1_md5")?,
        ha1_sha256: get_str(row, "ha1_sha256")?,
        realm: get_str(row, "realm")?,
        skills,
        max_concurrent_calls: get_i64(row, "max_concurrent_calls")?,
        wrap_up_seconds: get_i64(row, "wrap_up_seconds")?,
        presence: get_enum(row, "presence")?,
        wrap_up_until: get_opt_time(row, "wrap_up_until")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

fn auth_from_row(row: &AnyRow) -> Result<AgentAuth, StoreError> {
    Ok(AgentAuth {
        id: get_str(row, "id")?,
        username: get_str(row, "username")?,
        ha1_md5: get_str(row, "ha1_md5")?,
        ha1_sha256: get_str(row, "ha1_sha256")?,
        realm: get_str(row, "realm")?,
        max_concurrent_calls: get_i64(row, "max_concurrent_calls")?,
        away: get_enum::<Presence>(row, "presence")? == Presence::Away,
    })
}

fn skills_json(skills: &[String]) -> String {
    serde_json::to_string(skills).unwrap_or_else(|_| "[]".to_owned())
}

/// The event of an agent's presence change (`POST /v1/agents/{id}/status`).
const AGENT_STATE_CHANGED: &str = "agent.state_changed";

impl Store {
    pub async fn create_agent(&self, new: &NewAgent) -> Result<Agent, StoreError> {
        let t = now();
        let agent = Agent {
            id: new_id(IdKind::Agent),
            username: new.username.clone(),
            display_name: new.display_name.clone(),
            ha1_md5: new.credentials.ha1_md5.clone(),
            ha1_sha256: new.credentials.ha1_sha256.clone(),
            realm: new.credentials.realm.clone(),
            skills: new.skills.clone(),
            max_concurrent_calls: new.max_concurrent_calls,
            wrap_up_seconds: new.wrap_up_seconds,
            presence: Presence::Available,
            wrap_up_until: None,
            created_at: t,
            updated_at: t,
        };
        sqlx::query(
            "INSERT INTO agents (id, username, display_name, ha1_md5, ha1_sha256, realm, skills, \
             max_concurrent_calls, wrap_up_seconds, presence, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&agent.id)
        .bind(&agent.username)
        .bind(&agent.display_name)
        .bind(&agent.ha1_md5)
        .bind(&agent.ha1_sha256)
        .bind(&agent.realm)
        .bind(skills_json(&agent.skills))
        .bind(agent.max_concurrent_calls)
        .bind(agent.wrap_up_seconds)
        .bind(agent.presence.as_str())
        .bind(fmt_time(t))
        .bind(fmt_time(t))
        .execute(&self.pool)
        .await
        .map_err(conflict_on("username"))?;
        Ok(agent)
    }

    pub async fn get_agent(&self, id: &str) -> Result<Agent, StoreError> {
        let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    pub async fn get_agent_by_username(&self, username: &str) -> Result<Agent, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    /// Resolve a reference that is either an agent id or a username (SPEC §4).
    pub async fn find_agent(&self, reference: &str) -> Result<Agent, StoreError> {
        if IdKind::Agent.matches(reference) {
            match self.get_agent(reference).await {
                Err(StoreError::NotFound) => {}
                other => return other,
            }
        }
        self.get_agent_by_username(reference).await
    }

    /// Agents in creation order, after the cursor `after` (an agent id).
    pub async fn list_agents(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<Agent>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let agents = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(agents, limit, |a| &a.id))
    }

    /// Apply `patch` to the agent with this id, in one transaction.
    pub async fn update_agent(&self, id: &str, patch: &AgentPatch) -> Result<Agent, StoreError> {
        // Before the transaction: a reload must not wait for a second connection inside it.
        let subs = self.subscriptions().await?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut agent = agent_from_row(&row)?;
        if patch.is_empty() {
            return Ok(agent);
        }
        let previous = agent.presence;
        if let Some(d) = &patch.display_name {
            agent.display_name.clone_from(d);
        }
        if let Some(c) = &patch.credentials {
            agent.realm.clone_from(&c.realm);
            agent.ha1_md5.clone_from(&c.ha1_md5);
            agent.ha1_sha256.clone_from(&c.ha1_sha256);
        }
        if let Some(s) = &patch.skills {
            agent.skills.clone_from(s);
        }
        if let Some(m) = patch.max_concurrent_calls {
            agent.max_concurrent_calls = m;
        }
        if let Some(w) = patch.wrap_up_seconds {
            agent.wrap_up_seconds = w;
        }
        if let Some(p) = patch.presence {
            agent.presence = p;
        }
        agent.updated_at = now();
        sqlx::query(
            "UPDATE agents SET display_name = $1, ha1_md5 = $2, ha1_sha256 = $3, realm = $4, \
             skills = $5, max_concurrent_calls = $6, wrap_up_seconds = $7, presence = $8, \
             updated_at = $9 WHERE id = $10",
        )
        .bind(&agent.display_name)
        .bind(&agent.ha1_md5)
        .bind(&agent.ha1_sha256)
        .bind(&agent.realm)
        .bind(skills_json(&agent.skills))
        .bind(agent.max_concurrent_calls)
        .bind(agent.wrap_up_seconds)
        .bind(agent.presence.as_str())
        .bind(fmt_time(agent.updated_at))
        .bind(&agent.id)
        .execute(&mut *tx)
        .await?;
        // SPEC §5 agent.state_changed, in the same transaction as the change.
        let mut outbox = Outbox::new(subs);
        if agent.presence != previous && outbox.subscribed(AGENT_STATE_CHANGED) {
            let data = serde_json::json!({
                "id": agent.id,
                "username": agent.username,
                "state": agent.presence.as_str(),
                "previous_state": previous.as_str(),
                "changed_at": fmt_time(agent.updated_at),
            });
            outbox.push(AGENT_STATE_CHANGED, Some(&agent.id), &data, None);
            outbox.write(&mut tx).await?;
        }
        tx.commit().await?;
        if !outbox.is_empty() {
            self.notify_webhooks();
        }
        Ok(agent)
    }

    /// Put an agent in wrap-up until `until` (`None` ends it): the engine calls this when
    /// an agent's call ends and `wrap_up_seconds` is not 0.
    pub async fn set_agent_wrap_up(
        &self,
        id: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE agents SET wrap_up_until = $1 WHERE id = $2")
            .bind(until.map(fmt_time))
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Delete an agent (its registrations go with it, ON DELETE CASCADE); returns the row.
    pub async fn delete_agent(&self, id: &str) -> Result<Agent, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let agent = agent_from_row(&row)?;
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(agent)
    }

    pub async fn agent_auth_by_username(
        &self,
        username: &str,
    ) -> Result<Option<AgentAuth>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, ha1_md5, ha1_sha256, realm, max_concurrent_calls, presence \
             FROM agents WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(auth_from_row).transpose()
    }

    pub async fn all_agent_auth(&self) -> Result<Vec<AgentAuth>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, username, ha1_md5, ha1_sha256, realm, max_concurrent_calls, presence \
             FROM agents ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(auth_from_row).collect()
    }

    /// Registrations not yet expired at `now` for each of `agent_ids`, oldest first.
    pub async fn live_registrations_for_agents(
        &self,
        agent_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Vec<Registration>>, StoreError> {
        let mut out: HashMap<String, Vec<Registration>> = HashMap::new();
        if agent_ids.is_empty() {
            return Ok(out);
        }
        // $1 is the time, then one placeholder per id, in order of appearance.
        let placeholders: Vec<String> = (2..agent_ids.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {} FROM registrations WHERE expires_at > $1 AND agent_id IN ({}) ORDER BY id",
            super::registrations::REGISTRATION_COLUMNS,
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(fmt_time(now));
        for id in agent_ids {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&self.pool).await? {
            let r = super::registrations::registration_from_row(&row)?;
            out.entry(r.agent_id.clone()).or_default().push(r);
        }
        Ok(out)
    }
}
