//! The OpenAPI document. Paths and schemas are collected from the routes
//! as they are registered ([`crate::routes::register`]); this module adds
//! what is the same for every route:
//!
//! - the base: info, tags, the `bearer` security scheme and the `Problem`
//!   schema ([`ApiDoc`]);
//! - the error responses ([`finish`]): each operation lists the problem
//!   codes its use case can answer in its `x-problems` extension, and gets
//!   one problem+json response per status, with one example per code (its
//!   status always the code's). Added without being listed: `validation`
//!   for any operation with a parameter or a body; `payload-too-large` and
//!   `request-timeout` for any body; `unauthorized` for any operation with
//!   the bearer scheme.

use std::collections::{BTreeMap, HashMap};

use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{Code, PROBLEM_JSON, Problem};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";
/// Where Swagger UI is served.
pub const SWAGGER_UI_PATH: &str = "/swagger-ui/";
/// The operation extension that lists an operation's problem codes.
pub const PROBLEMS_EXTENSION: &str = "x-problems";

/// The base of the document: everything but the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Concert reservation API",
        description = "Browse concerts, hold seats, charge points and pay, correct under contention.\n\n\
Errors are application/problem+json (RFC 9457) with a stable machine code; each operation lists \
the codes it can answer, one example per code. A method a path does not support answers 405 \
method-not-allowed with an Allow header. Every response carries X-Request-Id (the caller's, when \
it sent one).",
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme),
    tags(
        (name = "catalogue", description = "Concerts, dates and seats (no token needed)"),
        (name = "waiting-room", description = "Admission to an on-sale, in order of arrival"),
        (name = "reservations", description = "Seat holds"),
        (name = "points", description = "Point balance, charge and history"),
        (name = "payments", description = "Paying a held seat with points, and refunds"),
        (name = "admin", description = "Catalogue administration (admin role)"),
        (name = "health", description = "Liveness and readiness"),
        (name = "operations", description = "Metrics"),
    )
)]
pub struct ApiDoc;

/// What the Authorize dialog says about tokens.
pub const BEARER_DESCRIPTION: &str = "An HS256 JWT. In a real deployment an identity provider \
issues it, signed with the secret shared with this service (APP_JWT_SECRET), with the claims \
sub (the user id: a positive integer written as a string), exp, role = \"admin\" for catalogue \
administration, and iss / aud when APP_JWT_ISSUER / APP_JWT_AUDIENCE are configured. For local \
use, `app token --user N` prints one (add `--admin` for the admin role).";

/// Adds the `bearer` HTTP security scheme.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(BEARER_DESCRIPTION))
                    .build(),
            ),
        );
    }
}

/// Completes the collected document: the error responses of every
/// operation (see the module docs), and no `servers` (the document
/// describes whichever host serves it).
pub fn finish(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    finish_for(doc, concert_domain::Policy::default().max_seats_per_request)
}

/// [`finish`] for a service that holds at most `max_seats` seats per batch
/// request: the batch body declares it (`maxItems`), with distinct items
/// (`uniqueItems`), so that every request the document allows is one the
/// service accepts.
pub fn finish_for(mut doc: utoipa::openapi::OpenApi, max_seats: usize) -> utoipa::openapi::OpenApi {
    if let Some(schemas) = doc.components.as_mut().map(|c| &mut c.schemas) {
        if let Some(seats) = array_property(schemas, "ReserveBatchRequest", "seatNumbers") {
            seats.max_items = Some(max_seats);
            seats.unique_items = true;
            bound_items(seats, 1, isize::from(concert_domain::SeatNumber::MAX));
        }
        if let Some(prices) = array_property(schemas, "CreateScheduleRequest", "seatPrices") {
            let max = isize::try_from(concert_domain::MAX_AMOUNT).unwrap_or(isize::MAX);
            bound_items(prices, 1, max);
        }
    }
    doc.servers = None;
    for item in doc.paths.paths.values_mut() {
        for (_, operation) in operations_mut(item) {
            add_problems(operation);
        }
    }
    doc
}

/// The array property `property` of the object schema `schema`.
fn array_property<'a>(
    schemas: &'a mut BTreeMap<String, RefOr<Schema>>,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Array> {
    match schemas.get_mut(schema)? {
        RefOr::T(Schema::Object(object)) => match object.properties.get_mut(property)? {
            RefOr::T(Schema::Array(array)) => Some(array),
            _ => None,
        },
        _ => None,
    }
}

