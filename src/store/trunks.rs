//! Trunks and inbound numbers (SPEC §4 `trunks`, `numbers`). A trunk's settings are
//! validated before they get here ([`TrunkConfig`]); the store keeps at most one trunk
//! flagged `default_outbound` (setting it on one clears it on the others, in the same
//! transaction) and refuses to delete a trunk that still has numbers.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::RecordingChannels;
use super::{
    conflict_on, fmt_time, get_enum, get_i64, get_opt_i64, get_opt_str, get_str, get_time,
    into_page, limit_plus_one, now, Page, Store, StoreError,
};
use crate::ids::{new_id, IdKind};
use crate::trunks::{Inbound, Outbound, Rate, SimulateRule, TrunkConfig};

/// One row of `trunks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkRow {
    pub id: String,
    pub config: TrunkConfig,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a number's inbound calls go, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberRow {
    /// E.164.
    pub number: String,
    pub trunk_id: String,
    /// `agent` (others come with call programs).
    pub route_type: String,
    /// For `agent`: the agent's id.
    pub route_target: String,
    /// Record its calls, with these channels.
    pub record: Option<RecordingChannels>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const TRUNK_COLUMNS: &str = "id, name, provider, outbound_host, outbound_port, \
     outbound_transport, outbound_username, outbound_password, register, register_expires, \
     inbound_allowed_cidrs, inbound_username, inbound_password, codecs, max_cps, \
     max_calls_per_minute, max_concurrent_calls, number_format, caller_id, country_code, \
     rate_per_minute_micros, rate_currency, rate_increment_seconds, rate_minimum_seconds, \
     simulate, default_outbound, created_at, updated_at";

const NUMBER_COLUMNS: &str =
    "number, trunk_id, route_type, route_target, record, created_at, updated_at";

fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let s = get_str(row, column)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
        column,
        reason: e.to_string(),
    })
}

fn opt_u32(row: &AnyRow, column: &'static str) -> Result<Option<u32>, StoreError> {
    get_opt_i64(row, column)?
        .map(|v| {
            u32::try_from(v).map_err(|_| StoreError::Corrupt {
                column,
                reason: format!("{v} is out of range"),
            })
        })
        .transpose()
}

