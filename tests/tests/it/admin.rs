//! Catalogue administration end to end: an operator puts a concert and a
//! date on sale without SQL; everyone else is refused, and nothing invalid
//! is written.

use concert_tests::app::{TestApp, spawn_app};
use concert_tests::calls::Answer;
use reqwest::Method;
use serde_json::{Value, json};

async fn answer(response: reqwest::Response) -> Answer {
    Answer::read(response).await
}

fn prices() -> Vec<u64> {
    (1..=50).map(|n| 1000 + n * 10).collect()
}

fn schedule_body(app: &TestApp, days: i64, prices: &[u64]) -> Value {
    let starts = (app.now() + chrono::Duration::days(days)).to_rfc3339();
    json!({"startsAt": starts, "seatPrices": prices})
}

#[tokio::test]
async fn an_admin_puts_a_concert_and_a_date_on_sale() {
    let app = spawn_app().await;
    let created = app
        .admin_call(
            Method::POST,
            "/api/v1/admin/concerts",
            &json!({"title": "Spring Gala"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let concert: Value = created.json().await.unwrap();
    let id = concert["id"].as_u64().expect("an id");
    assert_eq!(concert, json!({"id": id, "title": "Spring Gala"}));
    assert_eq!(location, format!("/api/v1/concerts/{id}"));
    assert_eq!(app.read_as(1, &location).await, concert);
    let listed = app.read_as(1, "/api/v1/concerts").await;
    assert!(listed.as_array().unwrap().contains(&concert), "{listed}");

    let body = schedule_body(&app, 10, &prices());
    let created = app
        .admin_call(
            Method::POST,
            &format!("/api/v1/admin/concerts/{id}/schedules"),
            &body,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let schedule: Value = created.json().await.unwrap();
    let schedule_id = schedule["id"].as_u64().expect("an id");
    assert_eq!(schedule["concertId"], id);
    assert_eq!(schedule["availableSeats"], 50);
    let starts =
        chrono::DateTime::parse_from_rfc3339(schedule["startsAt"].as_str().unwrap()).unwrap();
    let asked = chrono::DateTime::parse_from_rfc3339(body["startsAt"].as_str().unwrap()).unwrap();
    assert!((starts - asked).num_milliseconds().abs() < 1, "{schedule}");
    assert_eq!(location, format!("/api/v1/schedules/{schedule_id}/seats"));

    let seats = app.read_as(1, &location).await;
    let seats: Vec<(u64, u64, String)> = seats
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["number"].as_u64().unwrap(),
                s["price"].as_u64().unwrap(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, u64, String)> = (1..=50)
        .map(|n| (n, 1000 + n * 10, "AVAILABLE".to_owned()))
        .collect();
    assert_eq!(seats, expected);
    let dates = app
        .read_as(1, &format!("/api/v1/concerts/{id}/schedules"))
        .await;
    assert_eq!(dates.as_array().unwrap().len(), 1);
    assert_eq!(dates[0]["id"], schedule_id);

    // and it sells
    let reservation = app
        .hold(3, concert_domain::ScheduleId::from(schedule_id), 50)
        .await;
    assert!(reservation > 0);
}

#[tokio::test]
async fn only_admins_may_and_nothing_invalid_is_written() {
    let app = spawn_app().await;
    let (concert, _) = app.seed_schedule(500).await;
    let before = app.db.sql.catalogue_size().await.unwrap();
    let schedules = format!("/api/v1/admin/concerts/{concert}/schedules");
    let good_concert = json!({"title": "Autumn"});
    let good_schedule = schedule_body(&app, 5, &prices());

    // a user token: 403; no token: 401
    for (path, body) in [
        ("/api/v1/admin/concerts", &good_concert),
        (schedules.as_str(), &good_schedule),
    ] {
        let user = app.post_as(7, path, body).send().await.unwrap();
        assert_eq!(answer(user).await.outcome(), (403, "forbidden"), "{path}");
        let anonymous = app
            .client
            .post(app.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer(anonymous).await.outcome(),
            (401, "unauthorized"),
            "{path}"
        );
    }

    // invalid concerts: 400
    for body in [
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "x".repeat(201)}),
        json!({"title": 5}),
        json!({}),
    ] {
        let response = app
            .admin_call(Method::POST, "/api/v1/admin/concerts", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer(response).await.outcome(),
            (400, "validation"),
            "{body}"
        );
    }
    // invalid schedules: 400
    let mut zero = prices();
    zero[7] = 0;
    let mut negative: Vec<i64> = prices().iter().map(|p| *p as i64).collect();
    negative[0] = -5;
    let mut too_dear = prices();
    too_dear[3] = 1_000_001;
    let invalid = [
        schedule_body(&app, -1, &prices()),
        schedule_body(&app, 5, &prices()[..49]),
        schedule_body(&app, 5, &[prices(), vec![10]].concat()),
        schedule_body(&app, 5, &zero),
        schedule_body(&app, 5, &too_dear),
        json!({"startsAt": good_schedule["startsAt"], "seatPrices": negative}),
        json!({"startsAt": "next tuesday", "seatPrices": prices()}),
        json!({"seatPrices": prices()}),
        json!({"startsAt": good_schedule["startsAt"]}),
    ];
    for body in invalid {
        let response = app
            .admin_call(Method::POST, &schedules, &body)
            .send()
            .await
            .unwrap();
        let a = answer(response).await;
        assert_eq!(a.outcome(), (400, "validation"), "{body}: {}", a.body);
    }
    for bad in ["0", "abc"] {
        let response = app
            .admin_call(
                Method::POST,
                &format!("/api/v1/admin/concerts/{bad}/schedules"),
                &good_schedule,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer(response).await.outcome(),
            (400, "validation"),
            "{bad}"
        );
    }
    // an unknown concert: 404
    let response = app
        .admin_call(
            Method::POST,
            "/api/v1/admin/concerts/999999/schedules",
            &good_schedule,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer(response).await.outcome(), (404, "not-found"));

    assert_eq!(app.db.sql.catalogue_size().await.unwrap(), before);
}
