//! `/openapi.json` and `/docs`: the API document and an interactive page (Swagger UI)
//! served entirely by the binary, its assets compiled in, so it works on closed networks.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::responses::RateLimited;
use super::schemas::{DocsAsset, ErrorEnvelope};
use super::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_asset))
}

/// The document, serialized once when the router is built (cloning shares the bytes).
#[derive(Clone)]
pub(super) struct OpenApiJson(pub Bytes);

/// The page may load only what this service serves; anything else the browser refuses.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// (name, content type, bytes) of every file the page loads.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/docs/init.js"),
    ),
];

fn with_type(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The OpenAPI document
///
/// This API's OpenAPI 3.1 document, generated from the code that serves it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documentation",
    responses(
        (status = 200, description = "The document", content_type = "application/json", body = Object),
        (status = 429, response = RateLimited),
    )
)]
async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> Response {
    with_type("application/json", document.0)
}

/// The API page
///
/// An interactive page (Swagger UI) showing this document; every asset it loads is
/// served by this service.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "documentation",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 429, response = RateLimited),
    )
)]
async fn docs_page() -> Response {
    let mut response = with_type(
        "text/html; charset=utf-8",
        include_str!("../../assets/docs/index.html"),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

/// A file of the API page
///
/// A script or style sheet of the API page, compiled into the binary.
#[utoipa::path(
    get,
    path = "/docs/{asset}",
    tag = "documentation",
    params(("asset" = DocsAsset, Path, description = "Which file")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "No such file (NOT_FOUND)", body = ErrorEnvelope),
        (status = 429, response = RateLimited),
    )
)]
async fn docs_asset(Path(asset): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, bytes) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == asset)
        .ok_or(ApiError::NotFound)?;
    Ok(with_type(content_type, (StatusCode::OK, *bytes)))
}
