//! Catalogue reads: no token needed.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use concert_domain::{ReserveSeat, SeatNumber, UserId};
use serde_json::json;

use super::{World, assert_problem, call, service, t0};

#[actix_web::test]
async fn concerts_are_listed_and_read_without_a_token() {
    let world = World::new();
    let svc = service!(world);
    let (status, _, body) = call!(svc, TestRequest::get().uri("/api/v1/concerts"));
    assert_eq!((status, body), (StatusCode::OK, json!([])));

    let (concert, _) = world.schedule();
    let (status, _, body) = call!(svc, TestRequest::get().uri("/api/v1/concerts"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([{"id": concert.get(), "title": format!("Concert {concert}")}])
    );

    let (status, _, body) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/concerts/{concert}"))
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"id": concert.get(), "title": format!("Concert {concert}")})
    );

    let outcome = call!(svc, TestRequest::get().uri("/api/v1/concerts/999"));
    assert_problem(&outcome, 404, "not-found");
    assert_eq!(outcome.2["detail"], "concert not found");
}

#[actix_web::test]
async fn schedules_are_the_future_dates_with_their_available_seats() {
    let world = World::new();
    let (concert, schedule) = world.schedule();
    world
        .services
        .reservations
        .reserve(ReserveSeat {
            user: UserId::from(5),
            schedule,
            seat: SeatNumber::new(1).unwrap(),
        })
        .await
        .unwrap();
    let svc = service!(world);
    let (status, _, body) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/concerts/{concert}/schedules"))
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([{
            "id": schedule.get(), "concertId": concert.get(),
            "startsAt": "2030-04-16T17:46:40Z", "availableSeats": 49
        }])
    );

    // once it has started, the date is no longer bookable
    world.clock.advance(chrono::Duration::days(31));
    let (status, _, body) = call!(
        svc,
        TestRequest::get().uri(&format!("/api/v1/concerts/{concert}/schedules"))
    );
    assert_eq!((status, body), (StatusCode::OK, json!([])));

    let outcome = call!(svc, TestRequest::get().uri("/api/v1/concerts/9/schedules"));
    assert_problem(&outcome, 404, "not-found");
}

#[actix_web::test]
async fn the_seat_map_shows_each_seat_now_and_filters_by_status() {
    let world = World::new();
    let (_, schedule) = world.schedule();
    for (user, seat) in [(5, 2), (6, 3)] {
        world
            .services
            .reservations
            .reserve(ReserveSeat {
                user: UserId::from(user),
                schedule,
                seat: SeatNumber::new(seat).unwrap(),
            })
            .await
            .unwrap();
    }
    let svc = service!(world);
    let uri = format!("/api/v1/schedules/{schedule}/seats");
    let (status, _, body) = call!(svc, TestRequest::get().uri(&uri));
    assert_eq!(status, StatusCode::OK);
    let seats = body.as_array().unwrap();
    assert_eq!(seats.len(), 50);
    assert_eq!(
        seats[..4],
        [
            json!({"number": 1, "price": 500, "status": "AVAILABLE"}),
            json!({"number": 2, "price": 500, "status": "HELD"}),
            json!({"number": 3, "price": 500, "status": "HELD"}),
            json!({"number": 4, "price": 500, "status": "AVAILABLE"}),
        ]
    );
    let (status, _, body) = call!(svc, TestRequest::get().uri(&format!("{uri}?status=HELD")));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([
            {"number": 2, "price": 500, "status": "HELD"},
            {"number": 3, "price": 500, "status": "HELD"}
        ])
    );
    let (_, _, body) = call!(
        svc,
        TestRequest::get().uri(&format!("{uri}?status=AVAILABLE"))
    );
    assert_eq!(body.as_array().unwrap().len(), 48);

    // an ended hold is available again, before anything writes it
    world.clock.advance(chrono::Duration::minutes(5));
    let (_, _, body) = call!(svc, TestRequest::get().uri(&format!("{uri}?status=HELD")));
    assert_eq!(body, json!([]));

    let outcome = call!(svc, TestRequest::get().uri("/api/v1/schedules/999/seats"));
    assert_problem(&outcome, 404, "not-found");
    assert_eq!(t0().to_rfc3339(), "2030-03-17T17:46:40+00:00");
}

#[actix_web::test]
async fn catalogue_reads_answer_503_when_storage_is_down() {
    let world = World::down();
    let svc = service!(world);
    for uri in [
        "/api/v1/concerts",
        "/api/v1/concerts/1",
        "/api/v1/concerts/1/schedules",
        "/api/v1/schedules/1/seats",
    ] {
        let outcome = call!(svc, TestRequest::get().uri(uri));
        assert_problem(&outcome, 503, "unavailable");
        assert_eq!(outcome.1.get("retry-after").unwrap(), "1", "{uri}");
        let detail = outcome.2["detail"].as_str().unwrap();
        assert!(!detail.contains("refused"), "{detail}");
    }
}
