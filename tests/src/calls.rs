//! Calls of the round-2 endpoints (cancel, batch holds, payments, refunds,
//! catalogue administration) on a [`TestApp`], and reading any answer.

use chrono::{DateTime, Utc};
use concert_domain::{ConcertId, ScheduleId, SeatNumber};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::app::{TestApp, json_ok};

/// An answer: its status, the problem's `code` (empty for a success) and
/// its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub code: String,
    pub body: Value,
}

impl Answer {
    /// Reads `response`; an error answer must be a problem+json document
    /// whose `status` is the response's.
    pub async fn read(response: Response) -> Answer {
        let status = response.status().as_u16();
        let problem = !response.status().is_success();
        if problem {
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(content_type, "application/problem+json", "status {status}");
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = if problem {
            assert_eq!(body["status"], status, "{body}");
            body["code"].as_str().unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        Answer { status, code, body }
    }

    /// (status, code).
    pub fn outcome(&self) -> (u16, &str) {
        (self.status, self.code.as_str())
    }
}

impl TestApp {
    /// `method path` as `user` (bearer token), no body.
    pub fn call_as(&self, user: u64, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.token_for(user))
    }

    /// `method path` with JSON `body` and an admin token.
    pub fn admin_call(&self, method: Method, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.admin_token_for(1))
            .json(body)
    }

    /// `DELETE /api/v1/reservations/{id}` as `user`.
    pub async fn cancel(&self, user: u64, reservation: u64) -> Response {
        self.call_as(
            user,
            Method::DELETE,
            &format!("/api/v1/reservations/{reservation}"),
        )
        .send()
        .await
        .expect("cancel sent")
    }

    /// `POST /api/v1/reservations/batch` as `user`.
    pub async fn reserve_batch(&self, user: u64, schedule: ScheduleId, seats: &[u8]) -> Response {
        let body = json!({"scheduleId": schedule.get(), "seatNumbers": seats});
        self.post_as(user, "/api/v1/reservations/batch", &body)
            .send()
            .await
            .expect("batch sent")
    }

    /// `POST /api/v1/payments/{id}/refund` as `user`.
    pub async fn refund(&self, user: u64, payment: u64) -> Response {
        self.call_as(
            user,
            Method::POST,
            &format!("/api/v1/payments/{payment}/refund"),
        )
        .send()
        .await
        .expect("refund sent")
    }

    /// `GET path` as `user`: the JSON body of a success.
    pub async fn read_as(&self, user: u64, path: &str) -> Value {
        json_ok(self.get_as(user, path).send().await.expect("sent")).await
    }

    /// Holds `seat` for `user` (asserting 201); the reservation's id.
    pub async fn hold(&self, user: u64, schedule: ScheduleId, seat: u8) -> u64 {
        let response = self.reserve(user, schedule, seat).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("a reservation");
        body["id"].as_u64().expect("an id")
    }

    /// Pays `reservation` as `user` (asserting 201); the payment's id.
    pub async fn paid(&self, user: u64, reservation: u64) -> u64 {
        let body = json_ok(self.pay(user, reservation).await).await;
        body["id"].as_u64().expect("a payment id")
    }

    /// Charges `user` `price`, holds `seat` and pays it (asserting each);
    /// (reservation, payment).
    pub async fn bought(
        &self,
        user: u64,
        schedule: ScheduleId,
        seat: u8,
        price: i64,
    ) -> (u64, u64) {
        json_ok(self.charge(user, price).await).await;
        let reservation = self.hold(user, schedule, seat).await;
        (reservation, self.paid(user, reservation).await)
    }

    /// The seat's status as the seat map shows it.
    pub async fn seat_status_of(&self, schedule: ScheduleId, seat: u8) -> String {
        let path = format!("/api/v1/schedules/{}/seats", schedule.get());
        let seats = json_ok(self.get(&path).send().await.expect("sent")).await;
        seats
            .as_array()
            .expect("a seat list")
            .iter()
            .find(|s| s["number"] == seat)
            .and_then(|s| s["status"].as_str())
            .expect("the seat is listed")
            .to_owned()
    }

    /// A concert with one schedule starting at `starts_at`, every seat
    /// priced `price`.
    pub async fn schedule_at(
        &self,
        starts_at: DateTime<Utc>,
        price: u64,
    ) -> (ConcertId, ScheduleId) {
        let concert = self
            .db
            .sql
            .create_concert("Test concert")
            .await
            .expect("concert created");
        let schedule = self
            .db
            .sql
            .create_schedule(concert, starts_at, |_: SeatNumber| price)
            .await
            .expect("schedule created");
        (concert, schedule)
    }

    /// The app's clock's now (the test moves it).
    pub fn now(&self) -> DateTime<Utc> {
        use concert_domain::Clock;
        self.clock
            .as_ref()
            .map_or_else(Utc::now, |clock| clock.now())
    }

    /// Moves the app's clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock
            .as_ref()
            .expect("this app has a manual clock")
            .advance(by);
    }
}
