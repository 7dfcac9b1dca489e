//! Call programs' resources (SPEC §4, §6): prompts, IVR flows and queues. A flow keeps the
//! references its author wrote (ids or names), so the checks before a delete match a
//! prompt or queue by both; numbers and queues keep resolved ids.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use voxgate_ivr::flow::{Flow, Node};

use super::{
    conflict_on, fmt_time, get_i64, get_opt_i64, get_opt_str, get_str, get_time, into_page,
    limit_plus_one, now, Page, Store, StoreError,
};
use crate::ids::{new_id, IdKind};

/// One row of `prompts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptRow {
    pub id: String,
    pub name: String,
    pub format: String,
    pub duration_ms: i64,
    pub sample_rate: i64,
    /// The decoded audio under the data dir (written by the upload route).
    pub path: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A prompt to store; the upload route fills it after decoding.
#[derive(Clone, Debug)]
pub struct NewPrompt {
    pub name: String,
    pub format: String,
    pub duration_ms: i64,
    pub sample_rate: i64,
    pub path: Option<String>,
}

/// One row of `ivr_flows`.
#[derive(Clone, Debug, PartialEq)]
pub struct IvrFlowRow {
    pub id: String,
    pub name: String,
    /// The flow JSON (SPEC §6) as validated.
    pub flow: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A queue's settings, as stored (references resolved to ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub strategy: String,
    pub required_skills: Vec<String>,
    /// A prompt id.
    pub hold_prompt: Option<String>,
    pub max_wait_seconds: Option<i64>,
    /// `(type, target)`: an id for agent, queue and ivr, the URL for webhook.
    pub overflow: Option<(String, String)>,
    pub announce_position: bool,
    pub ring_timeout_seconds: i64,
}

/// One row of `queues`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub id: String,
    pub spec: QueueSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The ids and names a flow may reference, read at once for [`voxgate_ivr::flow::Catalog`].
#[derive(Clone, Debug, Default)]
pub struct CatalogNames {
    pub prompts: HashSet<String>,
    pub queues: HashSet<String>,
    pub agents: HashSet<String>,
    pub trunks: HashSet<String>,
}

const PROMPT_COLUMNS: &str = "id, name, format, duration_ms, sample_rate, path, created_at";
const FLOW_COLUMNS: &str = "id, name, flow, created_at, updated_at";
const QUEUE_COLUMNS: &str = "id, name, strategy, required_skills, hold_prompt, \
     max_wait_seconds, overflow_type, overflow_target, announce_position, \
     ring_timeout_seconds, created_at, updated_at";

fn prompt_from_row(row: &AnyRow) -> Result<PromptRow, StoreError> {
    Ok(PromptRow {
        id: get_str(row, "id")?,
        name: get_str(row, "name")?,
        format: get_str(row, "format")?,
        duration_ms: get_i64(row, "duration_ms")?,
        sample_rate: get_i64(row, "sample_rate")?,
        path: get_opt_str(row, "path")?,
        created_at: get_time(row, "created_at")?,
    })
}

