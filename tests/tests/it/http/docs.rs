//! The OpenAPI document and Swagger UI: served offline, complete, and true
//! to what is served.

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

use super::{World, admin_bearer, call, service};
use concert_http::error::Code;
use concert_http::openapi::{ApiDoc, OPENAPI_PATH, listed_problems, operations};

/// Every (method, path) of the contract (api.md, with its additions made
/// so far).
const CONTRACT: [(&str, &str); 24] = [
    ("GET", "/api/v1/concerts"),
    ("GET", "/api/v1/concerts/{concertId}"),
    ("GET", "/api/v1/concerts/{concertId}/schedules"),
    ("POST", "/api/v1/concerts/{concertId}/waiting-room"),
    ("GET", "/api/v1/concerts/{concertId}/waiting-room"),
    ("DELETE", "/api/v1/concerts/{concertId}/waiting-room"),
    ("GET", "/api/v1/schedules/{scheduleId}/seats"),
    ("POST", "/api/v1/reservations"),
    ("GET", "/api/v1/reservations"),
    ("POST", "/api/v1/reservations/batch"),
    ("GET", "/api/v1/reservations/{reservationId}"),
    ("DELETE", "/api/v1/reservations/{reservationId}"),
    ("GET", "/api/v1/reservation-requests/{requestId}"),
    ("GET", "/api/v1/points"),
    ("POST", "/api/v1/points/charge"),
    ("GET", "/api/v1/points/history"),
    ("POST", "/api/v1/payments"),
    ("GET", "/api/v1/payments/{paymentId}"),
    ("POST", "/api/v1/payments/{paymentId}/refund"),
    ("POST", "/api/v1/admin/concerts"),
    ("POST", "/api/v1/admin/concerts/{concertId}/schedules"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
];

fn document() -> Value {
    serde_json::to_value(concert_http::openapi()).unwrap()
}

/// Every documented (method, path, operation).
fn documented(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            found.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    found
}

#[actix_web::test]
async fn openapi_and_swagger_ui_are_served_offline() {
    let world = World::new();
    let svc = service!(world);
    let (status, _, doc) = call!(svc, TestRequest::get().uri(OPENAPI_PATH));
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/v1/payments"]["post"].is_object());
    assert_eq!(doc, document());

    let redirect =
        test::call_service(&svc, TestRequest::get().uri("/swagger-ui").to_request()).await;
    assert_eq!(
        redirect.headers().get(header::LOCATION).unwrap(),
        "/swagger-ui/"
    );

    for (uri, kind) in [
        ("/swagger-ui/", "text/html"),
        ("/swagger-ui/swagger-ui.css", "text/css"),
        ("/swagger-ui/swagger-ui-bundle.js", "javascript"),
        ("/swagger-ui/swagger-initializer.js", "javascript"),
    ] {
        let response = test::call_service(&svc, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let content_type = response.headers().get(header::CONTENT_TYPE).unwrap();
        assert!(content_type.to_str().unwrap().contains(kind), "{uri}");
        let body = test::read_body(response).await;
        assert!(body.len() > 100, "{uri}");
        if uri == "/swagger-ui/swagger-initializer.js" {
            let script = String::from_utf8_lossy(&body);
            assert!(script.contains(OPENAPI_PATH), "{script}");
            assert!(!script.contains("https://"), "offline: {script}");
        }
    }
}

#[test]
fn the_document_is_exactly_the_contract() {
    let doc = document();
    let mut documented: Vec<(String, String)> = documented(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let mut contract: Vec<(String, String)> = CONTRACT
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    contract.sort();
    assert_eq!(documented, contract);
    let components = &doc["components"];
    assert!(components["securitySchemes"]["bearer"].is_object());
    assert!(components["schemas"]["Problem"].is_object());
    assert!(doc.get("servers").is_none(), "no servers block");
}

/// A request for a documented operation, with ids filled in.
fn probe(method: &str, path: &str) -> TestRequest {
    let uri = path
        .replace("{concertId}", "1")
        .replace("{scheduleId}", "1")
        .replace("{reservationId}", "1")
        .replace("{paymentId}", "1")
        .replace("{requestId}", "0123456789abcdef0123456789abcdef");
    TestRequest::default()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(&uri)
        .insert_header(admin_bearer(1))
}

#[actix_web::test]
async fn every_documented_operation_is_served() {
    let world = World::new();
    let svc = service!(world);
    for (method, path, _) in documented(&document()) {
        let (status, _, body) = call!(svc, probe(&method, &path));
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND
                && body["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("no route"));
        assert!(!unrouted, "{method} {path}: {status} {body}");
    }
}

#[test]
fn every_error_response_is_a_problem_whose_examples_fit_its_status() {
    let doc = document();
    for (method, path, op) in documented(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            let status: u16 = status.parse().unwrap();
            if status < 400 {
                continue;
            }
            let at = format!("{method} {path} {status}");
            let content = response["content"].as_object().unwrap();
            assert_eq!(
                content.keys().collect::<Vec<_>>(),
                ["application/problem+json"],
                "{at}"
            );
            let media = &content["application/problem+json"];
            assert_eq!(
                media["schema"]["$ref"], "#/components/schemas/Problem",
                "{at}"
            );
            let examples = media["examples"].as_object().unwrap();
            assert!(!examples.is_empty(), "{at}");
            for (name, example) in examples {
                let value = &example["value"];
                let code = Code::parse(value["code"].as_str().unwrap()).unwrap();
                assert_eq!(code.as_str(), name, "{at}");
                assert_eq!(code.status().as_u16(), status, "{at}: {name}");
                assert_eq!(value["status"], status, "{at}: {name}");
                assert_eq!(
                    value.get("unavailableSeats").is_some(),
                    code == Code::SeatUnavailable,
                    "{at}: {name}"
                );
            }
            let headers = response["headers"].as_object();
            let has = |h: &str| headers.is_some_and(|hs| hs.contains_key(h));
            let retryable =
                examples.contains_key("unavailable") || examples.contains_key("lock-timeout");
            assert_eq!(has("Retry-After"), retryable, "{at}");
            assert_eq!(has("WWW-Authenticate"), status == 401, "{at}");
        }
    }
}

#[test]
fn every_listed_problem_code_exists() {
    let (_, raw) = concert_http::routes::register(
        actix_web::App::new()
            .into_utoipa_app()
            .openapi(ApiDoc::openapi()),
    )
    .split_for_parts();
    let mut listed = 0;
    for (path, item) in &raw.paths.paths {
        for (method, op) in operations(item) {
            for code in listed_problems(op) {
                assert!(code.is_ok(), "{method} {path}: unknown code {code:?}");
                listed += 1;
            }
        }
    }
    assert!(listed > 40, "{listed}");
    // and the finished document keeps no extension
    let doc = document().to_string();
    assert!(!doc.contains("x-problems"));
}

#[test]
fn what_each_operation_can_answer_is_documented() {
    let doc = document();
    let codes = |method: &str, path: &str| -> Vec<String> {
        let op = &doc["paths"][path][method];
        let mut found: Vec<String> = op["responses"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|r| r["content"]["application/problem+json"]["examples"].as_object())
            .flat_map(|e| e.keys().cloned())
            .collect();
        found.sort();
        found
    };
    assert_eq!(
        codes("post", "/api/v1/reservations"),
        [
            "concurrent-update",
            "hold-limit",
            "lock-timeout",
            "not-admitted",
            "not-found",
            "payload-too-large",
            "request-timeout",
            "seat-unavailable",
            "unauthorized",
            "unavailable",
            "validation"
        ]
    );
    assert_eq!(
        codes("post", "/api/v1/payments"),
        [
            "already-paid",
            "concurrent-update",
            "idempotency-key-reused",
            "insufficient-points",
            "lock-timeout",
            "not-admitted",
            "not-found",
            "payload-too-large",
            "request-timeout",
            "reservation-expired",
            "unauthorized",
            "unavailable",
            "validation"
        ]
    );
    assert_eq!(
        codes("post", "/api/v1/admin/concerts"),
        [
            "forbidden",
            "payload-too-large",
            "request-timeout",
            "unauthorized",
            "unavailable",
            "validation"
        ]
    );
    assert_eq!(codes("get", "/api/v1/concerts"), ["unavailable"]);
    assert_eq!(codes("get", "/health/live"), Vec::<String>::new());
}

#[test]
fn parameters_are_typed_and_bounded() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let mut ids = 0;
    for (method, path, op) in documented(&doc) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            let at = format!("{method} {path} {}", param["name"]);
            let schema = &param["schema"];
            match param["in"].as_str().unwrap() {
                "path" if param["name"] == "requestId" => {
                    assert_eq!(param["required"], true, "{at}");
                    assert_eq!(schema["type"], "string", "{at}");
                    assert_eq!(schema["pattern"], "^[0-9a-f]{32}$", "{at}");
                }
                "path" => {
                    assert_eq!(param["required"], true, "{at}");
                    assert_eq!(schema["type"], "integer", "{at}");
                    assert_eq!(schema["minimum"], 1, "{at}");
                    ids += 1;
                }
                "query" => {
                    assert_eq!(param["name"], "status", "{at}");
                    let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                    let values = schemas[name]["enum"].as_array().unwrap();
                    assert!(values.len() >= 3, "{at}: {values:?}");
                }
                "header" => {
                    assert_eq!(param["name"], "Idempotency-Key", "{at}");
                    assert_eq!(schema["type"], "string", "{at}");
                    assert_eq!(schema["maxLength"], 255, "{at}");
                    assert_eq!(schema["minLength"], 1, "{at}");
                }
                other => panic!("{at}: unexpected parameter in {other}"),
            }
        }
    }
    assert_eq!(ids, 11);
    assert_eq!(
        schemas["ReservationStatus"]["enum"],
        serde_json::json!(["HELD", "CONFIRMED", "EXPIRED", "CANCELLED", "REFUNDED"])
    );
    assert_eq!(
        doc["paths"]["/api/v1/reservations"]["get"]["parameters"][0]["schema"]["$ref"],
        "#/components/schemas/ReservationStatus"
    );
}

