//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::authorize;
use super::error::{ApiError, Problem};
use super::AppState;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness: the process is up and serving HTTP. No key needed.
#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// Readiness: the database answers and the SIP listeners are up. No key needed.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready (database, SIP, or shutting down)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Unavailable("shutting down".to_owned()));
    }
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database check failed");
        return Err(ApiError::Unavailable("database unavailable".to_owned()));
    }
    if !state.sip_ready() {
        return Err(ApiError::Unavailable("SIP listeners not ready".to_owned()));
    }
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}

/// Prometheus metrics (text format). Needs a key unless `api.metrics_public`.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or bad API key", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("bearer" = []))
)]
async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !state.config.api.metrics_public {
        authorize(&state, &headers).await?;
    }
    let body = state
        .metrics
        .as_ref()
        .map(metrics_exporter_prometheus::PrometheusHandle::render)
        .unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}
