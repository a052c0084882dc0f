//! A small lab configuration, end to end, so the lab cannot rot: every
//! scenario and strategy runs, every run passes its exactness check, and
//! the table, JSON and charts are written.

use concert_lab::http::HttpConfig;
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
        sustained_ops: 40,
        sustained_workers: 4,
        out_dir: out.clone(),
        database_url: format!("{}/unused", server_url()),
        redis_url: redis_url(),
        db_pool_size: 8,
        progress: false,
        ..LabConfig::default()
    };
    let rows = concert_lab::run(&config)
        .await
        .expect("the lab run is exact");

    // point-use: 2 raw + 8 strategies; point-charge: 2; seat-race: 9
    // (queue controls seat holds only); sustained: (2 raw + 8) x 2 targets
    assert_eq!(rows.len(), 10 + 2 + 9 + 20);
    assert!(rows.iter().all(|r| r.exact && r.reps == 2));

    // 20 tasks of 500 from 5000: exactly 10 fit, whoever serialises them
    for strategy in [
        "raw-for-update",
        "raw-conditional-update",
        "pessimistic",
        "atomic",
        "optimistic-retry",
        "local",
        "redis-spin",
        "redis-pubsub",
    ] {
        let row = find(&rows, "point-use", strategy, None);
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
    let optimistic = find(&rows, "point-use", "optimistic", None);
    assert!(optimistic.successes >= 1);
    assert_eq!(
        optimistic.final_balance,
        Some(5_000 - 500 * optimistic.successes)
    );
    // pub/sub: at most two acquisition attempts per task
    assert!(find(&rows, "point-use", "redis-pubsub", None).attempts <= 40);

    let charge = find(&rows, "point-charge", "pessimistic", None);
    assert_eq!(
        (charge.successes, charge.final_balance),
        (20, Some(120_000))
    );

    for strategy in concert_app::REGISTRY.iter().map(|s| s.name) {
        let race = find(&rows, "seat-race", strategy, None);
        assert_eq!(race.successes, 1, "{strategy}");
        assert_eq!(race.failures.values().sum::<u64>(), 29, "{strategy}");
    }
    let hot = find(&rows, "sustained", "atomic", Some("hot-row"));
    assert_eq!(
        (hot.tasks, hot.successes, hot.final_balance),
        (40, 40, Some(0))
    );

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let array = json.as_array().expect("a JSON array");
    assert_eq!(array.len(), rows.len());
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
    for chart in ["point-use.svg", "seat-race.svg", "sustained-hot-row.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("redis-pubsub"),
            "{chart}"
        );
    }
    let table = concert_lab::report::markdown(&rows);
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