/// Declares the items of `array` integers from `min` to `max`.
fn bound_items(array: &mut utoipa::openapi::schema::Array, min: isize, max: isize) {
    if let utoipa::openapi::schema::ArrayItems::RefOrSchema(items) = &mut array.items
        && let RefOr::T(Schema::Object(item)) = items.as_mut()
    {
        item.minimum = Some(utoipa::Number::Int(min));
        item.maximum = Some(utoipa::Number::Int(max));
    }
}

/// The operations of a path item, with their method.
pub fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("PUT", item.put.as_mut()),
        ("POST", item.post.as_mut()),
        ("DELETE", item.delete.as_mut()),
        ("OPTIONS", item.options.as_mut()),
        ("HEAD", item.head.as_mut()),
        ("PATCH", item.patch.as_mut()),
        ("TRACE", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
    .collect()
}

/// The operations of a path item, with their method.
pub fn operations(item: &PathItem) -> Vec<(&'static str, &Operation)> {
    [
        ("GET", item.get.as_ref()),
        ("PUT", item.put.as_ref()),
        ("POST", item.post.as_ref()),
        ("DELETE", item.delete.as_ref()),
        ("OPTIONS", item.options.as_ref()),
        ("HEAD", item.head.as_ref()),
        ("PATCH", item.patch.as_ref()),
        ("TRACE", item.trace.as_ref()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
    .collect()
}

/// The codes an operation lists in its `x-problems` extension, as
/// written (an unknown code is an `Err` with its text).
pub fn listed_problems(operation: &Operation) -> Vec<Result<Code, String>> {
    operation
        .extensions
        .as_ref()
        .and_then(|e| e.get(PROBLEMS_EXTENSION))
        .and_then(|v| v.as_array())
        .map(|codes| {
            codes
                .iter()
                .map(|c| {
                    let text = c.as_str().unwrap_or_default();
                    Code::parse(text).ok_or_else(|| text.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn add_problems(operation: &mut Operation) {
    let mut codes: Vec<Code> = listed_problems(operation)
        .into_iter()
        .filter_map(|c| match c {
            Ok(code) => Some(code),
            Err(unknown) => {
                tracing::error!(code = unknown, "unknown problem code in x-problems");
                None
            }
        })
        .collect();
    if let Some(extensions) = operation.extensions.as_mut() {
        extensions.remove(PROBLEMS_EXTENSION);
        if extensions.is_empty() {
            operation.extensions = None::<Extensions>;
        }
    }
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = operation.request_body.is_some();
    if has_params || has_body {
        codes.push(Code::Validation);
    }
    if has_body {
        codes.extend([Code::PayloadTooLarge, Code::RequestTimeout]);
    }
    let bearer = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    if bearer {
        codes.push(Code::Unauthorized);
    }
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code.status().as_u16()).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }
    for (status, codes) in by_status {
        operation
            .responses
            .responses
            .insert(status.to_string(), RefOr::T(problem_response(&codes)));
    }
}

fn problem_response(codes: &[Code]) -> utoipa::openapi::Response {
    let description = codes
        .iter()
        .map(|c| format!("{c}: {}", c.meaning()))
        .collect::<Vec<_>>()
        .join("; ");
    let examples = codes.iter().map(|c| {
        let example = ExampleBuilder::new()
            .summary(c.as_str())
            .value(serde_json::to_value(c.example()).ok())
            .build();
        (c.as_str(), example)
    });
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .examples_from_iter(examples)
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content);
    let retry = codes
        .iter()
        .any(|c| matches!(c, Code::Unavailable | Code::LockTimeout));
    if retry {
        response = response.header(
            "Retry-After",
            header(Type::Integer, "Seconds to wait before retrying"),
        );
    }
    if codes.contains(&Code::Unauthorized) {
        response = response.header(
            "WWW-Authenticate",
            header(Type::String, "The Bearer challenge (RFC 6750)"),
        );
    }
    response.build()
}

fn header(kind: Type, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(kind).build()))
        .description(Some(description))
        .build()
}

/// The methods each served path template answers (for 405's `Allow`).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    methods: HashMap<String, Vec<&'static str>>,
}

impl RouteTable {
    /// The documented routes, and the document and Swagger UI themselves.
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut methods: HashMap<String, Vec<&'static str>> = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let verbs = operations(item).into_iter().map(|(m, _)| m).collect();
                (path.clone(), verbs)
            })
            .collect();
        for path in [OPENAPI_PATH, "/swagger-ui", "/swagger-ui/{_:.*}"] {
            methods.insert(path.to_owned(), vec!["GET"]);
        }
        Self { methods }
    }

    /// The methods `pattern` answers, if it is a route.
    pub fn methods(&self, pattern: &str) -> Option<&[&'static str]> {
        self.methods.get(pattern).map(Vec::as_slice)
    }
}
