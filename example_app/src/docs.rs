//! Live API docs: the OpenAPI document generated from the handlers' `#[utoipa::path]` attributes, and an HTML page rendered from it on the server.
//!
//! The page is plain HTML and CSS made once at startup from the same
//! document `/openapi.json` serves, so it works with no internet access (no
//! CDN scripts) and cannot drift from the code.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::OpenApi;

use crate::error::{ErrorBody, APPLICATION_JSON};
use crate::handlers::Health;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "example_app",
        description = "The talk's filter service: `GET /` says hello, `POST /` keeps the keys of a \
            JSON object that start with `a` or `A`. Every error is JSON: `{\"error\": \"...\"}`. \
            Unknown paths answer 404, a known path with another method 405 with an `Allow` header."
    ),
    paths(
        crate::handlers::hello,
        crate::filter::filter,
        crate::handlers::health,
        crate::handlers::metrics,
        openapi_json,
        docs_page,
    ),
    components(schemas(ErrorBody, Health)),
    tags(
        (name = "filter", description = "The service itself."),
        (name = "operations", description = "For the platform and for people: health, metrics and these docs."),
    )
)]
pub struct ApiDoc;

/// The document with `info.version` set to the running version, as `/health` reports it.
pub fn openapi(version: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = version.to_owned();
    doc
}

/// This document: OpenAPI 3, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "OpenAPI document",
    responses(
        (status = 200, description = "The OpenAPI 3 document of every endpoint.", body = Object,
            content_type = "application/json"),
    )
)]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, APPLICATION_JSON)],
        state.openapi_json.clone(),
    )
}

/// These docs for people, as one HTML page.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    summary = "API docs page",
    responses(
        (status = 200, description = "The OpenAPI document rendered as HTML; no scripts, no external resources.",
            body = String, content_type = "text/html; charset=utf-8"),
    )
)]
pub async fn docs_page(State(state): State<AppState>) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // The page needs nothing but its own inline styles; saying so
            // also proves it to a browser.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            ),
        ],
        state.docs_html.clone(),
    )
}

/// Serialises the document for `/openapi.json`.
pub fn to_json(doc: &utoipa::openapi::OpenApi) -> Bytes {
    // The document is built from types that always serialise; an empty
    // object would still be valid JSON if that ever changed.
    Bytes::from(serde_json::to_vec_pretty(doc).unwrap_or_else(|_| b"{}".to_vec()))
}

const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "delete", "patch", "options", "trace",
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}\
code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{background:#f5f5f5;padding:.6rem;overflow-x:auto;border-radius:4px}\
.op{border:1px solid #ddd;border-radius:6px;padding:0 1rem 1rem;margin:1.5rem 0}\
.m{display:inline-block;min-width:4.5rem;text-align:center;color:#fff;border-radius:4px;padding:.1rem .4rem;font-size:.85em}\
.get{background:#2b7de9}.post{background:#2a9d55}.put,.patch{background:#c98a00}.delete{background:#c0392b}.head,.options,.trace{background:#666}\
table{border-collapse:collapse;width:100%}td,th{border-top:1px solid #ddd;padding:.35rem;text-align:left;vertical-align:top}small{color:#666}";

/// Renders the OpenAPI document as one self-contained HTML page.
pub fn render_html(doc: &utoipa::openapi::OpenApi) -> Bytes {
    let doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let title = s(&doc["info"]["title"]);
    let version = s(&doc["info"]["version"]);

    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} {v} API docs</title><style>{STYLE}</style></head><body>\n\
         <h1>{t} <small>{v}</small></h1>\n<p>{d}</p>\n\
         <p>The machine-readable document: <a href=\"/openapi.json\"><code>/openapi.json</code></a> \
         (OpenAPI {o}). The examples use <code>$APP_URL</code> for this service's address, \
         e.g. <code>export APP_URL=http://127.0.0.1:8080</code>.</p>\n",
        t = esc(&title),
        v = esc(&version),
        d = prose(&s(&doc["info"]["description"])),
        o = esc(&s(&doc["openapi"])),
    );

    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    let ops: Vec<(&str, &str, &Value)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter_map(move |m| item.get(*m).map(|op| (path.as_str(), *m, op)))
        })
        .collect();

    h.push_str("<h2>Endpoints</h2>\n<ul>\n");
    for (path, method, op) in &ops {
        let _ = writeln!(
            h,
            "<li><a href=\"#{id}\"><code>{M} {p}</code></a> {sum}</li>",
            id = anchor(method, path),
            M = method.to_uppercase(),
            p = esc(path),
            sum = esc(&s(&op["summary"])),
        );
    }
    h.push_str("</ul>\n");

    for (path, method, op) in &ops {
        render_operation(&mut h, &doc, path, method, op);
    }

    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        h.push_str("<h2>Schemas</h2>\n");
        for (name, schema) in schemas {
            let _ = write!(
                h,
                "<h3 id=\"schema-{n}\">{n}</h3>\n<pre>{j}</pre>\n",
                n = esc(name),
                j = esc(&pretty(schema)),
            );
        }
    }
    h.push_str("</body></html>\n");
    Bytes::from(h)
}