fn flow_from_row(row: &AnyRow) -> Result<IvrFlowRow, StoreError> {
    let text = get_str(row, "flow")?;
    let flow = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        column: "flow",
        reason: e.to_string(),
    })?;
    Ok(IvrFlowRow {
        id: get_str(row, "id")?,
        name: get_str(row, "name")?,
        flow,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

fn queue_from_row(row: &AnyRow) -> Result<QueueRow, StoreError> {
    let skills = get_str(row, "required_skills")?;
    let required_skills = serde_json::from_str(&skills).map_err(|e| StoreError::Corrupt {
        column: "required_skills",
        reason: e.to_string(),
    })?;
    let overflow = match (
        get_opt_str(row, "overflow_type")?,
        get_opt_str(row, "overflow_target")?,
    ) {
        (Some(t), Some(x)) => Some((t, x)),
        _ => None,
    };
    Ok(QueueRow {
        id: get_str(row, "id")?,
        spec: QueueSpec {
            name: get_str(row, "name")?,
            strategy: get_str(row, "strategy")?,
            required_skills,
            hold_prompt: get_opt_str(row, "hold_prompt")?,
            max_wait_seconds: get_opt_i64(row, "max_wait_seconds")?,
            overflow,
            announce_position: get_i64(row, "announce_position")? != 0,
            ring_timeout_seconds: get_i64(row, "ring_timeout_seconds")?,
        },
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

/// The prompts (`"prompt"`) and queues (`"queue"`) a flow's nodes name, as written.
pub fn flow_references(flow: &Flow) -> Vec<(&'static str, &str, &str)> {
    let mut out = Vec::new();
    for (node, n) in &flow.nodes {
        match n {
            Node::Play { prompt, .. } | Node::Menu { prompt, .. } => {
                out.push(("prompt", node.as_str(), prompt.as_str()));
            }
            Node::Gather {
                prompt: Some(prompt),
                ..
            } => out.push(("prompt", node.as_str(), prompt.as_str())),
            Node::Enqueue { queue, .. } => out.push(("queue", node.as_str(), queue.as_str())),
            _ => {}
        }
    }
    out
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// The first flow naming `kind` `id` or `name`, as "ivr flow NAME (node NODE)".
async fn flow_referrer(
    tx: &mut Tx<'_>,
    kind: &str,
    id: &str,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {FLOW_COLUMNS} FROM ivr_flows ORDER BY id"))
        .fetch_all(&mut **tx)
        .await?;
    for row in rows {
        let f = flow_from_row(&row)?;
        let Ok(flow) = serde_json::from_value::<Flow>(f.flow) else {
            continue;
        };
        if let Some((_, node, _)) = flow_references(&flow)
            .into_iter()
            .find(|(k, _, r)| *k == kind && (*r == id || *r == name))
        {
            return Ok(Some(format!("ivr flow {:?} (node {node:?})", f.name)));
        }
    }
    Ok(None)
}

/// A number or queue routing to `route_type` `id`.
async fn route_referrer(
    tx: &mut Tx<'_>,
    route_type: &str,
    id: &str,
) -> Result<Option<String>, StoreError> {
    if let Some(row) = sqlx::query(
        "SELECT number FROM numbers WHERE route_type = $1 AND route_target = $2 \
         ORDER BY number LIMIT 1",
    )
    .bind(route_type)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    {
        return Ok(Some(format!("number {}", get_str(&row, "number")?)));
    }
    if let Some(row) = sqlx::query(
        "SELECT name FROM queues WHERE overflow_type = $1 AND overflow_target = $2 \
         ORDER BY id LIMIT 1",
    )
    .bind(route_type)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    {
        return Ok(Some(format!(
            "queue {:?} (overflow)",
            get_str(&row, "name")?
        )));
    }
    Ok(None)
}

impl Store {
    // ---- prompts ----

    /// Store a prompt's row (the upload route writes the audio first).
    pub async fn create_prompt(&self, new: &NewPrompt) -> Result<PromptRow, StoreError> {
        self.create_prompt_with_id(&new_id(IdKind::Prompt), new)
            .await
    }

    /// Store a prompt's row under an id chosen before: the upload route names the
    /// audio's folder after the prompt and writes it before the row, so that no row
    /// ever points to missing audio.
    pub async fn create_prompt_with_id(
        &self,
        id: &str,
        new: &NewPrompt,
    ) -> Result<PromptRow, StoreError> {
        let p = PromptRow {
            id: id.to_owned(),
            name: new.name.clone(),
            format: new.format.clone(),
            duration_ms: new.duration_ms,
            sample_rate: new.sample_rate,
            path: new.path.clone(),
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO prompts (id, name, format, duration_ms, sample_rate, path, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.format)
        .bind(p.duration_ms)
        .bind(p.sample_rate)
        .bind(&p.path)
        .bind(fmt_time(p.created_at))
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name"))?;
        Ok(p)
    }

    /// A prompt by id or unique name.
    pub async fn find_prompt(&self, reference: &str) -> Result<PromptRow, StoreError> {
        self.find_by_reference("prompts", PROMPT_COLUMNS, reference, prompt_from_row)
            .await
    }

    pub async fn list_prompts(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<PromptRow>, StoreError> {
        self.list_page("prompts", PROMPT_COLUMNS, limit, after, prompt_from_row)
            .await
    }

    /// Delete a prompt no queue or flow uses (else [`StoreError::InUse`] naming one).
    pub async fn delete_prompt(&self, id: &str) -> Result<PromptRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {PROMPT_COLUMNS} FROM prompts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let p = prompt_from_row(&row)?;
        let queue =
            sqlx::query("SELECT name FROM queues WHERE hold_prompt = $1 ORDER BY id LIMIT 1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let referrer = match queue {
            Some(q) => Some(format!("queue {:?} (hold_prompt)", get_str(&q, "name")?)),
            None => flow_referrer(&mut tx, "prompt", &p.id, &p.name).await?,
        };
        if let Some(r) = referrer {
            return Err(StoreError::InUse(format!(
                "prompt {:?} is used by {r}",
                p.name
            )));
        }
        sqlx::query("DELETE FROM prompts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Every prompt, queue, agent and trunk id and name, for validating a flow.
    pub async fn catalog_names(&self) -> Result<CatalogNames, StoreError> {
        let mut tx = self.begin_write().await?;
        let names = CatalogNames {
            prompts: id_names(&mut tx, "SELECT id, name FROM prompts").await?,
            queues: id_names(&mut tx, "SELECT id, name FROM queues").await?,
            agents: id_names(&mut tx, "SELECT id, username AS name FROM agents").await?,
            trunks: id_names(&mut tx, "SELECT id, name FROM trunks").await?,
        };
        tx.commit().await?;
        Ok(names)
    }

    // ---- ivr flows ----

    pub async fn create_ivr_flow(
        &self,
        name: &str,
        flow: &serde_json::Value,
    ) -> Result<IvrFlowRow, StoreError> {
        let t = now();
        let f = IvrFlowRow {
            id: new_id(IdKind::IvrFlow),
            name: name.to_owned(),
            flow: flow.clone(),
            created_at: t,
            updated_at: t,
        };
        sqlx::query(
            "INSERT INTO ivr_flows (id, name, flow, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&f.id)
        .bind(&f.name)
        .bind(f.flow.to_string())
        .bind(fmt_time(t))
        .bind(fmt_time(t))
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name"))?;
        Ok(f)
    }

    /// Every IVR flow and prompt, for the call engine's routing snapshot.
    pub async fn programs_catalog(&self) -> Result<(Vec<IvrFlowRow>, Vec<PromptRow>), StoreError> {
        let flows = sqlx::query(&format!("SELECT {FLOW_COLUMNS} FROM ivr_flows ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(flow_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let prompts = sqlx::query(&format!("SELECT {PROMPT_COLUMNS} FROM prompts ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(prompt_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((flows, prompts))
    }

    /// A flow by id or unique name.
    pub async fn find_ivr_flow(&self, reference: &str) -> Result<IvrFlowRow, StoreError> {
        self.find_by_reference("ivr_flows", FLOW_COLUMNS, reference, flow_from_row)
            .await
    }

    pub async fn list_ivr_flows(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<IvrFlowRow>, StoreError> {
        self.list_page("ivr_flows", FLOW_COLUMNS, limit, after, flow_from_row)
            .await
    }

    /// Replace a flow (its name comes from the flow JSON).
    pub async fn update_ivr_flow(
        &self,
        id: &str,
        name: &str,
        flow: &serde_json::Value,
    ) -> Result<IvrFlowRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {FLOW_COLUMNS} FROM ivr_flows WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut f = flow_from_row(&row)?;
        if f.name == name && f.flow == *flow {
            return Ok(f);
        }
        f.name = name.to_owned();
        f.flow = flow.clone();
        f.updated_at = now();
        sqlx::query("UPDATE ivr_flows SET name = $1, flow = $2, updated_at = $3 WHERE id = $4")
            .bind(&f.name)
            .bind(f.flow.to_string())
            .bind(fmt_time(f.updated_at))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(conflict_on("name"))?;
        tx.commit().await?;
        Ok(f)
    }

    /// Delete a flow no number or queue overflow routes to.
    pub async fn delete_ivr_flow(&self, id: &str) -> Result<IvrFlowRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {FLOW_COLUMNS} FROM ivr_flows WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let f = flow_from_row(&row)?;
        if let Some(r) = route_referrer(&mut tx, "ivr", id).await? {
            return Err(StoreError::InUse(format!(
                "ivr flow {:?} is used by {r}",
                f.name
            )));
        }
        sqlx::query("DELETE FROM ivr_flows WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(f)
    }

    // ---- queues ----

    pub async fn create_queue(&self, spec: &QueueSpec) -> Result<QueueRow, StoreError> {
        let t = now();
        let q = QueueRow {
            id: new_id(IdKind::Queue),
            spec: spec.clone(),
            created_at: t,
            updated_at: t,
        };
        let mut tx = self.begin_write().await?;
        write_queue(&mut tx, &q, true).await?;
        tx.commit().await?;
        Ok(q)
    }

    /// A queue by id or unique name.
    pub async fn find_queue(&self, reference: &str) -> Result<QueueRow, StoreError> {
        self.find_by_reference("queues", QUEUE_COLUMNS, reference, queue_from_row)
            .await
    }

    pub async fn list_queues(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<QueueRow>, StoreError> {
        self.list_page("queues", QUEUE_COLUMNS, limit, after, queue_from_row)
            .await
    }

    /// Replace a queue's settings (the caller merged the change into the old ones).
    pub async fn update_queue(&self, id: &str, spec: &QueueSpec) -> Result<QueueRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut q = queue_from_row(&row)?;
        if q.spec == *spec {
            return Ok(q);
        }
        q.spec = spec.clone();
        q.updated_at = now();
        write_queue(&mut tx, &q, false).await?;
        tx.commit().await?;
        Ok(q)
    }

    /// Delete a queue no number, queue overflow or flow uses.
    pub async fn delete_queue(&self, id: &str) -> Result<QueueRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let q = queue_from_row(&row)?;
        let referrer = match route_referrer(&mut tx, "queue", id).await? {
            Some(r) => Some(r),
            None => flow_referrer(&mut tx, "queue", id, &q.spec.name).await?,
        };
        if let Some(r) = referrer {
            return Err(StoreError::InUse(format!(
                "queue {:?} is used by {r}",
                q.spec.name
            )));
        }
        sqlx::query("DELETE FROM queues WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(q)
    }
}

async fn id_names(tx: &mut Tx<'_>, sql: &str) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    for r in sqlx::query(sql).fetch_all(&mut **tx).await? {
        out.insert(get_str(&r, "id")?);
        out.insert(get_str(&r, "name")?);
    }
    Ok(out)
}

async fn write_queue(tx: &mut Tx<'_>, q: &QueueRow, insert: bool) -> Result<(), StoreError> {
    let sql = if insert {
        "INSERT INTO queues (name, strategy, required_skills, hold_prompt, max_wait_seconds, \
         overflow_type, overflow_target, announce_position, ring_timeout_seconds, created_at, \
         updated_at, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    } else {
        "UPDATE queues SET name = $1, strategy = $2, required_skills = $3, hold_prompt = $4, \
         max_wait_seconds = $5, overflow_type = $6, overflow_target = $7, \
         announce_position = $8, ring_timeout_seconds = $9, created_at = $10, \
         updated_at = $11 WHERE id = $12"
    };
    let s = &q.spec;
    sqlx::query(sql)
        .bind(&s.name)
        .bind(&s.strategy)
        .bind(serde_json::to_string(&s.required_skills).unwrap_or_else(|_| "[]".to_owned()))
        .bind(&s.hold_prompt)
        .bind(s.max_wait_seconds)
        .bind(s.overflow.as_ref().map(|(t, _)| t.clone()))
        .bind(s.overflow.as_ref().map(|(_, x)| x.clone()))
        .bind(i64::from(s.announce_position))
        .bind(s.ring_timeout_seconds)
        .bind(fmt_time(q.created_at))
        .bind(fmt_time(q.updated_at))
        .bind(&q.id)
        .execute(&mut **tx)
        .await
        .map_err(conflict_on("name"))?;
    Ok(())
}

/// A row with an `id`, for [`Store::list_page`].
trait HasId {
    fn id(&self) -> &str;
}

impl HasId for PromptRow {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for IvrFlowRow {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for QueueRow {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Store {
    /// The row of `table` whose id or unique name is `reference` (the id wins).
    async fn find_by_reference<T>(
        &self,
        table: &str,
        columns: &str,
        reference: &str,
        from_row: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {columns} FROM {table} WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// One page of `table` in id order, after the cursor `after`.
    async fn list_page<T: HasId>(
        &self,
        table: &str,
        columns: &str,
        limit: usize,
        after: Option<&str>,
        from_row: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let data = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(data, limit, |r| r.id()))
    }
}
