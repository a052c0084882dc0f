//! Seat holds under the queue strategy over HTTP: 202 with a request to
//! poll when the outcome is not ready in time, the request readable by its
//! owner only, and its outcome the answer the hold would have given. The
//! queue here is an in-memory one whose requests the test applies, through
//! the domain's real applier, when it wants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::test::TestRequest;
use async_trait::async_trait;
use concert_domain::{
    Applied, Appliers, Control, Controls, Delivery, Failure, Fence, PartitionApplier, Policy,
    QueuedRequest, RequestId, RequestState, SeatQueue, SeatRequestApplier, Services, Submitted,
};
use serde_json::{Value, json};

use super::{TestClock, World, assert_problem, bearer, call, service};

/// Queued requests, kept until the test applies them.
#[derive(Default)]
struct Held {
    queued: Vec<QueuedRequest>,
    states: HashMap<RequestId, RequestState>,
}

struct MemoryQueue {
    held: Mutex<Held>,
    tenure: tokio::sync::Mutex<Box<dyn PartitionApplier>>,
    /// Apply at once (the outcome is ready within the budget).
    immediate: bool,
}

impl MemoryQueue {
    fn new(applier: &SeatRequestApplier, immediate: bool) -> Self {
        Self {
            held: Mutex::default(),
            tenure: tokio::sync::Mutex::new(applier.open(Fence::new(1))),
            immediate,
        }
    }

    /// Applies every queued request, in order.
    async fn apply_all(&self) {
        let queued: Vec<QueuedRequest> = std::mem::take(&mut self.held.lock().unwrap().queued);
        let batch = queued
            .iter()
            .map(|request| Delivery {
                request: request.clone(),
                redelivered: false,
            })
            .collect();
        let applied = self.tenure.lock().await.apply(batch).await;
        let mut held = self.held.lock().unwrap();
        for (request, applied) in queued.into_iter().zip(applied) {
            let Applied::Done(outcome) = applied else {
                panic!("abandoned");
            };
            if let Some(state) = held.states.get_mut(&request.id) {
                state.outcome = Some(outcome);
            }
        }
    }
}

#[async_trait]
impl SeatQueue for MemoryQueue {
    async fn submit(&self, request: &QueuedRequest, _: Duration) -> Result<Submitted, Failure> {
        if self.immediate {
            let delivery = Delivery {
                request: request.clone(),
                redelivered: false,
            };
            return match self.tenure.lock().await.apply(vec![delivery]).await.pop() {
                Some(Applied::Done(outcome)) => Ok(Submitted::Done(outcome)),
                _ => panic!("abandoned"),
            };
        }
        let mut held = self.held.lock().unwrap();
        held.queued.push(request.clone());
        held.states.insert(
            request.id.clone(),
            RequestState {
                owner: request.request.user(),
                many: request.request.is_many(),
                outcome: None,
            },
        );
        Ok(Submitted::Pending)
    }

    async fn state(&self, id: &RequestId) -> Result<Option<RequestState>, Failure> {
        let held = self.held.lock().unwrap();
        Ok(held.states.get(id).map(|s| RequestState {
            owner: s.owner,
            many: s.many,
            outcome: s.outcome.as_ref().map(|o| match o {
                Ok(held) => Ok(held.clone()),
                Err(e) => Err(concert_domain::ReserveError::SeatUnavailable {
                    seats: match e {
                        concert_domain::ReserveError::SeatUnavailable { seats, .. } => {
                            seats.clone()
                        }
                        other => panic!("unexpected outcome {other:?}"),
                    },
                    yours: None,
                }),
            }),
        }))
    }
}

/// A world whose seat holds go through a [`MemoryQueue`].
fn queued_world(immediate: bool) -> (World, Arc<MemoryQueue>) {
    let store = concert_memory::MemoryStore::new();
    let clock = TestClock::new();
    let ports = store.ports(Arc::new(clock.clone()));
    let applier = SeatRequestApplier::new(ports.clone(), Policy::default());
    let queue = Arc::new(MemoryQueue::new(&applier, immediate));
    let controls = Controls {
        seats: Control::queued("queue", queue.clone(), Duration::from_millis(100)),
        charge: Control::optimistic("optimistic"),
        spend: Control::pessimistic("pessimistic"),
    };
    let mut world = World::new();
    world.store = store;
    world.clock = clock;
    world.services = Services::new(ports, controls, Policy::default());
    (world, queue)
}

