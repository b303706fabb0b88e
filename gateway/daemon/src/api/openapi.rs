//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes, served at `/api/openapi.json` (public: it describes the API,
//! it holds no data) and shown by the viewer at `/docs`.
//!
//! A unit test checks that every route registered anywhere in this crate
//! (`.route("…", get(…))`) is in the document, so a new endpoint without
//! documentation fails the build's tests.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::{audit, dashboard, devices, export, metrics, privacy, readings, rest, risk, ws};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "emotion-gateway",
        description = "Edge gateway for real-time emotion processing. Tokens go in an `x-auth-token` header or \
            `Authorization: Bearer` (WebSockets of the original protocol also take `?token=`). Scopes: `ingest`, \
            `read`, `admin` (admin grants all). WebSocket endpoints are listed as GET requests that upgrade.",
        license(name = "Apache-2.0")
    ),
    paths(
        rest::health,
        metrics::metrics,
        openapi_json,
        rest::user_summary,
        risk::report,
        risk::fused,
        risk::risk,
        risk::sweep,
        rest::user_events,
        rest::session,
        rest::sources,
        rest::sync,
        rest::mqtt,
        readings::plugins,
        devices::devices,
        privacy::get_consent,
        privacy::put_consent,
        privacy::erase,
        audit::audit,
        privacy::pseudonyms,
        devices::scan,
        devices::ble_devices,
        devices::drop_link,
        devices::pair,
        devices::unpair,
        export::export,
        dashboard::ticket,
        dashboard::index,
        dashboard::dashboard_file,
        dashboard::docs,
        dashboard::docs_file,
        ws::stream,
        ws::legacy,
        ws::metrics,
        readings::readings,
        dashboard::ws,
    ),
    components(schemas(ErrorBody, ErrorDetail, dashboard::Ticket)),
    modifiers(&Security),
    tags(
        (name = "health", description = "Liveness and state, no token needed"),
        (name = "users", description = "Per-user and per-session analysis and stored events (read)"),
        (name = "plugins", description = "WebAssembly source plugins"),
        (name = "sync", description = "The central sync"),
        (name = "devices", description = "Serial and BLE wearables"),
        (name = "mqtt", description = "The embedded MQTT broker and the upstream broker client"),
        (name = "privacy", description = "Consent and erasure"),
        (name = "export", description = "Downloads of a user's data"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "dashboard", description = "The dashboard and its WebSocket ticket"),
        (name = "docs", description = "This documentation"),
        (name = "websocket", description = "WebSocket endpoints (GET requests that upgrade)"),
    )
)]
pub struct ApiDoc;

/// The token schemes the `security(...)` of the handlers name.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-auth-token",
                "An API token (see [[auth.tokens]] in the configuration)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same token as `Authorization: Bearer …`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "query_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The token as a query parameter, for the original system's WebSocket clients",
            ))),
        );
    }
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "docs",
    summary = "This OpenAPI document",
    description = "Generated from the code. Public: it describes the API and holds no data.",
    responses((status = 200, description = "OpenAPI 3.1 document", body = serde_json::Value))
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// (METHOD, path) of every `.route(...)` in the crate's sources.
    fn registered_routes() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src dir") {
                let p = entry.expect("dir entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&p).expect("read source");
                    collect_routes(&text, &mut out);
                }
            }
        }
        out
    }

    fn collect_routes(text: &str, out: &mut BTreeSet<(String, String)>) {
        let needle = concat!(".route", "(\"");
        let mut rest = text;
        while let Some(i) = rest.find(needle) {
            rest = &rest[i + needle.len()..];
            let Some(end) = rest.find('"') else { break };
            // Only real paths (prose in comments may quote the pattern).
            if !rest.starts_with('/') {
                continue;
            }
            // axum's `{*file}` is OpenAPI's `{file}`.
            let path = rest[..end].replace("{*", "{");
            // The method router runs to the `)` closing `.route(`.
            let mut depth = 1;
            let mut close = rest.len();
            for (j, c) in rest[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = end + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = &rest[end..close];
            for m in ["get", "post", "put", "delete", "patch"] {
                let call = format!("{m}(");
                let hit = methods.match_indices(&call).any(|(k, _)| {
                    k == 0 || {
                        let prev = methods.as_bytes()[k - 1];
                        !(prev.is_ascii_alphanumeric() || prev == b'_')
                    }
                });
                if hit {
                    out.insert((m.to_uppercase(), path.clone()));
                }
            }
        }
    }

    #[test]
    fn every_registered_route_is_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        let paths = doc["paths"].as_object().expect("paths");
        let routes = registered_routes();
        assert!(routes.len() >= 25, "found only {routes:?}");
        let missing: Vec<_> = routes
            .iter()
            .filter(|(m, p)| {
                paths
                    .get(p)
                    .and_then(|item| item.get(m.to_lowercase()))
                    .is_none()
            })
            .collect();
        assert!(
            missing.is_empty(),
            "routes without #[utoipa::path] in ApiDoc (api/openapi.rs): {missing:?}"
        );
    }

    #[test]
    fn route_scanner_reads_chained_methods() {
        let mut out = BTreeSet::new();
        collect_routes(
            concat!(
                ".route",
                "(\"/a/{*f}\", get(x).post(y::z))\n.route",
                "(\"/b\", delete(budget))"
            ),
            &mut out,
        );
        let want: BTreeSet<(String, String)> =
            [("GET", "/a/{f}"), ("POST", "/a/{f}"), ("DELETE", "/b")]
                .into_iter()
                .map(|(m, p)| (m.to_owned(), p.to_owned()))
                .collect();
        assert_eq!(out, want);
    }
}
