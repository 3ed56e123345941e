//! The web app, embedded in the binary: no build step, no files to deploy.

use poem::http::StatusCode;
use poem::web::Path;
use poem::{Response, handler};

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const APP_CSS: &str = include_str!("../static/app.css");
const ASYNCAPI_YAML: &str = include_str!("../../../docs/asyncapi.yaml");

fn page() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        // The app loads only its own script and style and talks only to this server.
        .header(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'",
        )
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .body(INDEX_HTML)
}

/// `/`: the chat app, starting at the lobby.
#[handler]
pub fn index() -> Response {
    page()
}

/// `/client1/` and `/client2/`: the same app; the script reads the path and joins `general` as
/// alice or bob.
#[handler]
pub fn client() -> Response {
    page()
}

/// `/static/app.js` and `/static/app.css`.
#[handler]
pub fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => {
            return crate::problem::Problem::new(
                crate::problem::ErrorCode::NotFound,
                format!("no asset {file:?}"),
            )
            .into_response();
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .content_type(content_type)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff")
        .body(body)
}

/// `/asyncapi.yaml`: the WebSocket protocol, machine-readable.
#[handler]
pub fn asyncapi() -> Response {
    Response::builder()
        .content_type("application/yaml; charset=utf-8")
        .body(ASYNCAPI_YAML)
}
