//! The control API (SPEC §4): one router per resource, merged here. Routes are declared
//! with `utoipa_axum::routes!`, so the OpenAPI document and the router come from the same
//! handler annotations and cannot drift apart.

pub mod agents;
pub mod api_keys;
pub mod auth;
mod call_media;
pub mod calls;
pub mod cdrs;
pub mod docs;
pub mod error;
pub mod health;
pub mod ivr_flows;
pub mod numbers;
pub mod pagination;
pub mod prompts;
pub mod queues;
pub mod recordings;
pub mod rules;
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
                       prefix (agt_, call_, leg_, key_, trk_, whk_, evt_, dlv_, rec_, prm_, ivr_, que_); a reference to a resource accepts its id or unique name. \
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
        (name = "recordings", description = "Call recordings and their audio"),
        (name = "prompts", description = "Audio played to callers: menus, hold music"),
        (name = "ivr-flows", description = "IVR flows: menus and call programs (SPEC §6)"),
        (name = "queues", description = "Call queues: strategies, skills, hold, overflow"),
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

/// The problems any route can answer for reasons that do not depend on the route: what
/// the extractors and the outer layers do. Added to every operation after the routes are
/// collected, so a route added later is documented without further work; a route's own
/// description of a status (e.g. 404 "No such agent") is kept, and every problem response
/// names its `type`.
fn standard_problems(doc: &mut utoipa::openapi::OpenApi) {
    use error::problem_type as t;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let problem = |description: String| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    // The problem types a status can carry, for descriptions that do not name one.
    let types_of = |status: &str| -> &'static str {
        match status {
            "400" => t::MALFORMED,
            "401" => t::UNAUTHORIZED,
            "404" => t::NOT_FOUND,
            "409" => "/problems/conflict or /problems/invalid-state",
            "413" => t::TOO_LARGE,
            "415" => t::MEDIA_TYPE,
            "422" => t::VALIDATION,
            "503" => t::UNAVAILABLE,
            _ => t::BLANK,
        }
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            let mut add: Vec<(&str, &str)> = Vec::new();
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add.push(("401", "Missing or bad API key"));
            }
            if op.request_body.is_some() {
                add.push(("400", "Malformed JSON"));
                add.push(("413", "Body larger than api.max_body_bytes"));
                add.push(("415", "A body that is not JSON (Content-Type)"));
                add.push((
                    "422",
                    "A field does not fit the schema (the problem names it)",
                ));
            }
            let params = op.parameters.as_deref().unwrap_or_default();
            if params.iter().any(|p| p.parameter_in == ParameterIn::Query) {
                add.push(("422", "A bad query parameter (the problem names it)"));
            }
            if params.iter().any(|p| p.parameter_in == ParameterIn::Path) {
                add.push(("404", "Not found"));
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                // Store failures (database unreachable, …) are the only 5xx of a route
                // that does not document its own.
                add.push(("500", "Internal error (database unavailable, …)"));
            }
            let responses = &mut op.responses.responses;
            for (status, description) in add {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description.to_owned()));
            }
            for (status, response) in responses.iter_mut() {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                if let RefOr::T(r) = response {
                    if !r.description.contains("/problems/")
                        && !r.description.contains("about:blank")
                    {
                        r.description = format!("{} (`{}`)", r.description, types_of(status));
                    }
                }
            }
        }
    }
}

fn api_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(agents::router())
        .merge(api_keys::router())
        .merge(calls::router())
        .merge(call_media::router())
        .merge(cdrs::router())
        .merge(stats::router())
        .merge(trunks::router())
        .merge(numbers::router())
        .merge(health::router())
        .merge(webhooks::router())
        .merge(recordings::router())
        .merge(prompts::router())
        .merge(ivr_flows::router())
        .merge(queues::router())
        .merge(docs::router())
}

/// The OpenAPI document (built from the same routes as the router).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_router().split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    standard_problems(&mut doc);
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
        let b = crate::store::time_bytes(*t);
        // ASCII only (digits and separators), so this never fails.
        s.serialize_str(std::str::from_utf8(&b).unwrap_or_default())
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
