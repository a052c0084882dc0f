//! A small lab configuration, end to end, so the lab cannot rot: every
//! scenario and strategy runs, every run passes its exactness check, and
//! the table, JSON and charts are written.

use concert_app::strategies::all;
use concert_lab::http::HttpConfig;
use concert_lab::scenarios::{RAW_CONDITIONAL, RAW_FOR_UPDATE};
use concert_lab::{LabConfig, Row};
use concert_testkit::server_url;
use concert_tests::app::{AppConfig, spawn_app_with};
use concert_tests::redis::redis_url;
use serde_json::Value;

fn find<'a>(rows: &'a [Row], scenario: &str, strategy: &str, target: Option<&str>) -> &'a Row {
    rows.iter()
        .find(|r| r.scenario == scenario && r.strategy == strategy && r.target.as_deref() == target)
        .unwrap_or_else(|| panic!("no row for {scenario} {strategy} {target:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_lab_run_is_exact_and_writes_table_json_and_charts() {
    let out = std::env::temp_dir().join(format!("lab-{}", uuid::Uuid::new_v4().simple()));
    let config = LabConfig {
        reps: 2,
        use_tasks: 20,
        use_amount: 500,
        use_initial: 5_000,
        charge_tasks: 20,
        charge_amount: 1_000,
        charge_initial: 100_000,
        seat_users: 30,
        batch_users: 30,
        sustained_ops: 40,
        sustained_workers: 4,
        read_requests: 640,
        out_dir: out.clone(),
        database_url: format!("{}/unused", server_url()),
        redis_url: redis_url(),
        db_pool_size: 8,
        progress: false,
        ..LabConfig::default()
    };
    let results = concert_lab::run(&config)
        .await
        .expect("the lab run is exact and its audit clean");
    let rows = &results.rows;

    // point-use: 2 raw + every strategy but queue (seat holds only);
    // point-charge: 2; seat-race and batch-race: every strategy; sustained:
    // (2 raw + every strategy but queue) x 2 targets; relay: 1; seat-map: 2
    // servers x 2 endpoints
    let strategies = concert_app::REGISTRY.len();
    let point = all().filter(|s| !s.seats_only()).count();
    assert_eq!(
        rows.len(),
        (2 + point) + 2 + 2 * strategies + 2 * (2 + point) + 1 + 4
    );
    assert!(rows.iter().all(|r| r.exact && r.reps == 2));

    // 20 tasks of 500 from 5000: exactly 10 fit, whoever serialises them
    // (the raw baselines and every point strategy that waits its turn)
    let waiting = all()
        .filter(|s| s.waits() && !s.seats_only())
        .map(|s| s.as_str());
    for strategy in [RAW_FOR_UPDATE, RAW_CONDITIONAL].into_iter().chain(waiting) {
        let row = find(rows, "point-use", strategy, None);
        assert_eq!(
            (row.successes, row.final_balance),
            (10, Some(0)),
            "{strategy}"
        );
        assert_eq!(
            row.failures.get("InsufficientPoints"),
            Some(&10),
            "{strategy}"
        );
    }
    let optimistic = find(rows, "point-use", "optimistic", None);
    assert!(optimistic.successes >= 1);
    assert_eq!(
        optimistic.final_balance,
        Some(5_000 - 500 * optimistic.successes)
    );
    // pub/sub: at most two acquisition attempts per task
    assert!(find(rows, "point-use", "redis-pubsub", None).attempts <= 40);

    let charge = find(rows, "point-charge", "pessimistic", None);
    assert_eq!(
        (charge.successes, charge.final_balance),
        (20, Some(120_000))
    );

    for strategy in concert_app::REGISTRY.iter().map(|s| s.name) {
        let race = find(rows, "seat-race", strategy, None);
        assert_eq!(race.successes, 1, "{strategy}");
        assert_eq!(race.failures.values().sum::<u64>(), 29, "{strategy}");
        assert_eq!(race.held_twice, Some(0), "{strategy}");
        // batch-race: whole groups only, no seat twice, everyone answered
        let batch = find(rows, "batch-race", strategy, None);
        assert!(batch.exact, "{strategy}: {:?}", batch.violations);
        assert_eq!(batch.held_twice, Some(0), "{strategy}");
        assert!(batch.successes >= 1 && batch.successes <= 12, "{strategy}");
        assert_eq!(
            batch.successes + batch.failures.values().sum::<u64>(),
            30,
            "{strategy}"
        );
    }
    let hot = find(rows, "sustained", "atomic", Some("hot-row"));
    assert_eq!(
        (hot.tasks, hot.successes, hot.final_balance),
        (40, 40, Some(0))
    );

    // the relay published every committed use once, nothing rolled back,
    // and its lag percentiles are there
    let relay = find(rows, "relay", "pessimistic+relay", Some("publish-lag"));
    assert_eq!((relay.tasks, relay.successes), (40, 36));
    assert_eq!(relay.attempts, 36, "one event per committed use");
    assert!(relay.p99_ms.is_some());
    // every seat-map and health request answered 200
    for server in ["cache-on", "cache-off"] {
        for target in ["health-live", "seats"] {
            let row = find(rows, "seat-map", server, Some(target));
            assert_eq!((row.tasks, row.successes), (640, 640), "{server} {target}");
        }
    }

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let array = json["rows"].as_array().expect("a JSON array of rows");
    assert_eq!(array.len(), rows.len());
    // the run's metadata: when, what, where, with which parameters
    let run = &json["run"];
    assert!(
        run["date"].as_str().is_some_and(|d| d.ends_with('Z')),
        "{run}"
    );
    assert!(run.get("commit").is_some(), "{run}");
    assert!(run["machine"]["cores"].as_u64().unwrap() >= 1, "{run}");
    assert!(run["servers"]["mariadb"].is_string(), "{run}");
    assert_eq!(run["parameters"]["reps"], 2, "{run}");
    assert_eq!(run["parameters"]["batchRace"]["users"], 30, "{run}");
    // the run's Redis keys are gone
    let prefix = run["redisPrefix"].as_str().expect("the run's prefix");
    let locks = concert_redis::RedisLocks::connect(
        &redis_url(),
        prefix,
        concert_redis::RedisLockSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(locks.purge().await.unwrap(), 0, "keys left under {prefix}");
    for key in [
        "scenario",
        "strategy",
        "layer",
        "tasks",
        "successes",
        "finalBalance",
        "attempts",
        "msMedian",
        "msMin",
        "msMax",
        "opsPerSec",
    ] {
        assert!(array.iter().all(|row| row.get(key).is_some()), "{key}");
    }
    for chart in [
        "point-use.svg",
        "seat-race.svg",
        "batch-race.svg",
        "sustained-hot-row.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("redis-pubsub"),
            "{chart}"
        );
        assert!(svg.contains("successes / tasks"), "{chart}");
        assert!(svg.contains("2 repetitions"), "{chart}");
    }
    let table = concert_lab::report::markdown(rows);
    assert_eq!(table.lines().count(), 2 + rows.len());
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lab_http_drives_a_running_server_exactly() {
    let app = spawn_app_with(AppConfig::seats("redis-pubsub")).await;
    let config = HttpConfig {
        base_url: app.address.clone(),
        database_url: app.db.url.clone(),
        jwt_secret: app.jwt_secret.clone(),
        jwt: concert_http::AuthOptions::default(),
        race_users: 60,
        storm_seats: 12,
        steady_ops: 20,
        steady_workers: 4,
        label: "redis-pubsub".into(),
    };
    let rows = concert_lab::http::run(&config)
        .await
        .expect("exact HTTP run");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.layer == "http"));

    let race = &rows[0];
    assert_eq!((race.scenario.as_str(), race.successes), ("seat-race", 1));
    assert_eq!(race.statuses.get("201"), Some(&1));
    assert_eq!(race.failures.values().sum::<u64>(), 59);
    assert!(race.p50_ms.is_some() && race.p99_ms >= race.p50_ms);

    let storm = &rows[1];
    assert_eq!((storm.successes, storm.final_balance), (12, Some(0)));

    let steady = &rows[2];
    assert_eq!((steady.tasks, steady.successes), (40, 40));
}

