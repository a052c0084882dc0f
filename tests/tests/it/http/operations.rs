//! Health, request ids, CORS, metrics and the observer, graceful stop.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use async_trait::async_trait;
use serde_json::json;

use super::{World, assert_problem, bearer, call, service};
use concert_http::{HttpOptions, Observed, REQUEST_ID_HEADER, Readiness, RequestObserver};

struct Dependency(&'static str, bool);

#[async_trait]
impl Readiness for Dependency {
    fn name(&self) -> &'static str {
        self.0
    }
    async fn check(&self) -> anyhow::Result<()> {
        if self.1 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("connection refused").context("redis ping"))
        }
    }
}

#[actix_web::test]
async fn readiness_names_what_failed() {
    let mut healthy = World::new();
    healthy.readiness = vec![Arc::new(Dependency("mysql", true))];
    let svc = service!(healthy);
    let (status, _, body) = call!(svc, TestRequest::get().uri("/health/ready"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "checked": ["mysql"]}));
    let (status, _, body) = call!(svc, TestRequest::get().uri("/health/live"));
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let mut sick = World::new();
    sick.readiness = vec![
        Arc::new(Dependency("mysql", true)),
        Arc::new(Dependency("redis", false)),
    ];
    let svc = service!(sick);
    let outcome = call!(svc, TestRequest::get().uri("/health/ready"));
    assert_problem(&outcome, 503, "unavailable");
    assert_eq!(outcome.1.get(header::RETRY_AFTER).unwrap(), "1");
    let detail = outcome.2["detail"].as_str().unwrap();
    assert_eq!(detail, "not ready: redis did not answer");
}

#[actix_web::test]
async fn every_response_carries_a_request_id_the_callers_when_sent() {
    let world = World::new();
    let svc = service!(world);
    let mut ids = HashSet::new();
    for uri in ["/health/live", "/nowhere", "/api/v1/points"] {
        let (_, headers, _) = call!(svc, TestRequest::get().uri(uri));
        let id = headers.get(REQUEST_ID_HEADER).expect("x-request-id");
        assert_eq!(id.len(), 36, "a UUID");
        ids.insert(id.clone());
    }
    assert_eq!(ids.len(), 3);

    let (_, headers, _) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points")
            .insert_header((REQUEST_ID_HEADER, "edge-7f3a:01"))
    );
    assert_eq!(headers.get(REQUEST_ID_HEADER).unwrap(), "edge-7f3a:01");
    // an unusable id is replaced
    for bad in ["has space".to_owned(), "x".repeat(129)] {
        let (_, headers, _) = call!(
            svc,
            TestRequest::get()
                .uri("/health/live")
                .insert_header((REQUEST_ID_HEADER, bad.as_str()))
        );
        let id = headers.get(REQUEST_ID_HEADER).unwrap();
        assert_ne!(id, bad.as_str());
        assert_eq!(id.len(), 36);
    }
}

fn preflight(origin: &str, method: &str, headers: &str) -> TestRequest {
    TestRequest::default()
        .method(Method::OPTIONS)
        .uri("/api/v1/reservations")
        .insert_header((header::ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_REQUEST_METHOD, method))
        .insert_header((header::ACCESS_CONTROL_REQUEST_HEADERS, headers))
}

#[actix_web::test]
async fn cors_answers_preflights_of_allowed_origins_only() {
    let mut world = World::new();
    world.options.cors_origins = vec!["https://tickets.example/".into()];
    let svc = service!(world);
    let (status, headers, _) = call!(
        svc,
        preflight(
            "https://tickets.example",
            "POST",
            "Authorization, Content-Type, Idempotency-Key, X-Request-Id"
        )
    );
    assert_eq!(status, StatusCode::NO_CONTENT);
    let get = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        get(header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some("https://tickets.example")
    );
    assert_eq!(
        get(header::ACCESS_CONTROL_ALLOW_METHODS).as_deref(),
        Some("GET, POST, DELETE")
    );
    assert_eq!(
        get(header::ACCESS_CONTROL_ALLOW_HEADERS).as_deref(),
        Some("authorization, content-type, idempotency-key, x-request-id")
    );
    assert_eq!(get(header::VARY).as_deref(), Some("Origin"));

    for req in [
        preflight("https://evil.example", "POST", "Authorization"),
        preflight("https://tickets.example", "PUT", "Authorization"),
        preflight("https://tickets.example", "POST", "X-Custom"),
    ] {
        let outcome = call!(svc, req);
        assert_problem(&outcome, 403, "forbidden");
        assert!(outcome.1.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    // actual requests: the allowed origin is named, the id exposed
    let (status, headers, _) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/points")
            .insert_header(bearer(1))
            .insert_header((header::ORIGIN, "https://tickets.example"))
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
        "https://tickets.example"
    );
    let exposed = headers
        .get(header::ACCESS_CONTROL_EXPOSE_HEADERS)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let (status, headers, _) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/concerts")
            .insert_header((header::ORIGIN, "https://evil.example"))
    );
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert_eq!(headers.get(header::VARY).unwrap(), "Origin");
    // same-origin requests (no Origin) are told apart for caches too
    let (_, headers, _) = call!(svc, TestRequest::get().uri("/api/v1/concerts"));
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert_eq!(headers.get(header::VARY).unwrap(), "Origin");
}

