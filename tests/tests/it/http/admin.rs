//! Catalogue administration: admin tokens only.

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use serde_json::{Value, json};

use super::{World, admin_bearer, assert_problem, bearer, call, service};

fn prices(price: i64) -> Vec<i64> {
    vec![price; 50]
}

fn create_concert(auth: Option<(header::HeaderName, String)>, body: Value) -> TestRequest {
    let mut req = TestRequest::post()
        .uri("/api/v1/admin/concerts")
        .set_json(body);
    if let Some(auth) = auth {
        req = req.insert_header(auth);
    }
    req
}

fn create_schedule(
    auth: Option<(header::HeaderName, String)>,
    concert: &Value,
    body: Value,
) -> TestRequest {
    let mut req = TestRequest::post()
        .uri(&format!("/api/v1/admin/concerts/{concert}/schedules"))
        .set_json(body);
    if let Some(auth) = auth {
        req = req.insert_header(auth);
    }
    req
}

#[actix_web::test]
async fn an_admin_puts_a_concert_and_a_date_on_sale() {
    let world = World::new();
    let svc = service!(world);
    let (status, headers, concert) = call!(
        svc,
        create_concert(Some(admin_bearer(1)), json!({"title": "  Spring Gala "}))
    );
    assert_eq!(status, StatusCode::CREATED, "{concert}");
    let id = concert["id"].clone();
    assert_eq!(concert, json!({"id": id, "title": "Spring Gala"}));
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        format!("/api/v1/concerts/{id}").as_str()
    );
    let (_, _, read) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/concerts/{id}"))
    );
    assert_eq!(read, concert);

    let mut seat_prices = prices(4000);
    seat_prices[0] = 9000;
    let (status, headers, schedule) = call!(
        svc,
        create_schedule(
            Some(admin_bearer(1)),
            &id,
            json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": seat_prices}),
        )
    );
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    let schedule_id = schedule["id"].clone();
    assert_eq!(
        schedule,
        json!({
            "id": schedule_id, "concertId": id, "startsAt": "2030-05-01T19:00:00Z",
            "availableSeats": 50
        })
    );
    let seats_uri = format!("/api/v1/schedules/{schedule_id}/seats");
    assert_eq!(headers.get(header::LOCATION).unwrap(), seats_uri.as_str());
    let (_, _, seats) = call!(svc, TestRequest::get().uri(&seats_uri));
    assert_eq!(
        seats[0],
        json!({"number": 1, "price": 9000, "status": "AVAILABLE"})
    );
    assert_eq!(
        seats[49],
        json!({"number": 50, "price": 4000, "status": "AVAILABLE"})
    );
    let (_, _, dates) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/concerts/{id}/schedules"))
    );
    assert_eq!(dates, json!([schedule]));
}

#[actix_web::test]
async fn only_admin_tokens_may_administer() {
    let world = World::new();
    let svc = service!(world);
    let body = json!({"title": "Night"});
    let outcome = call!(svc, create_concert(None, body.clone()));
    assert_problem(&outcome, 401, "unauthorized");
    assert_eq!(outcome.1.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    assert_problem(
        &call!(svc, create_concert(Some(bearer(1)), body.clone())),
        403,
        "forbidden",
    );
    let schedule = json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": prices(100)});
    assert_problem(
        &call!(
            svc,
            create_schedule(Some(bearer(1)), &json!(1), schedule.clone())
        ),
        403,
        "forbidden",
    );
    assert_problem(
        &call!(svc, create_schedule(None, &json!(1), schedule)),
        401,
        "unauthorized",
    );
    let (_, _, concerts) = call!(svc, TestRequest::get().uri("/api/v1/concerts"));
    assert_eq!(concerts, json!([]));
}

#[actix_web::test]
async fn invalid_catalogue_entries_are_refused() {
    let world = World::new();
    let svc = service!(world);
    let admin = || Some(admin_bearer(1));
    for title in [json!(" "), json!("x".repeat(201)), json!(7)] {
        let outcome = call!(svc, create_concert(admin(), json!({ "title": title })));
        assert_problem(&outcome, 400, "validation");
    }
    let (_, _, concert) = call!(svc, create_concert(admin(), json!({"title": "Night"})));
    let id = &concert["id"];
    let mut zero = prices(100);
    zero[9] = 0;
    for body in [
        // not in the future (the clock is at 2030-03-17T17:46:40Z)
        json!({"startsAt": "2030-03-17T17:46:40Z", "seatPrices": prices(100)}),
        json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": vec![100; 49]}),
        json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": vec![100; 51]}),
        json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": zero}),
        json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": prices(1_000_001)}),
        json!({"startsAt": "next week", "seatPrices": prices(100)}),
        json!({"seatPrices": prices(100)}),
    ] {
        let outcome = call!(svc, create_schedule(admin(), id, body.clone()));
        assert_problem(&outcome, 400, "validation");
    }
    let unknown = call!(
        svc,
        create_schedule(
            admin(),
            &json!(999),
            json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": prices(100)}),
        )
    );
    assert_problem(&unknown, 404, "not-found");
    assert_eq!(unknown.2["detail"], "concert not found");
    assert_problem(
        &call!(
            svc,
            create_schedule(
                admin(),
                &json!(0),
                json!({"startsAt": "2030-05-01T19:00:00Z", "seatPrices": prices(100)}),
            )
        ),
        400,
        "validation",
    );
    let (_, _, dates) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/concerts/{id}/schedules"))
    );
    assert_eq!(dates, json!([]));
}

#[actix_web::test]
async fn administration_answers_503_when_storage_is_down() {
    let world = World::down();
    let svc = service!(world);
    let outcome = call!(
        svc,
        create_concert(Some(admin_bearer(1)), json!({"title": "Night"}))
    );
    assert_problem(&outcome, 503, "unavailable");
}