fn trunk_from_row(row: &AnyRow) -> Result<TrunkRow, StoreError> {
    let rate = match (
        get_opt_i64(row, "rate_per_minute_micros")?,
        get_opt_str(row, "rate_currency")?,
    ) {
        (Some(per_minute_micros), Some(currency)) => Some(Rate {
            per_minute_micros,
            currency,
            increment_seconds: opt_u32(row, "rate_increment_seconds")?.unwrap_or(1),
            minimum_seconds: opt_u32(row, "rate_minimum_seconds")?.unwrap_or(0),
        }),
        _ => None,
    };
    let port = get_opt_i64(row, "outbound_port")?
        .map(|p| {
            u16::try_from(p).map_err(|_| StoreError::Corrupt {
                column: "outbound_port",
                reason: format!("{p} is not a port"),
            })
        })
        .transpose()?;
    let simulate: Vec<SimulateRule> = json_column(row, "simulate")?;
    Ok(TrunkRow {
        id: get_str(row, "id")?,
        config: TrunkConfig {
            name: get_str(row, "name")?,
            provider: get_enum(row, "provider")?,
            outbound: Outbound {
                host: get_opt_str(row, "outbound_host")?,
                port,
                transport: get_enum(row, "outbound_transport")?,
                username: get_opt_str(row, "outbound_username")?,
                password: get_opt_str(row, "outbound_password")?,
                register: get_i64(row, "register")? != 0,
                register_expires: opt_u32(row, "register_expires")?,
            },
            inbound: Inbound {
                allowed_cidrs: json_column(row, "inbound_allowed_cidrs")?,
                username: get_opt_str(row, "inbound_username")?,
                password: get_opt_str(row, "inbound_password")?,
            },
            codecs: json_column(row, "codecs")?,
            max_cps: opt_u32(row, "max_cps")?,
            max_calls_per_minute: opt_u32(row, "max_calls_per_minute")?,
            max_concurrent_calls: opt_u32(row, "max_concurrent_calls")?,
            number_format: get_enum(row, "number_format")?,
            caller_id: get_opt_str(row, "caller_id")?,
            country_code: get_opt_str(row, "country_code")?,
            rate,
            simulate,
            default_outbound: get_i64(row, "default_outbound")? != 0,
        },
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

fn number_from_row(row: &AnyRow) -> Result<NumberRow, StoreError> {
    Ok(NumberRow {
        number: get_str(row, "number")?,
        trunk_id: get_str(row, "trunk_id")?,
        route_type: get_str(row, "route_type")?,
        route_target: get_str(row, "route_target")?,
        record: match get_opt_str(row, "record")?.as_deref() {
            None => None,
            Some("mono") => Some(RecordingChannels::Mono),
            Some("dual") => Some(RecordingChannels::Dual),
            Some(other) => {
                return Err(StoreError::Corrupt {
                    column: "record",
                    reason: format!("unknown channels {other:?}"),
                })
            }
        },
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// Clear the default flag on every trunk but `keep`.
async fn clear_default(conn: &mut AnyConnection, keep: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE trunks SET default_outbound = 0 WHERE default_outbound = 1 AND id <> $1")
        .bind(keep)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// INSERT (`insert`) or UPDATE the trunk's columns from `row`.
async fn write_trunk(
    conn: &mut AnyConnection,
    row: &TrunkRow,
    insert: bool,
) -> Result<(), StoreError> {
    let c = &row.config;
    let sql = if insert {
        format!(
            "INSERT INTO trunks ({TRUNK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, \
             $26, $27, $28)"
        )
    } else {
        "UPDATE trunks SET name = $2, provider = $3, outbound_host = $4, outbound_port = $5, \
         outbound_transport = $6, outbound_username = $7, outbound_password = $8, \
         register = $9, register_expires = $10, inbound_allowed_cidrs = $11, \
         inbound_username = $12, inbound_password = $13, codecs = $14, max_cps = $15, \
         max_calls_per_minute = $16, max_concurrent_calls = $17, number_format = $18, \
         caller_id = $19, country_code = $20, rate_per_minute_micros = $21, \
         rate_currency = $22, rate_increment_seconds = $23, rate_minimum_seconds = $24, \
         simulate = $25, default_outbound = $26, created_at = $27, updated_at = $28 \
         WHERE id = $1"
            .to_owned()
    };
    let rate = c.rate.as_ref();
    sqlx::query(&sql)
        .bind(&row.id)
        .bind(&c.name)
        .bind(c.provider.as_str())
        .bind(&c.outbound.host)
        .bind(c.outbound.port.map(i64::from))
        .bind(c.outbound.transport.as_str())
        .bind(&c.outbound.username)
        .bind(&c.outbound.password)
        .bind(i64::from(c.outbound.register))
        .bind(c.outbound.register_expires.map(i64::from))
        .bind(to_json(&c.inbound.allowed_cidrs))
        .bind(&c.inbound.username)
        .bind(&c.inbound.password)
        .bind(to_json(&c.codecs))
        .bind(c.max_cps.map(i64::from))
        .bind(c.max_calls_per_minute.map(i64::from))
        .bind(c.max_concurrent_calls.map(i64::from))
        .bind(c.number_format.as_str())
        .bind(&c.caller_id)
        .bind(&c.country_code)
        .bind(rate.map(|r| r.per_minute_micros))
        .bind(rate.map(|r| r.currency.clone()))
        .bind(rate.map(|r| i64::from(r.increment_seconds)))
        .bind(rate.map(|r| i64::from(r.minimum_seconds)))
        .bind(to_json(&c.simulate))
        .bind(i64::from(c.default_outbound))
        .bind(fmt_time(row.created_at))
        .bind(fmt_time(row.updated_at))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            // Two trunks flagged default at once (concurrent requests on PostgreSQL): the
            // partial unique index stops the second.
            let on_default = matches!(&e, sqlx::Error::Database(db)
                if db.is_unique_violation()
                    && (db.constraint() == Some("trunks_one_default")
                        || db.message().contains("default_outbound")));
            if on_default {
                StoreError::Conflict {
                    field: "default_outbound",
                }
            } else {
                conflict_on("name")(e)
            }
        })?;
    Ok(())
}

impl Store {
    /// Store a new trunk; with `default_outbound` it becomes the only default.
    pub async fn create_trunk(&self, config: &TrunkConfig) -> Result<TrunkRow, StoreError> {
        let t = now();
        let row = TrunkRow {
            id: new_id(IdKind::Trunk),
            config: config.clone(),
            created_at: t,
            updated_at: t,
        };
        let mut tx = self.begin_write().await?;
        if config.default_outbound {
            clear_default(&mut tx, &row.id).await?;
        }
        write_trunk(&mut tx, &row, true).await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn get_trunk(&self, id: &str) -> Result<TrunkRow, StoreError> {
        let row = sqlx::query(&format!("SELECT {TRUNK_COLUMNS} FROM trunks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        trunk_from_row(&row)
    }

    /// A trunk by id or unique name (SPEC §4 references).
    pub async fn find_trunk(&self, reference: &str) -> Result<TrunkRow, StoreError> {
        if IdKind::Trunk.matches(reference) {
            match self.get_trunk(reference).await {
                Err(StoreError::NotFound) => {}
                other => return other,
            }
        }
        let row = sqlx::query(&format!(
            "SELECT {TRUNK_COLUMNS} FROM trunks WHERE name = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        trunk_from_row(&row)
    }

    /// Trunks in creation order, after the cursor `after` (a trunk id).
    pub async fn list_trunks(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<TrunkRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TRUNK_COLUMNS} FROM trunks WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let trunks = rows
            .iter()
            .map(trunk_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(trunks, limit, |t| &t.id))
    }

    /// Every trunk and every number, read in one transaction (the directory's snapshot).
    pub async fn trunks_and_numbers(&self) -> Result<(Vec<TrunkRow>, Vec<NumberRow>), StoreError> {
        let mut tx = self.begin_write().await?;
        let trunks = sqlx::query(&format!("SELECT {TRUNK_COLUMNS} FROM trunks ORDER BY id"))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(trunk_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let numbers = sqlx::query(&format!(
            "SELECT {NUMBER_COLUMNS} FROM numbers ORDER BY number"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(number_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        Ok((trunks, numbers))
    }

    /// Replace a trunk's settings (the caller merged the change into the old ones).
    pub async fn update_trunk(
        &self,
        id: &str,
        config: &TrunkConfig,
    ) -> Result<TrunkRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {TRUNK_COLUMNS} FROM trunks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut trunk = trunk_from_row(&row)?;
        if trunk.config == *config {
            return Ok(trunk);
        }
        trunk.config = config.clone();
        trunk.updated_at = now();
        if config.default_outbound {
            clear_default(&mut tx, id).await?;
        }
        write_trunk(&mut tx, &trunk, false).await?;
        tx.commit().await?;
        Ok(trunk)
    }

    /// Delete a trunk that has no numbers (else [`StoreError::InUse`]); its calls keep
    /// their records with `trunk_id` NULL.
    pub async fn delete_trunk(&self, id: &str) -> Result<TrunkRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {TRUNK_COLUMNS} FROM trunks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let trunk = trunk_from_row(&row)?;
        let numbers = get_i64(
            &sqlx::query("SELECT COUNT(*) AS n FROM numbers WHERE trunk_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
            "n",
        )?;
        if numbers > 0 {
            return Err(StoreError::InUse(format!(
                "trunk {} still has {numbers} number(s); delete or move them first",
                trunk.config.name
            )));
        }
        sqlx::query("DELETE FROM trunks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(trunk)
    }

    /// Store a number (`number` is E.164, `trunk_id` an existing trunk's id).
    pub async fn create_number(
        &self,
        number: &str,
        trunk_id: &str,
        route_type: &str,
        route_target: &str,
        record: Option<RecordingChannels>,
    ) -> Result<NumberRow, StoreError> {
        let t = now();
        let row = NumberRow {
            number: number.to_owned(),
            trunk_id: trunk_id.to_owned(),
            route_type: route_type.to_owned(),
            route_target: route_target.to_owned(),
            record,
            created_at: t,
            updated_at: t,
        };
        sqlx::query(&format!(
            "INSERT INTO numbers ({NUMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&row.number)
        .bind(&row.trunk_id)
        .bind(&row.route_type)
        .bind(&row.route_target)
        .bind(row.record.map(RecordingChannels::as_str))
        .bind(fmt_time(t))
        .bind(fmt_time(t))
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => conflict_on("number")(e),
        })?;
        Ok(row)
    }

    pub async fn get_number(&self, number: &str) -> Result<NumberRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {NUMBER_COLUMNS} FROM numbers WHERE number = $1"
        ))
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        number_from_row(&row)
    }

    /// Numbers in text order, after the cursor `after` (a number); only `trunk_id`'s if
    /// given.
    pub async fn list_numbers(
        &self,
        trunk_id: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<NumberRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {NUMBER_COLUMNS} FROM numbers WHERE number > $1 \
             AND ($2 = '' OR trunk_id = $3) ORDER BY number LIMIT $4"
        ))
        .bind(after.unwrap_or(""))
        .bind(trunk_id.unwrap_or(""))
        .bind(trunk_id.unwrap_or(""))
        .bind(limit_plus_one(limit))
        .fetch_all(&self.pool)
        .await?;
        let numbers = rows
            .iter()
            .map(number_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(into_page(numbers, limit, |n| &n.number))
    }

    /// Change a number's trunk, route and/or recording; `None` keeps it (`record:
    /// Some(None)` stops recording).
    pub async fn update_number(
        &self,
        number: &str,
        trunk_id: Option<&str>,
        route: Option<(&str, &str)>,
        record: Option<Option<RecordingChannels>>,
    ) -> Result<NumberRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {NUMBER_COLUMNS} FROM numbers WHERE number = $1"
        ))
        .bind(number)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut n = number_from_row(&row)?;
        let before = n.clone();
        if let Some(t) = trunk_id {
            t.clone_into(&mut n.trunk_id);
        }
        if let Some((ty, target)) = route {
            ty.clone_into(&mut n.route_type);
            target.clone_into(&mut n.route_target);
        }
        if let Some(r) = record {
            n.record = r;
        }
        if n == before {
            return Ok(n);
        }
        n.updated_at = now();
        sqlx::query(
            "UPDATE numbers SET trunk_id = $1, route_type = $2, route_target = $3, \
             record = $4, updated_at = $5 WHERE number = $6",
        )
        .bind(&n.trunk_id)
        .bind(&n.route_type)
        .bind(&n.route_target)
        .bind(n.record.map(RecordingChannels::as_str))
        .bind(fmt_time(n.updated_at))
        .bind(&n.number)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => StoreError::Db(e),
        })?;
        tx.commit().await?;
        Ok(n)
    }

    pub async fn delete_number(&self, number: &str) -> Result<NumberRow, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {NUMBER_COLUMNS} FROM numbers WHERE number = $1"
        ))
        .bind(number)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let n = number_from_row(&row)?;
        sqlx::query("DELETE FROM numbers WHERE number = $1")
            .bind(number)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
