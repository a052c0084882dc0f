//! The one integration test binary (one link, shared helpers). Every test
//! runs on its own fresh MariaDB database and its own Redis key prefix.

// the house rules: crate dependencies, import circles, file sizes
mod architecture;

// the use cases over the in-memory store (no server)
mod services;

// the storage ports' contract, on the in-memory store and on MariaDB
mod storage;

// foundation: MySQL adapter through the domain services
mod payments;
mod points;
mod seats;

// Redis and local lock adapters
mod lock_contract;
mod lock_seats;

// waiting room adapters
mod room_contract;
// the queue strategy: partition streams, fenced consumers, request-reply
mod queue;

// the HTTP adapter over the in-memory store (no server)
mod http;

// HTTP API end to end
mod api;
mod waiting_room;

// cancel, refund, several seats, limits, administration, API edges,
// metrics, and the audit of the stored data's invariants
mod admin;
mod audit;
mod edges;
mod holds;
mod metrics;
mod redis_keys;
mod refunds;

// events: relay, consumers, the event-fed seat map
mod events;
mod events_consumers;
mod events_relay;
mod seat_map;

// the concurrency lab, small
mod lab;

// the scripts behind make run / make lab
mod scripts;