fn render_operation(h: &mut String, doc: &Value, path: &str, method: &str, op: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let _ = write!(
        h,
        "<section class=\"op\" id=\"{id}\">\n<h3><span class=\"m {method}\">{M}</span> <code>{p}</code> {sum}</h3>\n",
        id = anchor(method, path),
        M = method.to_uppercase(),
        p = esc(path),
        sum = esc(&s(&op["summary"])),
    );
    let description = s(&op["description"]);
    if !description.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", prose(&description));
    }

    let mut curl = match method {
        "get" => "curl -i".to_owned(),
        "head" => "curl -I".to_owned(),
        other => format!("curl -i -X {}", other.to_uppercase()),
    };
    if let Some(content) = op["requestBody"]["content"].as_object() {
        h.push_str("<h4>Request body</h4>\n");
        let desc = s(&op["requestBody"]["description"]);
        if !desc.is_empty() {
            let _ = writeln!(h, "<p>{}</p>", prose(&desc));
        }
        for (media, c) in content {
            let _ = writeln!(h, "<p><code>{}</code></p>", esc(media));
            if let Some(example) = example_of(doc, c) {
                let _ = writeln!(h, "<pre>{}</pre>", esc(&pretty(&example)));
                let _ = write!(
                    curl,
                    " -H 'Content-Type: {media}' -d {}",
                    shell_quote(&example.to_string())
                );
            }
        }
    }
    let _ = write!(curl, " \"$APP_URL{path}\"");

    h.push_str(
        "<h4>Responses</h4>\n<table><tr><th>status</th><th>meaning</th><th>body</th></tr>\n",
    );
    if let Some(responses) = op["responses"].as_object() {
        for (status, r) in responses {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>",
                esc(status),
                prose(&s(&r["description"]))
            );
            if let Some(content) = r["content"].as_object() {
                for (media, c) in content {
                    let _ = write!(h, "<code>{}</code>", esc(media));
                    if let Some(name) = schema_ref(c) {
                        let _ = write!(h, " <a href=\"#schema-{n}\">{n}</a>", n = esc(name));
                    }
                    if let Some(example) = example_of(doc, c) {
                        let shown = match &example {
                            Value::String(text) => text.clone(),
                            other => pretty(other),
                        };
                        let _ = write!(h, "<pre>{}</pre>", esc(&shown));
                    }
                }
            }
            h.push_str("</td></tr>\n");
        }
    }
    h.push_str("</table>\n<h4>Try it</h4>\n");
    let _ = write!(h, "<pre>{}</pre>\n</section>\n", esc(&curl));
}

/// The content's own example, else the example of the schema it refers to.
fn example_of(doc: &Value, content: &Value) -> Option<Value> {
    if let Some(example) = content.get("example") {
        return Some(example.clone());
    }
    let name = schema_ref(content)?;
    doc["components"]["schemas"][name].get("example").cloned()
}

/// `ErrorBody` for a content whose schema is `{"$ref": "#/components/schemas/ErrorBody"}`.
fn schema_ref(content: &Value) -> Option<&str> {
    content["schema"]["$ref"]
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

fn anchor(method: &str, path: &str) -> String {
    let slug: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("op-{method}{slug}")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
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

/// Escaped text with `code spans` (the only markdown the descriptions use) as `<code>`.
fn prose(s: &str) -> String {
    esc(s)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(prose("use `a<b` now"), "use <code>a&lt;b</code> now");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn page_is_self_contained() {
        let html = String::from_utf8(render_html(&openapi("9.9.9")).to_vec()).unwrap();
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("example_app <small>9.9.9</small>"));
        // Nothing is loaded from anywhere: no scripts, no external links.
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("https://"));
        assert!(!html.contains("<link"));
    }
}
