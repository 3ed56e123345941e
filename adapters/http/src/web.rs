//! The web app, embedded in the binary: no build step, no files to deploy.

use poem::http::{HeaderValue, header};
use poem::web::{Data, Path};
use poem::{Request, Response, handler};

use crate::compression::Asset;

const INDEX_HTML: &str = include_str!("../static/index.html");
const ASYNCAPI_YAML: &str = include_str!("../../../docs/asyncapi.yaml");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// How the web app's files are served.
#[derive(Debug, Clone, Copy)]
pub struct WebOptions {
    /// gzip/br for clients that accept it.
    pub compression: bool,
}

/// A script module under `/static/`, embedded.
macro_rules! module {
    ($name:literal) => {
        (
            $name,
            Asset::new(include_str!(concat!("../static/", $name)), JAVASCRIPT),
        )
    };
}

/// The files under `/static/`. `app.js` is the entry module and imports the others; browsers
/// run ES modules only when served as JavaScript.
static ASSETS: [(&str, Asset); 18] = [
    (
        "app.css",
        Asset::new(include_str!("../static/app.css"), CSS),
    ),
    module!("api.js"),
    module!("app.js"),
    module!("connection.js"),
    module!("drawer.js"),
    module!("frames.js"),
    module!("history.js"),
    module!("members.js"),
    module!("outbox.js"),
    module!("presence.js"),
    module!("reads.js"),
    module!("render.js"),
    module!("room.js"),
    module!("rooms.js"),
    module!("rules.js"),
    module!("search.js"),
    module!("state.js"),
    module!("ui.js"),
];

static PAGE: Asset = Asset::new(INDEX_HTML, "text/html; charset=utf-8");

fn page(req: &Request, options: WebOptions) -> Response {
    let mut response = PAGE.response(req.headers(), options.compression);
    let headers = response.headers_mut();
    // The app loads only its own script and style and talks only to this server.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `/`: the chat app, starting at the lobby.
#[handler]
pub fn index(req: &Request, Data(options): Data<&WebOptions>) -> Response {
    page(req, *options)
}

/// `/client1/` and `/client2/`: the same app; the script reads the path and joins `general` as
/// alice or bob.
#[handler]
pub fn client(req: &Request, Data(options): Data<&WebOptions>) -> Response {
    page(req, *options)
}

/// `/static/{file}`: the app's stylesheet and script modules.
#[handler]
pub fn asset(
    req: &Request,
    Path(file): Path<String>,
    Data(options): Data<&WebOptions>,
) -> Response {
    let Some((_, asset)) = ASSETS.iter().find(|(name, _)| *name == file) else {
        return crate::problem::Problem::new(
            crate::problem::ErrorCode::NotFound,
            format!("no asset {file:?}"),
        )
        .into_response();
    };
    asset.response(req.headers(), options.compression)
}

/// `/asyncapi.yaml`: the WebSocket protocol, machine-readable.
#[handler]
pub fn asyncapi() -> Response {
    Response::builder()
        .content_type("application/yaml; charset=utf-8")
        .body(ASYNCAPI_YAML)
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, INDEX_HTML};

    /// The relative module specifiers (`from "./x.js"`) a script imports.
    fn imports(script: &str) -> Vec<&str> {
        script
            .split("from \"./")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    fn served(name: &str) -> bool {
        ASSETS.iter().any(|(served, _)| *served == name)
    }

    #[test]
    fn every_module_a_script_imports_is_served() {
        let scripts = ASSETS.iter().filter(|(name, _)| name.ends_with(".js"));
        for (name, asset) in scripts {
            for import in imports(asset.body()) {
                assert!(
                    served(import),
                    "{name} imports {import}, which is not served"
                );
            }
        }
    }

    #[test]
    fn every_served_module_is_reached_from_the_entry() {
        let mut reached = vec!["app.js"];
        let mut next = 0;
        while let Some(name) = reached.get(next).copied() {
            let body = ASSETS
                .iter()
                .find(|(served, _)| *served == name)
                .map_or("", |(_, asset)| asset.body());
            for import in imports(body) {
                if !reached.contains(&import) {
                    reached.push(import);
                }
            }
            next += 1;
        }
        for (name, _) in ASSETS.iter().filter(|(name, _)| name.ends_with(".js")) {
            assert!(
                reached.contains(name),
                "{name} is served but nothing imports it"
            );
        }
    }

    #[test]
    fn the_page_loads_the_entry_as_a_module_and_its_stylesheet() {
        assert!(INDEX_HTML.contains(r#"<script type="module" src="/static/app.js">"#));
        assert!(INDEX_HTML.contains(r#"href="/static/app.css""#));
        assert!(served("app.js") && served("app.css"));
    }

    #[test]
    fn scripts_are_served_as_javascript() {
        for (name, asset) in &ASSETS {
            if name.ends_with(".js") {
                assert!(
                    asset.content_type().starts_with("text/javascript"),
                    "{name}"
                );
            }
        }
    }
}
