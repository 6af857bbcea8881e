//! `GET /openapi.json`: the OpenAPI 3.1 document of the application API, generated from the
//! handlers' `#[utoipa::path]` annotations and the modules' route tables ([`MODULES`]).
//!
//! What every operation under the prefix shares is added here rather than on each handler: the
//! `{project_id}` path parameter, the bearer-key security requirement, and the JSON error
//! responses (`ApiError`: `{error_code, error_msg}`), with `Retry-After` on 429.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, Required};

use super::PREFIX;

/// The JSON body of every failure.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = ApiError)]
pub struct ErrorBody {
    /// A stable code, e.g. `FLEETGATE.NOT_FOUND`.
    pub error_code: String,
    /// What went wrong, for people.
    pub error_msg: String,
}

/// A module of the application API: its tag and its part of the document.
pub(super) struct Module {
    /// The OpenAPI tag of its operations.
    pub tag: &'static str,
    /// What the tag covers.
    pub description: &'static str,
    /// The module's paths (relative to [`PREFIX`]).
    pub doc: fn() -> utoipa::openapi::OpenApi,
    /// The registered routes, for the agreement test.
    #[cfg(test)]
    pub routes: &'static [(&'static str, &'static str)],
}

macro_rules! module {
    ($m:ident, $tag:literal, $description:literal) => {
        Module {
            tag: $tag,
            description: $description,
            doc: <super::$m::Doc as OpenApi>::openapi,
            #[cfg(test)]
            routes: super::$m::ROUTES,
        }
    };
}

/// Every module under [`PREFIX`]; a new module is one line here.
pub(super) const MODULES: &[Module] = &[
    module!(apps, "applications", "Applications and their API keys"),
    module!(products, "products", "Products and product models"),
    module!(devices, "devices", "Device registration and life cycle"),
    module!(
        groups,
        "groups",
        "Device groups, tags and finding devices by tag"
    ),
    module!(
        emqx,
        "emqx",
        "EMQX-style sessions, proxy subscriptions, publications, statistics, credentials and ACL rules"
    ),
    module!(
        interact,
        "interact",
        "Shadow, commands, properties and messages down"
    ),
    module!(
        commands,
        "async-commands",
        "Asynchronous commands: immediate or cached for sleeping devices, status, cancel"
    ),
];

/// The routes outside the prefix.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleetgate application API",
        description = "The application HTTP API of fleetgate, after the IoTDA v5 application \
                       API. Every failure answers a JSON `ApiError` with a stable `error_code`."
    ),
    paths(crate::server::get_healthz, serve),
    components(schemas(ErrorBody))
)]
struct Root;

/// The OpenAPI document, served as `GET /openapi.json` without authentication.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub(super) async fn serve() -> HttpResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(text.clone())
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ApiError")))
                .build(),
        )
        .build()
        .into()
}

fn rate_limited() -> RefOr<Response> {
    let RefOr::T(mut r) = error("The application's token bucket is empty") else {
        unreachable!("error() builds an inline response")
    };
    r.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("Seconds to wait before retrying"))
            .build(),
    );
    r.into()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Adds what every operation under the prefix shares.
fn complete(item: &mut PathItem, tag: &str) {
    item.parameters.get_or_insert_with(Vec::new).insert(
        0,
        ParameterBuilder::new()
            .name("project_id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(
                "Accepted whatever its value (fleetgate serves one project)",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build(),
    );
    for op in operations(item) {
        op.tags = Some(vec![tag.to_owned()]);
        op.security = Some(vec![SecurityRequirement::new("api_key", [""; 0])]);
        let has_body = op.request_body.is_some();
        let responses = &mut op.responses.responses;
        let mut add = |status: &str, r: RefOr<Response>| {
            responses.entry(status.to_owned()).or_insert(r);
        };
        add("400", error("Malformed request, or one that breaks a rule"));
        add("401", error("No valid API key"));
        add("403", error("The key's application may not do this"));
        add("404", error("Not found (or another application's)"));
        add("409", error("Conflicts with the stored state or a limit"));
        add("429", rate_limited());
        add("500", error("Internal error"));
        add("503", error("Storage or the platform is not available"));
        if has_body {
            add("413", error("The body is too large"));
            add("415", error("The body is not JSON"));
        }
    }
}

/// Builds the whole document.
pub(super) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    let mut tags = vec![
        utoipa::openapi::tag::TagBuilder::new()
            .name("meta")
            .description(Some("Health and this document"))
            .build(),
    ];
    for m in MODULES {
        let part = (m.doc)();
        for (path, mut item) in part.paths.paths {
            complete(&mut item, m.tag);
            doc.paths.paths.insert(format!("{PREFIX}{path}"), item);
        }
        if let Some(c) = part.components {
            let components = doc.components.get_or_insert_with(Default::default);
            components.schemas.extend(c.schemas);
        }
        tags.push(
            utoipa::openapi::tag::TagBuilder::new()
                .name(m.tag)
                .description(Some(m.description))
                .build(),
        );
    }
    doc.tags = Some(tags);
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An application's API key"))
                    .build(),
            ),
        );
    doc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn has(doc: &utoipa::openapi::OpenApi, method: &str, path: &str) -> bool {
        let Some(item) = doc.paths.paths.get(path) else {
            return false;
        };
        match method {
            "get" => item.get.is_some(),
            "put" => item.put.is_some(),
            "post" => item.post.is_some(),
            "delete" => item.delete.is_some(),
            other => panic!("unexpected method {other}"),
        }
    }

    #[test]
    fn every_registered_route_is_documented_and_nothing_else() {
        let mut doc = document();
        let mut registered = 2; // /healthz and /openapi.json
        for m in MODULES {
            for (method, path) in m.routes {
                assert!(
                    has(&doc, method, &format!("{PREFIX}{path}")),
                    "{method} {path} of {} is not in the document",
                    m.tag
                );
                registered += 1;
            }
        }
        assert!(has(&doc, "get", "/healthz"));
        assert!(has(&doc, "get", "/openapi.json"));
        let documented: usize = doc
            .paths
            .paths
            .values_mut()
            .map(|item| operations(item).count())
            .sum();
        assert_eq!(
            documented, registered,
            "the document has operations no route serves"
        );
    }

    #[test]
    fn operations_under_the_prefix_need_a_key_and_answer_json_errors() {
        let doc = document();
        let json = serde_json::to_value(&doc).unwrap();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let errors = &op["responses"]["400"];
                if path.starts_with("/v5/") {
                    assert_eq!(
                        op["security"],
                        serde_json::json!([{"api_key": []}]),
                        "{path}"
                    );
                    assert_eq!(
                        errors["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {path}"
                    );
                    assert!(op["responses"]["429"]["headers"]["Retry-After"].is_object());
                }
            }
        }
        assert!(json["components"]["securitySchemes"]["api_key"].is_object());
    }
}
