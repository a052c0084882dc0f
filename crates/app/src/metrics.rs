//! `GET /metrics`: the service's metrics in the Prometheus text format,
//! recorded with the `metrics` crate into this instance's own
//! `metrics-exporter-prometheus` recorder (not a process-global one, so
//! several instances in one process, as in the tests, never mix).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `http_requests_total` | counter | `method`, `route`, `status` | requests answered; `route` is the template (`/api/v1/reservations/{reservationId}`), never a raw path; `unmatched` when no route matched |
//! | `http_request_duration_seconds` | histogram | `method`, `route`, `status` | time to answer |
//! | `strategy_attempts_total` | counter | `operation`, `strategy` | units of work run (a retry is another attempt) |
//! | `strategy_conflicts_total` | counter | `operation`, `strategy` | attempts that ended in an optimistic conflict (or deadlock) |
//! | `lock_wait_seconds` | histogram | `operation`, `strategy` | time to acquire an operation's locks (lock strategies) |
//! | `lock_timeouts_total` | counter | `operation`, `strategy` | lock waits that ran out of budget (`lock-timeout`) |
//! | `db_pool_connections_in_use` | gauge | | MySQL connections checked out now |
//! | `db_pool_connections_idle` | gauge | | open MySQL connections ready to be checked out |
//! | `db_pool_waiting_requests` | gauge | | requests waiting for a MySQL connection |
//! | `db_pool_max_connections` | gauge | | the pool's size limit |
//! | `outbox_backlog_events` | gauge | | events recorded but not yet published (sampled every few seconds) |
//!
//! `operation` is one of `reserve`, `charge`, `use`, `pay`, `cancel`,
//! `refund`; `strategy` a configuration name (`redis-pubsub`, ...).

use std::sync::Arc;
use std::time::Duration;

use concert_domain::services::WaitingRoomService;
use concert_domain::{Observer, Operation};
use concert_http::{MetricsRender, Observed, RequestObserver};
use concert_mysql::Db;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Upper bounds (seconds) of the latency histograms' buckets.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often the sampled gauges (outbox backlog) are refreshed, and the
/// recorder's upkeep runs.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One instance's metrics: its recorder and the handle that renders it.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh recorder with every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            // The bucket list is a non-empty constant: building cannot fail.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let metrics = Self { recorder, handle };
        metrics.describe();
        metrics
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    fn describe(&self) {
        self.record(|| {
            metrics::describe_counter!("http_requests_total", "HTTP requests answered");
            metrics::describe_histogram!(
                "http_request_duration_seconds",
                metrics::Unit::Seconds,
                "Time to answer an HTTP request"
            );
            metrics::describe_counter!(
                "strategy_attempts_total",
                "Units of work run by a contended operation's strategy (retries included)"
            );
            metrics::describe_counter!(
                "strategy_conflicts_total",
                "Attempts that ended in an optimistic conflict or a deadlock"
            );
            metrics::describe_histogram!(
                "lock_wait_seconds",
                metrics::Unit::Seconds,
                "Time to acquire an operation's locks"
            );
            metrics::describe_counter!(
                "lock_timeouts_total",
                "Lock waits that ran out of budget (answered lock-timeout)"
            );
            metrics::describe_gauge!(
                "db_pool_connections_in_use",
                "MySQL connections checked out now"
            );
            metrics::describe_gauge!(
                "db_pool_connections_idle",
                "Open MySQL connections ready to be checked out"
            );
            metrics::describe_gauge!(
                "db_pool_waiting_requests",
                "Requests waiting for a MySQL connection"
            );
            metrics::describe_gauge!("db_pool_max_connections", "The MySQL pool's size limit");
            metrics::describe_gauge!(
                "outbox_backlog_events",
                "Events recorded in the outbox and not yet published"
            );
        });
    }

    /// What `GET /metrics` answers: the pool gauges as of now, then every
    /// metric in the Prometheus text format.
    pub fn render(self: &Arc<Self>, db: Db, room: Option<WaitingRoomService>) -> MetricsRender {
        let metrics = self.clone();
        Arc::new(move || {
            let (metrics, db, room) = (metrics.clone(), db.clone(), room.clone());
            Box::pin(async move {
                let pool = db.status();
                metrics.record(|| {
                    let in_use = pool.size.saturating_sub(pool.available);
                    metrics::gauge!("db_pool_connections_in_use").set(in_use as f64);
                    metrics::gauge!("db_pool_connections_idle").set(pool.available as f64);
                    metrics::gauge!("db_pool_waiting_requests").set(pool.waiting as f64);
                    metrics::gauge!("db_pool_max_connections").set(pool.max_size as f64);
                });
                if let Some(room) = &room {
                    // the rooms this instance has served, one round trip each
                    for concert in room.concerts() {
                        match room.sizes(concert).await {
                            Ok((waiting, admitted)) => metrics.record(|| {
                                let label = [("concert", concert.to_string())];
                                metrics::gauge!("waiting_room_waiting_users", &label)
                                    .set(waiting as f64);
                                metrics::gauge!("waiting_room_admitted_users", &label)
                                    .set(admitted as f64);
                            }),
                            Err(e) => tracing::debug!(error = %e, %concert, "room not sampled"),
                        }
                    }
                }
                metrics.handle.render()
            })
        })
    }

    /// [`SAMPLE_EVERY`], for as long as the task runs.
    pub fn spawn_sampler(self: &Arc<Self>, db: Db) -> tokio::task::JoinHandle<()> {
        let metrics = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                metrics.handle.run_upkeep();
                match concert_mysql::gauges::outbox_backlog(&db).await {
                    Ok(n) => metrics.record(|| {
                        metrics::gauge!("outbox_backlog_events").set(n as f64);
                    }),
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "outbox backlog not sampled")
                    }
                }
            }
        })
    }
}

/// The `method` label: the standard methods by name, anything else
/// `OTHER` (a client cannot grow the label set).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

impl RequestObserver for Metrics {
    fn observe(&self, request: &Observed<'_>) {
        let method = method_label(request.method.as_str());
        let route = request.route.to_owned();
        let status = request.status.as_u16().to_string();
        let seconds = request.latency.as_secs_f64();
        self.record(|| {
            let labels = [
                ("method", method.to_owned()),
                ("route", route),
                ("status", status),
            ];
            metrics::counter!("http_requests_total", &labels).increment(1);
            metrics::histogram!("http_request_duration_seconds", &labels).record(seconds);
        });
    }
}

impl Observer for Metrics {
    fn attempt(&self, op: Operation, strategy: &str) {
        let labels = op_labels(op, strategy);
        self.record(|| metrics::counter!("strategy_attempts_total", &labels).increment(1));
    }

    fn conflict(&self, op: Operation, strategy: &str) {
        let labels = op_labels(op, strategy);
        self.record(|| metrics::counter!("strategy_conflicts_total", &labels).increment(1));
    }

    fn lock_acquired(&self, op: Operation, strategy: &str, waited: Duration) {
        let labels = op_labels(op, strategy);
        self.record(|| {
            metrics::histogram!("lock_wait_seconds", &labels).record(waited.as_secs_f64());
        });
    }

    fn lock_timeout(&self, op: Operation, strategy: &str) {
        let labels = op_labels(op, strategy);
        self.record(|| metrics::counter!("lock_timeouts_total", &labels).increment(1));
    }
}

fn op_labels(op: Operation, strategy: &str) -> [(&'static str, String); 2] {
    [
        ("operation", op.as_str().to_owned()),
        ("strategy", strategy.to_owned()),
    ]
}