/// Every integer in a request body is declared `type: integer`, as the
/// API reads it (1.0 is refused).
#[test]
fn request_integers_are_integers_with_their_bounds() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut integers = 0;
    for (name, schema) in schemas.iter().filter(|(n, _)| n.ends_with("Request")) {
        for (field, property) in schema["properties"].as_object().unwrap() {
            let kind = property["type"].as_str().unwrap();
            let item_kind = property["items"]["type"].as_str();
            if kind == "integer" || item_kind == Some("integer") {
                integers += 1;
                assert!(
                    property["format"] == "int64" || property["items"]["format"] == "int64",
                    "{name}.{field}"
                );
            } else {
                assert!(
                    ["string", "array"].contains(&kind),
                    "{name}.{field}: {kind}"
                );
            }
        }
    }
    assert_eq!(integers, 7);
    // every list the service bounds says so
    let batch = &schemas["ReserveBatchRequest"]["properties"]["seatNumbers"];
    assert_eq!(
        (
            &batch["minItems"],
            &batch["maxItems"],
            &batch["uniqueItems"],
            &batch["items"]["minimum"],
            &batch["items"]["maximum"]
        ),
        (&json!(1), &json!(4), &json!(true), &json!(1), &json!(50))
    );
    let prices = &schemas["CreateScheduleRequest"]["properties"]["seatPrices"];
    assert_eq!(
        (&prices["items"]["minimum"], &prices["items"]["maximum"]),
        (&json!(1), &json!(1_000_000))
    );
}

