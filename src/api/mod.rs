//! The control API (SPEC §4): one router per resource, merged here. Routes are declared
//! with `utoipa_axum::routes!`, so the OpenAPI document and the router come from the same
//! handler annotations and cannot drift apart.

pub mod agents;
pub mod api_keys;
pub mod auth;
pub mod calls;
pub mod cdrs;
pub mod docs;
pub mod error;
pub mod health;
pub mod numbers;
pub mod pagination;
pub mod stats;
pub mod trunks;
pub mod webhooks;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::broadcast;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use self::error::{problem_response, ApiError, BodyLimit, Problem, PROBLEM_JSON};
use crate::calls::control::CallControl;
use crate::config::Config;
use crate::events::AppEvent;
use crate::sip::SipHandle;
use crate::store::Store;

/// Everything handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub events: broadcast::Sender<AppEvent>,
    /// Commands to the call engine (hang up, …).
    pub calls: CallControl,
    /// Trunks and numbers in memory, for the call engine; reloaded by the API after it
    /// changes them.
    pub trunks: crate::trunks::TrunkDirectory,
    /// voxgate's registrations to carriers, as the SIP core last published them.
    pub trunk_registrations: crate::sip::registration::RegistrationStates,
    /// The running SIP side; taken out at shutdown to be joined.
    pub sip: Mutex<Option<SipHandle>>,
    /// Set when shutdown starts: `/readyz` turns 503 so load balancers drain us.
    pub draining: AtomicBool,
    /// `None` when the global recorder could not be installed (tests building several apps).
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    pub fn sip_ready(&self) -> bool {
        self.sip
            .lock()
            .map(|h| h.as_ref().is_some_and(SipHandle::is_ready))
            .unwrap_or(false)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "voxgate control API",
        description = "Control API of voxgate, a self-hosted SIP/RTP softswitch. Ids carry a type \
                       prefix (agt_, call_, leg_, key_, trk_, whk_, evt_, dlv_); a reference to a resource accepts its id or unique name. \
                       Times are RFC 3339 UTC. Lists are cursor-paginated with ?limit=&after=."
    ),
    modifiers(&BearerScheme),
    components(schemas(Problem, error::FieldError)),
    tags(
        (name = "agents", description = "SIP users who take calls"),
        (name = "api-keys", description = "Keys for this API"),
        (name = "calls", description = "Call records (CDRs), statistics and live call control"),
        (name = "trunks", description = "Carrier trunks: provider presets, limits, rates"),
        (name = "numbers", description = "Inbound numbers and where their calls go"),
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "webhooks", description = "Signed event deliveries to your URLs"),
        (name = "docs", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: Authorization: Bearer vxk_…"))
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(agents::router())
        .merge(api_keys::router())
        .merge(calls::router())
        .merge(cdrs::router())
        .merge(stats::router())
        .merge(trunks::router())
        .merge(numbers::router())
        .merge(health::router())
        .merge(webhooks::router())
        .merge(docs::router())
}

/// The OpenAPI document (built from the same routes as the router).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Every mounted `(METHOD, path)` pair, from the router's own declarations.
pub fn route_list() -> Vec<(String, String)> {
    let doc = openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("HEAD", &item.head),
            ("OPTIONS", &item.options),
        ];
        for (m, op) in ops {
            if op.is_some() {
                out.push((m.to_owned(), path.clone()));
            }
        }
    }
    out
}

/// The full HTTP application.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.api.max_body_bytes;
    let (router, _) = api_router().split_for_parts();
    router
        .fallback(no_route)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, problems_and_metrics))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Outermost layer: count requests, pass the body limit to extractors, and turn any
/// error response that is not already a problem (axum's own 405, path and query
/// rejections, …) into `application/problem+json`.
async fn problems_and_metrics(
    State(limit): State<usize>,
    mut req: Request,
    next: Next,
) -> Response {
    req.extensions_mut().insert(BodyLimit(limit));
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics::counter!(
        "voxgate_api_requests_total",
        "method" => method.to_string(),
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let problem = Problem {
        problem_type: error::problem_type::BLANK.to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: if text.is_empty() {
            status.canonical_reason().unwrap_or("Error").to_owned()
        } else {
            text
        },
        errors: None,
    };
    let mut out = problem_response(&problem);
    // Keep headers such as Allow (405) and Retry-After.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Serialise times as the one fixed RFC 3339 UTC format the store uses.
pub mod time_format {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::store::fmt_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}