fn reserve(user: u64, schedule: u64, seat: u64) -> TestRequest {
    TestRequest::post()
        .uri("/api/v1/reservations")
        .insert_header(bearer(user))
        .set_json(json!({"scheduleId": schedule, "seatNumber": seat}))
}

fn poll(user: u64, location: &str) -> TestRequest {
    TestRequest::get().uri(location).insert_header(bearer(user))
}

/// The 202's request id and Location, checked.
fn accepted(outcome: &(StatusCode, header::HeaderMap, Value)) -> (String, String) {
    let (status, headers, body) = outcome;
    assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
    let id = body["requestId"].as_str().unwrap().to_owned();
    assert_eq!(body, &json!({"requestId": id, "status": "PENDING"}));
    let location = headers.get(header::LOCATION).unwrap().to_str().unwrap();
    assert_eq!(location, format!("/api/v1/reservation-requests/{id}"));
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
    (id, location.to_owned())
}

#[actix_web::test]
async fn a_hold_not_ready_in_time_is_202_and_its_owner_polls_it_to_the_outcome() {
    let (world, queue) = queued_world(false);
    let (_, schedule) = world.schedule();
    let svc = service!(world);

    let (id, location) = accepted(&call!(svc, reserve(5, schedule.get(), 7)));
    let (status, _, body) = call!(svc, poll(5, &location));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"requestId": id, "status": "PENDING"}));
    assert!(world.store.reservations().is_empty(), "nothing applied yet");

    // somebody else's request, an unknown one and a malformed one: 404
    for (user, uri) in [
        (6, location.clone()),
        (
            5,
            format!("/api/v1/reservation-requests/{}", RequestId::generate()),
        ),
        (5, "/api/v1/reservation-requests/not-an-id".to_owned()),
    ] {
        assert_problem(&call!(svc, poll(user, &uri)), 404, "not-found");
    }
    let anonymous = call!(svc, TestRequest::get().uri(&location));
    assert_problem(&anonymous, 401, "unauthorized");

    // a second user's request for the same seat, queued behind it
    let (_, other) = accepted(&call!(svc, reserve(6, schedule.get(), 7)));
    queue.apply_all().await;

    let (status, _, body) = call!(svc, poll(5, &location));
    assert_eq!(status, StatusCode::OK);
    let held = &world.store.reservations()[0];
    assert_eq!(
        body,
        json!({
            "requestId": id, "status": "DONE",
            "reservation": {
                "id": held.id.get(), "scheduleId": schedule.get(), "seatNumber": 7, "userId": 5,
                "price": 500, "status": "HELD", "expiresAt": "2030-03-17T17:51:40Z"
            }
        })
    );
    let (status, _, body) = call!(svc, poll(6, &other));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "DONE");
    assert!(body.get("reservation").is_none(), "{body}");
    let problem = &body["problem"];
    assert_eq!(
        (
            &problem["status"],
            &problem["code"],
            &problem["unavailableSeats"]
        ),
        (&json!(409), &json!("seat-unavailable"), &json!([7]))
    );
    assert_eq!(world.store.reservations().len(), 1);
}

#[actix_web::test]
async fn a_queued_batch_is_done_with_its_reservations_in_seat_order() {
    let (world, queue) = queued_world(false);
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let request = TestRequest::post()
        .uri("/api/v1/reservations/batch")
        .insert_header(bearer(5))
        .set_json(json!({"scheduleId": schedule.get(), "seatNumbers": [9, 2]}));
    let (_, location) = accepted(&call!(svc, request));
    queue.apply_all().await;
    let (status, _, body) = call!(svc, poll(5, &location));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "DONE");
    let seats: Vec<u64> = body["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seatNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(seats, [2, 9]);
    assert!(body.get("reservation").is_none() && body.get("problem").is_none());
}

#[actix_web::test]
async fn an_outcome_ready_in_time_is_the_usual_answer() {
    let (world, _) = queued_world(true);
    let (_, schedule) = world.schedule();
    let svc = service!(world);
    let (status, headers, body) = call!(svc, reserve(5, schedule.get(), 7));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        format!("/api/v1/reservations/{}", body["id"]).as_str()
    );
    let taken = call!(svc, reserve(6, schedule.get(), 7));
    assert_problem(&taken, 409, "seat-unavailable");
    assert_eq!(taken.2["unavailableSeats"], json!([7]));
}
