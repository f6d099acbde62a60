//! Live API docs: the OpenAPI document generated from the handlers' `#[utoipa::path]`
//! attributes (`/openapi.json`), and a page for people made from it (`/docs`).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        description = "{{name}}. GET / says hello; POST / keeps the keys of a JSON object \
        that start with a or A. Every error answers a JSON object with an error message."
    ),
    paths(
        crate::api::hello,
        crate::api::filter,
        crate::api::health,
        crate::api::metrics,
        openapi_json,
        docs_page
    ),
    components(schemas(crate::api::Health, crate::api::ErrorBody))
)]
pub struct ApiDoc;

/// The document, with the running version.
pub fn openapi(version: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = version.to_string();
    doc
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3 document.", body = Object)),
)]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.clone(),
    )
}

/// These docs as one HTML page, with no scripts and nothing fetched from elsewhere.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    summary = "API docs page",
    responses((status = 200, description = "The endpoints, for people.", body = String,
        content_type = "text/html; charset=utf-8")),
)]
pub async fn docs_page(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        state.docs_html.clone(),
    )
}

/// A page listing every operation of `doc` with its summary and answers.
pub fn render_html(doc: &utoipa::openapi::OpenApi) -> String {
    let doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    let text = |value: &Value| escape(value.as_str().unwrap_or(""));
    let title = format!(
        "{} {}",
        text(&doc["info"]["title"]),
        text(&doc["info"]["version"])
    );
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         </head><body>\n<h1>{title}</h1>\n<p>{}</p>\n\
         <p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a>.</p>\n",
        text(&doc["info"]["description"])
    );
    let empty = serde_json::Map::new();
    for (path, item) in doc["paths"].as_object().unwrap_or(&empty) {
        for (method, operation) in item.as_object().unwrap_or(&empty) {
            html.push_str(&format!(
                "<h2><code>{} {}</code></h2>\n<p>{}</p>\n<ul>\n",
                method.to_uppercase(),
                escape(path),
                text(&operation["summary"])
            ));
            for (status, response) in operation["responses"].as_object().unwrap_or(&empty) {
                html.push_str(&format!(
                    "<li>{status}: {}</li>\n",
                    text(&response["description"])
                ));
            }
            html.push_str("</ul>\n");
        }
    }
    html.push_str("</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
