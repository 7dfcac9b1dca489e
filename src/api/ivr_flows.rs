//! `/v1/ivr-flows`: IVR flows (SPEC §6), checked at `POST`/`PUT` by
//! [`voxgate_ivr::flow::Flow::validate`] against what the store holds: a link to a missing
//! node, an unknown prompt, queue, agent or trunk is a 422 whose `errors` name the node
//! (`nodes.<node>`) and the missing thing. Running a flow is the engine's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use voxgate_ivr::flow::{Catalog, Flow, FlowError};

use super::auth::Authed;
use super::error::{ApiError, ApiJson, FieldError, Problem};
use super::pagination::{PageQuery, Pagination};
use super::{time_format, AppState};
use crate::store::{CatalogNames, IvrFlowRow, StoreError};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_flow, list_flows))
        .routes(routes!(get_flow, put_flow, delete_flow))
}

const NAME_MAX: usize = 64;

/// Body of `POST /v1/ivr-flows` and `PUT /v1/ivr-flows/{id}`: a flow (SPEC §6).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // The OpenAPI shape: the handlers parse with `Flow::from_json`.
pub struct FlowBody {
    /// Unique, 1-64 characters.
    #[schema(example = "main-menu", min_length = 1, max_length = 64)]
    pub name: String,
    /// The node calls start at.
    #[schema(
        example = "welcome",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-]{1,64}$"
    )]
    pub start: String,
    /// Node name (1-64 of `A-Z a-z 0-9 _ -`) to node: `{"type": "play" | "menu" |
    /// "gather" | "enqueue" | "dial" | "record" | "webhook" | "set" | "hangup", …}`, at
    /// most 500.
    #[schema(value_type = Object)]
    pub nodes: Value,
}

/// A flow as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowView {
    #[schema(example = "ivr_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub name: String,
    pub start: String,
    /// The nodes, with their defaults filled in.
    #[schema(value_type = Object)]
    pub nodes: Value,
    /// Nodes no link reaches from `start` (legal: a webhook's reply may go to them).
    pub unreachable: Vec<String>,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format")]
    pub updated_at: DateTime<Utc>,
}

/// A page of flows, in creation order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowList {
    pub data: Vec<FlowView>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<String>,
}

/// The store's ids and names, read once per request.
struct StoreCatalog(CatalogNames);

impl Catalog for StoreCatalog {
    fn prompt_exists(&self, prompt: &str) -> bool {
        self.0.prompts.contains(prompt)
    }
    fn queue_exists(&self, queue: &str) -> bool {
        self.0.queues.contains(queue)
    }
    fn agent_exists(&self, agent: &str) -> bool {
        self.0.agents.contains(agent)
    }
    fn trunk_exists(&self, trunk: &str) -> bool {
        self.0.trunks.contains(trunk)
    }
}

fn field_error(e: &FlowError) -> FieldError {
    let field = match &e.node {
        Some(node) => format!("nodes.{node}"),
        None => "flow".to_owned(),
    };
    FieldError::new(field, e.kind.to_string())
}

/// Parse and check a body: the flow as stored, and its unreachable nodes.
async fn checked(state: &AppState, body: &Value) -> Result<(Flow, Vec<String>), ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|_| ApiError::Internal)?;
    let flow = Flow::from_json(&bytes).map_err(|e| ApiError::Validation(vec![field_error(&e)]))?;
    if flow.name.chars().count() > NAME_MAX || flow.name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            format!("must be 1-{NAME_MAX} characters, no control characters"),
        ));
    }
    let catalog = StoreCatalog(state.store.catalog_names().await?);
    match flow.validate(&catalog) {
        Ok(check) => Ok((flow, check.unreachable)),
        Err(errors) => Err(ApiError::Validation(
            errors.0.iter().map(field_error).collect(),
        )),
    }
}