#[actix_web::test]
async fn without_origins_no_cors_header_is_ever_written() {
    let world = World::new();
    let svc = service!(world);
    let outcome = call!(
        svc,
        preflight("https://tickets.example", "POST", "Authorization")
    );
    assert_problem(&outcome, 405, "method-not-allowed");
    let (_, headers, _) = call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/concerts")
            .insert_header((header::ORIGIN, "https://tickets.example"))
    );
    for (name, _) in outcome.1.iter().chain(headers.iter()) {
        assert!(!name.as_str().starts_with("access-control-"), "{name}");
        assert_ne!(name, header::VARY);
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, u16)>>);

impl RequestObserver for Recorder {
    fn observe(&self, request: &Observed<'_>) {
        self.0.lock().unwrap().push((
            request.method.to_string(),
            request.route.to_owned(),
            request.status.as_u16(),
        ));
    }
}

#[actix_web::test]
async fn the_observer_sees_route_templates_never_raw_paths() {
    let recorder = Arc::new(Recorder::default());
    let mut world = World::new();
    world.options.observer = Some(recorder.clone());
    world.options.metrics = Some(Arc::new(|| {
        Box::pin(async { "http_requests_total 3\n".to_owned() })
    }));
    let svc = service!(world);
    call!(
        svc,
        TestRequest::get()
            .uri("/api/v1/reservations/123")
            .insert_header(bearer(1))
    );
    call!(svc, TestRequest::delete().uri("/api/v1/concerts"));
    call!(svc, TestRequest::get().uri("/api/v1/nothing/77"));
    let response = test::call_service(&svc, TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(test::read_body(response).await, "http_requests_total 3\n");
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            (
                "GET".to_owned(),
                "/api/v1/reservations/{reservationId}".to_owned(),
                404
            ),
            ("DELETE".to_owned(), "/api/v1/concerts".to_owned(), 405),
            ("GET".to_owned(), "unmatched".to_owned(), 404),
            ("GET".to_owned(), "/metrics".to_owned(), 200),
        ]
    );
}

#[actix_web::test]
async fn metrics_are_404_when_the_instance_has_none() {
    let world = World::new();
    let svc = service!(world);
    let outcome = call!(svc, TestRequest::get().uri("/metrics"));
    assert_problem(&outcome, 404, "not-found");
}

/// A readiness check that holds its request until released.
struct Gate {
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Readiness for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    async fn check(&self) -> anyhow::Result<()> {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            let _ = entered.send(());
        }
        self.release.notified().await;
        Ok(())
    }
}

#[actix_web::test]
async fn a_graceful_stop_finishes_accepted_requests_with_connection_close() {
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let mut world = World::new();
    world.readiness = vec![Arc::new(Gate {
        entered: Mutex::new(Some(entered_tx)),
        release: release.clone(),
    })];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = concert_http::server(
        listener,
        concert_http::AppState {
            services: world.services.clone(),
            auth: concert_http::Auth::new(super::SECRET, concert_http::AuthOptions::default()),
            readiness: world.readiness.clone(),
        },
        HttpOptions {
            workers: Some(1),
            shutdown_timeout: Duration::from_secs(30),
            ..HttpOptions::default()
        },
    )
    .unwrap();
    let handle = server.handle();
    let running = actix_web::rt::spawn(server);

    let (answered_tx, answered) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
            .write_all(b"GET /health/ready HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let _ = answered_tx.send(response);
    });
    entered.await.unwrap();

    let stopping = actix_web::rt::spawn(handle.stop(true));
    // the stop is under way once the listener is closed
    let mut closed = false;
    for _ in 0..1_000 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            closed = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the listener was not closed by the stop");
    release.notify_one();

    let response = answered.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{response}"
    );
    stopping.await.unwrap();
    running.await.unwrap().unwrap();
}
