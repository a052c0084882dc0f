//! The embedded migrations: up, down (every table gone), up again, on a
//! fresh database.

use concert_mysql::admin;
use concert_tests::db::TestDb;

const TABLES: [&str; 8] = [
    "concerts",
    "idempotency_keys",
    "payments",
    "point_history",
    "reservations",
    "schedules",
    "seats",
    "wallets",
];

async fn schema_tables(db: &TestDb) -> Vec<String> {
    admin::tables(&db.db)
        .await
        .expect("tables listed")
        .into_iter()
        .filter(|t| t != "__diesel_schema_migrations")
        .collect()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    // `new` runs every migration on a fresh database.
    let db = TestDb::new().await;
    assert_eq!(schema_tables(&db).await, TABLES);

    // Running them again is a no-op.
    concert_mysql::run_migrations(&db.url)
        .await
        .expect("idempotent");
    assert_eq!(schema_tables(&db).await, TABLES);

    concert_mysql::revert_all_migrations(&db.url)
        .await
        .expect("down.sql of every migration runs");
    assert_eq!(schema_tables(&db).await, Vec::<String>::new());

    concert_mysql::run_migrations(&db.url)
        .await
        .expect("migrations run again after a full revert");
    assert_eq!(schema_tables(&db).await, TABLES);

    // The schema works after the round trip.
    let schedule = db.schedule(500).await;
    let (concerts, schedules) = admin::catalogue_size(&db.db).await.unwrap();
    assert_eq!((concerts, schedules), (1, 1));
    assert!(
        admin::seat(
            &db.db,
            schedule,
            concert_domain::SeatNumber::new(50).unwrap()
        )
        .await
        .unwrap()
        .is_some()
    );
}

#[tokio::test]
async fn database_is_created_if_missing_and_dropped() {
    let db = TestDb::new().await;
    let url = format!("{}_extra", db.url);
    concert_mysql::create_database_if_missing(&url)
        .await
        .unwrap();
    concert_mysql::create_database_if_missing(&url)
        .await
        .unwrap();
    concert_mysql::drop_database(&url).await.unwrap();
    concert_mysql::drop_database(&url).await.unwrap();
}
