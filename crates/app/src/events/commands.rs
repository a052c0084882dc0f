//! The operators' commands: `app events tail`, `app events status`,
//! `app events replay`.

use std::fmt;
use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use concert_domain::{Backlog, OutboxFeed, Stream};
use concert_mysql::{Db, MysqlStore};
use concert_redis::streams::{StreamEntry, StreamStatus};
use serde_json::{Value, json};

use crate::{Settings, pool_options};

/// One event as `app events tail` prints it: a JSON object on one line.
pub fn tail_line(entry: &StreamEntry) -> String {
    let payload = serde_json::from_str::<Value>(&entry.payload)
        .unwrap_or_else(|_| Value::String(entry.payload.clone()));
    json!({
        "stream": entry.stream.as_str(),
        "entry": entry.entry,
        "id": entry.id,
        "type": entry.kind,
        "payload": payload,
    })
    .to_string()
}

/// `app events tail`: prints every event appended to `streams` from now on
/// (with `from_start`, every event they hold first), one JSON line each,
/// until `count` events were printed (forever without a count).
pub async fn tail(
    settings: &Settings,
    streams: &[Stream],
    from_start: bool,
    count: Option<u64>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if count == Some(0) {
        return Ok(());
    }
    let redis = super::streams(settings)?;
    let mut printed = 0u64;
    let mut failed = None;
    redis
        .tail(streams, from_start, |entry| {
            let written = writeln!(out, "{}", tail_line(&entry)).and_then(|()| out.flush());
            if let Err(e) = written {
                // the reader went away (a closed pipe): stop quietly
                failed = Some(e);
                return false;
            }
            printed += 1;
            count.is_none_or(|n| printed < n)
        })
        .await
        .map_err(anyhow::Error::new)
        .context("reading the event streams (is Redis up? REDIS_URL)")?;
    if let Some(e) = failed
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing events");
    }
    Ok(())
}

/// What `app events status` prints.
#[derive(Debug, Clone)]
pub struct EventsStatus {
    pub now: DateTime<Utc>,
    pub backlog: Backlog,
    /// Published events still in the outbox.
    pub retained: u64,
    /// The streams, or why they could not be read.
    pub streams: Result<Vec<StreamStatus>, String>,
}

/// `app events status`: the outbox backlog and lag, and each stream's
/// length, consumer groups and dead letters.
pub async fn status(settings: &Settings) -> anyhow::Result<EventsStatus> {
    let db = Db::connect(&settings.database.url, pool_options(settings)).await?;
    let store = MysqlStore::new(db.clone());
    let outbox = async {
        let backlog = store.backlog().await?;
        let retained = store.retained().await?;
        Ok::<_, concert_domain::Failure>((backlog, retained))
    }
    .await;
    db.close();
    let (backlog, retained) = outbox
        .map_err(anyhow::Error::new)
        .context("reading the outbox (is the database up and migrated? DATABASE_URL)")?;
    let redis = super::streams(settings)?;
    let mut streams = Vec::new();
    let mut failure = None;
    for stream in Stream::ALL {
        match redis.status(stream).await {
            Ok(status) => streams.push(status),
            Err(e) => {
                failure = Some(format!("{}", anyhow::Error::new(e)));
                break;
            }
        }
    }
    Ok(EventsStatus {
        now: Utc::now(),
        backlog,
        retained,
        streams: match failure {
            None => Ok(streams),
            Some(e) => Err(e),
        },
    })
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl fmt::Display for EventsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.backlog;
        writeln!(f, "outbox")?;
        writeln!(f, "  unpublished      {}", b.unpublished)?;
        match b.oldest_unpublished {
            Some(oldest) => writeln!(
                f,
                "  lag              {:.3} s (oldest unpublished recorded {})",
                b.lag(self.now).as_secs_f64(),
                time(oldest)
            )?,
            None => writeln!(f, "  lag              0 s")?,
        }
        match b.last_published {
            Some(at) => writeln!(f, "  last published   {}", time(at))?,
            None => writeln!(f, "  last published   never")?,
        }
        writeln!(
            f,
            "  retained         {} (published, kept until pruned)",
            self.retained
        )?;
        writeln!(f, "streams")?;
        match &self.streams {
            Err(e) => writeln!(f, "  unavailable: {e}")?,
            Ok(streams) => {
                for s in streams {
                    writeln!(
                        f,
                        "  {}  length {}  last entry {}  dead letters {}",
                        s.key,
                        s.length,
                        s.last_entry.as_deref().unwrap_or("-"),
                        s.dead_letters
                    )?;
                    for g in &s.groups {
                        writeln!(
                            f,
                            "    group {}  consumers {}  pending {}  lag {}",
                            g.name,
                            g.consumers,
                            g.pending,
                            g.lag.map_or("?".to_owned(), |l| l.to_string())
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `app events replay --since T`: marks the events published since `since`
/// unpublished again, so the relay publishes them once more (same ids;
/// consumers de-duplicate). For streams that lost data or were trimmed
/// before a consumer caught up. Returns how many.
pub async fn replay(settings: &Settings, since: DateTime<Utc>) -> anyhow::Result<u64> {
    let db = Db::connect(&settings.database.url, pool_options(settings)).await?;
    let store = MysqlStore::new(db.clone());
    let replayed = store.republish(Some(since)).await;
    db.close();
    replayed
        .map_err(anyhow::Error::new)
        .context("marking events unpublished (is the database up? DATABASE_URL)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_line_is_one_json_object_with_the_payload_inline() {
        let entry = StreamEntry {
            stream: Stream::Points,
            entry: "1700000000000-0".into(),
            id: "abc".into(),
            kind: "PointsCharged".into(),
            payload: r#"{"userId":7,"amount":100}"#.into(),
            extra: vec![],
        };
        let line = tail_line(&entry);
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["stream"], "points");
        assert_eq!(value["type"], "PointsCharged");
        assert_eq!(value["payload"]["userId"], 7);
    }

    #[test]
    fn status_prints_backlog_lag_and_streams() {
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let status = EventsStatus {
            now,
            backlog: Backlog {
                unpublished: 3,
                oldest_unpublished: Some(now - chrono::Duration::milliseconds(1500)),
                last_published: Some(now),
            },
            retained: 10,
            streams: Err("Redis is unavailable".into()),
        };
        let text = status.to_string();
        assert!(text.contains("unpublished      3"), "{text}");
        assert!(text.contains("lag              1.500 s"), "{text}");
        assert!(text.contains("unavailable: Redis is unavailable"), "{text}");
    }
}
