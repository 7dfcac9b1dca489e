//! `/openapi.json` and `/docs`: the OpenAPI 3.1 document generated from the handlers, and
//! a self-contained HTML rendering of it (server-side, no scripts or CDN: works offline).

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_html))
}

fn document() -> &'static (String, String) {
    static DOC: OnceLock<(String, String)> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc = super::openapi();
        let json = doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
        let value: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        (json, render_html(&value))
    })
}

/// The OpenAPI 3.1 document for this API.
#[utoipa::path(
    get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().0.clone(),
    )
}

/// A browsable page of the OpenAPI document.
#[utoipa::path(
    get, path = "/docs", tag = "docs",
    responses((status = 200, description = "HTML reference", content_type = "text/html", body = String))
)]
async fn docs_html() -> Html<String> {
    Html(document().1.clone())
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A one-line description of a schema: a link for `$ref`, `array of …`, unions, enums.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{}\">{}</a>", anchor(name), esc(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let sep = if key == "allOf" { " &amp; " } else { " | " };
            return list.iter().map(type_of).collect::<Vec<_>>().join(sep);
        }
    }
    let mut t = match schema.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    };
    if t.starts_with("array") {
        let item = schema
            .get("items")
            .map_or_else(|| "any".to_owned(), type_of);
        t = t.replacen("array", &format!("array of {item}"), 1);
    } else {
        t = esc(&t);
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        let _ = write!(t, " ({})", esc(f));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        let vals: Vec<String> = e
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect();
        let _ = write!(t, ": {}", vals.join(", "));
    }
    t
}

fn constraints(schema: &Value) -> String {
    let mut parts = Vec::new();
    for (k, label) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("default", "default"),
        ("example", "example"),
    ] {
        if let Some(v) = schema.get(k) {
            parts.push(format!("{label} <code>{}</code>", esc(&v.to_string())));
        }
    }
    if schema.get("writeOnly").and_then(Value::as_bool) == Some(true) {
        parts.push("write-only".to_owned());
    }
    if schema.get("readOnly").and_then(Value::as_bool) == Some(true) {
        parts.push("read-only".to_owned());
    }
    parts.join(", ")
}

fn render_properties(out: &mut String, schema: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        let _ = write!(out, "<p>Type: {}</p>", type_of(schema));
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>notes</th></tr>");
    for (name, p) in props {
        let desc = p.get("description").and_then(Value::as_str).unwrap_or("");
        let notes = [esc(desc), constraints(p)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            type_of(p),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            notes
        );
    }
    out.push_str("</table>");
}

fn render_content(out: &mut String, content: Option<&Value>) {
    let Some(content) = content.and_then(Value::as_object) else {
        return;
    };
    for (media, body) in content {
        let schema = body.get("schema").map_or_else(|| "any".to_owned(), type_of);
        let _ = write!(out, "<code>{}</code>: {}", esc(media), schema);
    }
}

/// Render the whole document as one HTML page.
pub fn render_html(doc: &Value) -> String {
    let title = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("API");
    let version = doc
        .pointer("/info/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} {v} API reference</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}}\
         .op{{border-top:1px solid #ddd;padding-top:.5em;margin-top:1.5em}}\
         .m{{display:inline-block;min-width:4.5em;font-weight:bold;text-transform:uppercase}}\
         .get{{color:#1565c0}}.post{{color:#2e7d32}}.patch{{color:#ef6c00}}.put{{color:#6a1b9a}}.delete{{color:#c62828}}\
         code{{background:#f4f4f4;padding:0 .2em}}</style></head><body>\
         <h1>{t} <small>{v}</small></h1><p>OpenAPI 3.1 document: <a href=\"/openapi.json\">/openapi.json</a>. \
         Authenticate with <code>Authorization: Bearer &lt;api key&gt;</code>. Errors are \
         <code>application/problem+json</code> (RFC 9457).</p>",
        t = esc(title),
        v = esc(version)
    );
    let empty = serde_json::Map::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let methods = ["get", "post", "put", "patch", "delete"];

    out.push_str("<h2>Routes</h2><table><tr><th>method</th><th>path</th><th>summary</th></tr>");
    for (path, item) in paths {
        for m in methods {
            if let Some(op) = item.get(m) {
                let summary = op.get("summary").and_then(Value::as_str).unwrap_or("");
                let _ = write!(
                    out,
                    "<tr><td class=\"m {m}\">{m}</td><td><a href=\"#op-{a}\"><code>{p}</code></a></td><td>{s}</td></tr>",
                    a = anchor(&format!("{m}{path}")),
                    p = esc(path),
                    s = esc(summary)
                );
            }
        }
    }
    out.push_str("</table>");

    for (path, item) in paths {
        for m in methods {
            let Some(op) = item.get(m) else { continue };
            let _ = write!(
                out,
                "<div class=\"op\" id=\"op-{a}\"><h3><span class=\"m {m}\">{m}</span> <code>{p}</code></h3>",
                a = anchor(&format!("{m}{path}")),
                p = esc(path)
            );
            if let Some(s) = op.get("summary").and_then(Value::as_str) {
                let _ = write!(out, "<p>{}</p>", esc(s));
            }
            if let Some(d) = op.get("description").and_then(Value::as_str) {
                let _ = write!(out, "<p>{}</p>", esc(d));
            }
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            let optional = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                });
            let _ = write!(
                out,
                "<p>Auth: {}</p>",
                match (secured, optional) {
                    (true, true) => "bearer API key (unless configured public)",
                    (true, false) => "bearer API key",
                    _ => "none",
                }
            );
            if let Some(params) = op.get("parameters").and_then(Value::as_array) {
                out.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>");
                for p in params {
                    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&s("name")),
                        esc(&s("in")),
                        p.get("schema").map_or_else(String::new, type_of),
                        if p.get("required").and_then(Value::as_bool) == Some(true) { "yes" } else { "" },
                        esc(&s("description"))
                    );
                }
                out.push_str("</table>");
            }
            if let Some(body) = op.get("requestBody") {
                out.push_str("<h4>Request body</h4><p>");
                render_content(&mut out, body.get("content"));
                out.push_str("</p>");
            }
            if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                out.push_str("<h4>Responses</h4><table><tr><th>status</th><th>description</th><th>body</th></tr>");
                for (status, r) in responses {
                    let desc = r.get("description").and_then(Value::as_str).unwrap_or("");
                    let mut body = String::new();
                    render_content(&mut body, r.get("content"));
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(status),
                        esc(desc),
                        body
                    );
                }
                out.push_str("</table>");
            }
            out.push_str("</div>");
        }
    }

    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        out.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<div class=\"op\" id=\"schema-{}\"><h3>{}</h3>",
                anchor(name),
                esc(name)
            );
            if let Some(d) = schema.get("description").and_then(Value::as_str) {
                let _ = write!(out, "<p>{}</p>", esc(d));
            }
            render_properties(&mut out, schema);
            out.push_str("</div>");
        }
    }
    out.push_str("</body></html>");
    out
}
