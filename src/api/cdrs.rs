//! `/v1/cdrs`: one record per finished call (SPEC §4), newest first. JSON pages like
//! `/v1/calls`; with `Accept: text/csv` every matching record as CSV, streamed page by
//! page from the database (never built in memory).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::calls::{check_period, parse_time, view, CallList};
use super::error::{ApiError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::AppState;
use crate::store::{fmt_time, Call, CallFilter, Store, StoreError};
use crate::trunks::cost::format_amount;

/// Records per database read while streaming CSV.
const CSV_PAGE: usize = 500;

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "id,direction,from,to,agent,trunk,status,started_at,answered_at,\
ended_at,duration_seconds,hangup_cause,hangup_by,cost,currency,legs\r\n";

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(list_cdrs))
}

/// The filters of `GET /v1/cdrs`, as documented.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CdrQueryDoc {
    /// Only calls started at or after this time (RFC 3339).
    #[param(schema_with = super::calls::time_schema)]
    since: Option<String>,
    /// Only calls started before this time (RFC 3339); must be later than `since`.
    #[param(schema_with = super::calls::time_schema)]
    until: Option<String>,
    /// Only calls through this trunk (id or name); an unknown trunk is a 422.
    #[param(schema_with = super::calls::filter_schema)]
    trunk: Option<String>,
    /// Only calls of this agent (id or username); an unknown agent is a 422.
    #[param(schema_with = super::calls::filter_schema)]
    agent: Option<String>,
}

/// The validated filters, references not yet resolved.
#[derive(Debug, Default)]
pub struct CdrQuery {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    trunk: Option<String>,
    agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for CdrQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::field(".", format!("bad query string: {}", e.body_text())))?;
        let mut q = CdrQuery::default();
        let mut errors = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "since" => q.since = parse_time("since", &v, &mut errors),
                "until" => q.until = parse_time("until", &v, &mut errors),
                "trunk" => q.trunk = super::calls::text("trunk", v, &mut errors),
                "agent" => q.agent = super::calls::text("agent", v, &mut errors),
                _ => {}
            }
        }
        check_period(q.since, q.until, &mut errors);
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// Whether the client asked for CSV (and not JSON first).
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .find(|m| m == "text/csv" || m == "application/json")
        .is_some_and(|m| m == "text/csv")
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break.
fn field(out: &mut String, v: &str) {
    // A cell a spreadsheet would run as a formula (a carrier's From can be anything) is
    // kept as text with a leading apostrophe (OWASP's advice for CSV injection); numbers
    // such as +14155550100 or -5 stay as they are.
    let formula = match v.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !v[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.'),
        _ => false,
    };
    let owned;
    let v = if formula {
        owned = format!("'{v}");
        owned.as_str()
    } else {
        v
    };
    if v.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// One call as a CSV line.
pub fn csv_line(out: &mut String, c: &Call) {
    let opt_time = |t: Option<DateTime<Utc>>| t.map(fmt_time).unwrap_or_default();
    let cols = [
        c.id.clone(),
        c.direction.clone(),
        c.from.clone(),
        c.to.clone(),
        c.agent_id.clone().unwrap_or_default(),
        c.trunk_id.clone().unwrap_or_default(),
        c.status.as_str().to_owned(),
        fmt_time(c.started_at),
        opt_time(c.answered_at),
        opt_time(c.ended_at),
        c.duration_seconds
            .map(|d| d.to_string())
            .unwrap_or_default(),
        c.hangup_cause.clone().unwrap_or_default(),
        c.hangup_by.clone().unwrap_or_default(),
        c.cost_micros.map(format_amount).unwrap_or_default(),
        c.currency.clone().unwrap_or_default(),
        c.legs.len().to_string(),
    ];
    for (i, v) in cols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, v);
    }
    out.push_str("\r\n");
}

/// Where the CSV stream is.
struct CsvState {
    store: Store,
    filter: CallFilter,
    after: Option<String>,
    started: bool,
    done: bool,
}

fn csv_response(store: Store, filter: CallFilter) -> Response {
    let init = CsvState {
        store,
        filter,
        after: None,
        started: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(init, |mut st| async move {
        if st.done {
            return None;
        }
        if !st.started {
            st.started = true;
            return Some((Ok(Bytes::from_static(CSV_HEADER.as_bytes())), st));
        }
        match st
            .store
            .list_calls(&st.filter, CSV_PAGE, st.after.as_deref())
            .await
        {
            Ok(page) => {
                let mut out = String::with_capacity(page.data.len() * 200);
                for c in &page.data {
                    csv_line(&mut out, c);
                }
                st.after = page.next;
                st.done = st.after.is_none();
                Some((Ok(Bytes::from(out)), st))
            }
            Err(e) => {
                // Headers are sent: all we can do is cut the body short, which the client
                // sees as an incomplete chunked response.
                tracing::error!(error = %e, "CDR export failed mid-stream");
                st.done = true;
                Some((Err(std::io::Error::other(e.to_string())), st))
            }
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"cdrs.csv\""),
    );
    resp
}

/// Call records of finished calls, newest first: JSON pages, or CSV with
/// `Accept: text/csv` (every matching record, streamed; `limit` and `after` apply to
/// JSON only).
#[utoipa::path(
    get, path = "/v1/cdrs", tag = "calls",
    params(PageQuery, CdrQueryDoc),
    responses(
        (status = 200, description = "Finished calls, newest first. CSV columns: id, direction, from, to, agent, trunk, status, started_at, answered_at, ended_at, duration_seconds, hangup_cause, hangup_by, cost, currency, legs (count)", content(
            (CallList = "application/json"),
            (String = "text/csv"),
        )),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter, limit or cursor (the problem names it)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_cdrs(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    page: Pagination,
    query: CdrQuery,
) -> Result<Response, ApiError> {
    let mut filter = CallFilter {
        since: query.since,
        until: query.until,
        finished: true,
        ..CallFilter::default()
    };
    if let Some(t) = &query.trunk {
        match state.store.find_trunk(t).await {
            Ok(t) => filter.trunk_id = Some(t.id),
            Err(StoreError::NotFound) => {
                return Err(ApiError::field(
                    "trunk",
                    format!("no trunk with id or name {t:?}"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(id) = super::calls::agent_filter(&state, query.agent.as_deref()).await? {
        filter.agent_id = Some(id);
    }
    if wants_csv(&headers) {
        return Ok(csv_response(state.store.clone(), filter));
    }
    let p = state
        .store
        .list_calls(&filter, page.limit, page.after.as_deref())
        .await?;
    Ok(Json(CallList {
        data: p.data.into_iter().map(view).collect(),
        next: p.next,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_accept() {
        let mut s = String::new();
        field(&mut s, "plain");
        s.push(',');
        field(&mut s, "486 Busy, \"really\"");
        assert_eq!(s, "plain,\"486 Busy, \"\"really\"\"\"");
        // Formulas are neutralised, numbers are not.
        let cell = |v: &str| {
            let mut s = String::new();
            field(&mut s, v);
            s
        };
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("+cmd|' /C calc'!A0"), "'+cmd|' /C calc'!A0");
        assert_eq!(cell("-2+3"), "'-2+3");
        assert_eq!(cell("+14155550100"), "+14155550100");
        assert_eq!(cell("-5"), "-5");
        assert_eq!(cell("sip:+1415@x"), "sip:+1415@x");
        let mut h = HeaderMap::new();
        assert!(!wants_csv(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
        assert!(wants_csv(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/csv"),
        );
        assert!(!wants_csv(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("Text/CSV; q=1.0, */*"),
        );
        assert!(wants_csv(&h));
    }
}
