//! The API's documents: the OpenAPI service itself, its JSON document and its Swagger UI page.

use std::sync::Arc;

use banter_application::Ports;
use poem::{Endpoint, Request, Response};
use poem_openapi::OpenApiService;

use super::api::ChatApi;
use crate::AppState;

/// The OpenAPI service, its Swagger UI page and its document (JSON).
pub fn service<P: Ports>(
    state: Arc<AppState<P>>,
) -> (OpenApiService<ChatApi<P>, ()>, String, String) {
    let service = OpenApiService::new(ChatApi::new(state), "banter", env!("CARGO_PKG_VERSION"))
        .description(
            "banter's REST API: read history, post messages, list rooms and presence. Errors are \
         application/problem+json (RFC 9457) with a `code` member. With auth `jwt`, every /api/ \
         endpoint needs `Authorization: Bearer <token>`. The WebSocket protocol is described \
         in /asyncapi.yaml.",
        );
    let docs = service.swagger_ui_html();
    let spec = service.spec();
    (service, docs, spec)
}

/// Serves a fixed document (the OpenAPI JSON, the Swagger UI page).
#[derive(Debug)]
pub struct Document {
    body: String,
    content_type: &'static str,
}

impl Document {
    pub fn new(body: String, content_type: &'static str) -> Self {
        Self { body, content_type }
    }
}

impl Endpoint for Document {
    type Output = Response;

    async fn call(&self, _req: Request) -> poem::Result<Response> {
        Ok(Response::builder()
            .content_type(self.content_type)
            .body(self.body.clone()))
    }
}
