//! Cheap readings of the stored data for the service's gauges.

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;

use crate::pool::Db;
use crate::prepared::reuse;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many events the outbox holds that are not published yet (one range
/// of the `(published_at, id)` index).
pub async fn outbox_backlog(db: &Db) -> anyhow::Result<u64> {
    let mut session = db.session().await?;
    let (c, guard) = session.split()?;
    let row: Count = guard
        .run(
            "counting unpublished events",
            reuse(diesel::sql_query(
                "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
            ))
            .get_result(c),
        )
        .await?;
    Ok(u64::try_from(row.n).unwrap_or(0))
}
