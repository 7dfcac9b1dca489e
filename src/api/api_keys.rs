//! `/v1/api-keys`: keys for this API. A key is shown once, at creation; only its hash is
//! stored.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Authed;
use super::error::{ApiError, ApiJson, Problem};
use super::pagination::{PageQuery, Pagination};
use super::rules::{Chars, Text};
use super::{time_format, AppState};
use crate::store::ApiKey;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(delete_api_key))
}

/// An API key as listed (without the key).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    #[schema(example = "key_01JD3N5V8K2Q4R6T8W0Y2A4C6E")]
    pub id: String,
    pub name: String,
    /// The first 8 characters of the key.
    #[schema(example = "vxk_3f9a")]
    pub key_prefix: String,
    #[serde(with = "time_format")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "time_format::option")]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A newly created key: `key` is shown only in this response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKeyView,
    /// The key. Store it now: it cannot be shown again.
    #[schema(example = "vxk_3f9a…")]
    pub key: String,
}

/// A page of API keys.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
    pub next: Option<String>,
}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, 1-100 characters, no control characters; kept as given.
    #[schema(schema_with = name_schema, example = "crm-integration")]
    pub name: String,
}

/// A key's name.
pub const NAME: Text = Text::new(1, 100, Chars::Printable);

fn name_schema() -> utoipa::openapi::schema::Schema {
    NAME.schema()
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        ApiKeyView {
            id: k.id,
            name: k.name,
            key_prefix: k.key_prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// Create an API key.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; the key is in this response only", body = CreatedApiKey),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_api_key(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    NAME.check("name", &body.name, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (row, key) = state.store.create_api_key(&body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            api_key: row.into(),
            key,
        }),
    ))
}

/// List API keys.
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api-keys",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of keys", body = ApiKeyList),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_api_keys(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    page: Pagination,
) -> Result<Json<ApiKeyList>, ApiError> {
    let p = state
        .store
        .list_api_keys(page.limit, page.after.as_deref())
        .await?;
    Ok(Json(ApiKeyList {
        data: p.data.into_iter().map(Into::into).collect(),
        next: p.next,
    }))
}

/// Delete (revoke) an API key. It stops working at once.
#[utoipa::path(
    delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_api_key(
    _auth: Authed,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.store.delete_api_key(&id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(crate::store::StoreError::NotFound) => {
            Err(ApiError::NotFound(format!("no API key with id {id:?}")))
        }
        Err(e) => Err(e.into()),
    }
}