fn view(row: IvrFlowRow) -> Result<FlowView, ApiError> {
    let flow: Flow = serde_json::from_value(row.flow).map_err(|_| ApiError::Internal)?;
    // Unreachable nodes do not depend on the catalog: check against one that knows all.
    struct Everything;
    impl Catalog for Everything {
        fn prompt_exists(&self, _: &str) -> bool {
            true
        }
        fn queue_exists(&self, _: &str) -> bool {
            true
        }
        fn agent_exists(&self, _: &str) -> bool {
            true
        }
        fn trunk_exists(&self, _: &str) -> bool {
            true
        }
    }
    let unreachable = flow
        .validate(&Everything)
        .map(|c| c.unreachable)
        .unwrap_or_default();
    let nodes = serde_json::to_value(&flow.nodes).map_err(|_| ApiError::Internal)?;
    Ok(FlowView {
        id: row.id,
        name: row.name,
        start: flow.start,
        nodes,
        unreachable,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

async fn find(state: &AppState, reference: &str) -> Result<IvrFlowRow, ApiError> {
    match state.store.find_ivr_flow(reference).await {
        Ok(f) => Ok(f),
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!("no ivr flow {reference:?}"))),
        Err(e) => Err(e.into()),
    }
}

/// Create a flow.
#[utoipa::path(
    post, path = "/v1/ivr-flows", tag = "ivr-flows",
    request_body = FlowBody,
    responses(
        (status = 201, description = "Created", body = FlowView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid flow: each error names its node and the missing node, prompt, queue, agent or trunk", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_flow(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let (flow, _) = checked(&state, &body).await?;
    let json = serde_json::to_value(&flow).map_err(|_| ApiError::Internal)?;
    let row = state.store.create_ivr_flow(&flow.name, &json).await?;
    super::trunks::changed(&state).await;
    let location = format!("/v1/ivr-flows/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(row)?),
    ))
}

/// List flows in creation order.
#[utoipa::path(
    get, path = "/v1/ivr-flows", tag = "ivr-flows",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of flows", body = FlowList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_flows(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<FlowList>, ApiError> {
    let p = state
        .store
        .list_ivr_flows(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(FlowList {
        data: p.data.into_iter().map(view).collect::<Result<_, _>>()?,
        next: p.next,
    }))
}

/// Get a flow.
#[utoipa::path(
    get, path = "/v1/ivr-flows/{id}", tag = "ivr-flows",
    params(("id" = String, Path, description = "Flow id or name")),
    responses(
        (status = 200, description = "The flow", body = FlowView),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such flow", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_flow(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<FlowView>, ApiError> {
    Ok(Json(view(find(&state, &id).await?)?))
}

/// Replace a flow (the body is a whole flow; its `name` may change).
#[utoipa::path(
    put, path = "/v1/ivr-flows/{id}", tag = "ivr-flows",
    params(("id" = String, Path, description = "Flow id or name")),
    request_body = FlowBody,
    responses(
        (status = 200, description = "The replaced flow", body = FlowView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such flow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new name exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid flow: each error names its node and the missing node, prompt, queue, agent or trunk", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn put_flow(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<FlowView>, ApiError> {
    let row = find(&state, &id).await?;
    let (flow, _) = checked(&state, &body).await?;
    let json = serde_json::to_value(&flow).map_err(|_| ApiError::Internal)?;
    let updated = state
        .store
        .update_ivr_flow(&row.id, &flow.name, &json)
        .await?;
    super::trunks::changed(&state).await;
    Ok(Json(view(updated)?))
}

/// Delete a flow that no number or queue overflow routes to.
#[utoipa::path(
    delete, path = "/v1/ivr-flows/{id}", tag = "ivr-flows",
    params(("id" = String, Path, description = "Flow id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such flow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A number or queue overflow routes to it (named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_flow(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = find(&state, &id).await?;
    state.store.delete_ivr_flow(&row.id).await?;
    super::trunks::changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}