/// The waiting-room scenarios, small: two app instances on a redis-server
/// of the lab's own, every exactness check passing, one Redis round trip
/// per room request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_waiting_room_and_on_sale_runs_are_exact() {
    let out = std::env::temp_dir().join(format!("lab-{}", uuid::Uuid::new_v4().simple()));
    let config = LabConfig {
        scenarios: concert_lab::Scenario::ROOM.to_vec(),
        out_dir: out.clone(),
        database_url: format!("{}/unused", server_url()),
        redis_url: redis_url(),
        progress: false,
        room: concert_lab::config::RoomLabConfig {
            users: 300,
            on_sale_users: 200,
            connections: 16,
            live_requests: 300,
            limit: 10,
            max_poll: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
        ..LabConfig::default()
    };
    let results = concert_lab::run(&config)
        .await
        .expect("the room lab runs are exact");
    let rows = &results.rows;
    let labels: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.scenario.as_str(), r.strategy.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("waiting-room", "health-live"),
            ("waiting-room", "enter"),
            ("waiting-room", "poll"),
            ("on-sale", "room-on")
        ]
    );
    assert!(rows.iter().all(|r| r.exact), "{rows:#?}");
    let figure = |strategy: &str, name: &str| -> f64 {
        let row = rows.iter().find(|r| r.strategy == strategy).unwrap();
        *row.figures
            .get(name)
            .unwrap_or_else(|| panic!("{strategy} {name}: {:?}", row.figures))
    };
    for strategy in ["enter", "poll"] {
        let trips = figure(strategy, "redis_round_trips_per_request");
        assert!((trips - 1.0).abs() < 0.02, "{strategy}: {trips}");
        assert!(figure(strategy, "vs_health_live") > 0.0);
    }
    let enter = find(rows, "waiting-room", "enter", None);
    assert_eq!((enter.tasks, enter.successes), (300, 300));
    assert!(figure("poll", "max_admitted_sampled") <= 10.0);
    assert_eq!(figure("poll", "leaves"), 300.0);
    let on_sale = find(rows, "on-sale", "room-on", None);
    assert_eq!((on_sale.tasks, on_sale.successes), (200, 150));
    assert_eq!(figure("room-on", "double_sales"), 0.0);
    assert_eq!(figure("room-on", "users_answered"), 200.0);
    assert_eq!(figure("room-on", "users_paid"), 150.0);
    assert!(figure("room-on", "max_admitted_sampled") <= 10.0);
    let json = std::fs::read_to_string(out.join("results.json")).unwrap();
    assert!(json.contains("redis_round_trips_per_request"));
    let _ = std::fs::remove_dir_all(out);
}
