//! The one integration test binary (one link, shared helpers). Every test
//! runs on its own fresh MariaDB database and its own Redis key prefix.

// foundation: MySQL adapter through the domain services
mod payments;
mod points;
mod seats;

// Redis and local lock adapters
mod lock_contract;
mod lock_seats;

// the queue strategy: partition streams, fenced consumers, request-reply
mod queue;

// HTTP API end to end
mod api;

// the concurrency lab, small
mod lab;