#[test]
fn the_document_reads_well() {
    let doc = document();
    for (method, path, op) in documented(&doc) {
        let summary = op["summary"].as_str().unwrap_or_default();
        assert!(!summary.is_empty(), "{method} {path}");
        assert!(!summary.contains('`'), "{method} {path}: {summary}");
        assert!(op["operationId"].is_string(), "{method} {path}");
    }
    let text = doc.to_string();
    assert!(!text.contains("9007199254740991"));
    assert!(!text.contains("\"servers\""));
    let bearer = doc["components"]["securitySchemes"]["bearer"]["description"]
        .as_str()
        .unwrap();
    for needle in [
        "identity provider",
        "HS256",
        "sub",
        "exp",
        "admin",
        "iss",
        "aud",
        "app token --user N",
    ] {
        assert!(bearer.contains(needle), "{needle}: {bearer}");
    }
    let reservation = &doc["components"]["schemas"]["Reservation"];
    assert!(
        reservation["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("expiresAt"))
    );
    let expires = reservation["properties"]["expiresAt"]["description"]
        .as_str()
        .unwrap();
    assert!(
        expires.contains("HELD") && expires.contains("null"),
        "{expires}"
    );
}

#[test]
fn state_changing_answers_show_the_state_they_leave() {
    let doc = document();
    let example = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["example"]
            .clone()
    };
    let cancelled = example("/api/v1/reservations/{reservationId}", "delete");
    assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
    assert!(cancelled["expiresAt"].is_null(), "{cancelled}");
    let refunded = example("/api/v1/payments/{paymentId}/refund", "post");
    assert_eq!(refunded["status"], "REFUNDED", "{refunded}");
}
