//! [`RedisWaitingRoom`]: the waiting room port on Redis, correct across any
//! number of instances. Every step is one Lua script (one round trip,
//! atomic): admission is decided inside the step that frees a place, so no
//! scheduler is needed, and expiry is evaluated against the `now` the step
//! passes (see [`scripts`] and `docs/waiting-room.md`).

mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concert_domain::{ConcertId, Failure, RoomRules, RoomStatus, RoomView, UserId, WaitingRoom};
use deadpool_redis::redis;

use crate::connection::Connection;
use crate::keys::Prefix;
use crate::scripts::Call;
use crate::settings::RedisLockSettings;

/// How long a room's keys outlive its last step beyond the longest of the
/// admission and idle times (by then every entry has lapsed; only the
/// sold-out mark, which entries repair, is lost).
pub const ROOM_KEEP: Duration = Duration::from_secs(24 * 3600);

/// The Redis names of one concert's room, all under the hash tag
/// `{prefix:room:<concert>}` (one Redis Cluster slot, so one script may
/// touch them all):
///
/// | name | type | holds |
/// |---|---|---|
/// | `…:line` | sorted set | waiting users, scored by ticket (order of first entry) |
/// | `…:seen` | sorted set | waiting users, scored by when last seen (ms) |
/// | `…:admitted` | sorted set | admitted users, scored by the end of their admission (ms) |
/// | `…:meta` | hash | the room's time, the ticket counter, the sold-out mark, the admission-rate buckets |
///
/// Every key expires [`ROOM_KEEP`] plus the longest rule time after the
/// room's last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomKeys {
    pub line: String,
    pub seen: String,
    pub admitted: String,
    pub meta: String,
}

impl RoomKeys {
    pub fn new(prefix: &Prefix, concert: ConcertId) -> Self {
        let tag = prefix.tag(&format!("room:{concert}"));
        Self {
            line: format!("{tag}:line"),
            seen: format!("{tag}:seen"),
            admitted: format!("{tag}:admitted"),
            meta: format!("{tag}:meta"),
        }
    }
}

/// The waiting rooms on one Redis: one multiplexed connection per
/// instance, the rules it was built with, and a count of its round trips.
/// Cheap to clone (shared state).
#[derive(Clone)]
pub struct RedisWaitingRoom {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    prefix: Prefix,
    rules: RoomRules,
    round_trips: AtomicU64,
}

impl std::fmt::Debug for RedisWaitingRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWaitingRoom")
            .field("prefix", &self.inner.prefix)
            .field("rules", &self.inner.rules)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Enter,
    Poll,
    Leave,
    Release,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Enter => "e",
            Op::Poll => "p",
            Op::Leave => "l",
            Op::Release => "r",
        }
    }
}

fn millis(d: Duration) -> u64 {
    crate::scripts::millis(d)
}

impl RedisWaitingRoom {
    /// Configures the room; nothing is opened until the first step (a
    /// Redis that is down answers [`Failure::Unavailable`] then). Fails only
    /// for an invalid URL or a prefix containing `{` or `}`.
    pub fn new(
        url: &str,
        prefix: &str,
        rules: RoomRules,
        settings: RedisLockSettings,
    ) -> Result<Self, Failure> {
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Connection::new(url, &settings)?,
                prefix: Prefix::new(prefix)?,
                rules,
                round_trips: AtomicU64::new(0),
            }),
        })
    }

    pub fn rules(&self) -> RoomRules {
        self.inner.rules
    }

    /// Round trips to Redis made by this adapter since it was built (each
    /// port call is exactly one; a call retried on a fresh connection after
    /// a broken one counts once).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// One `PING` (for readiness checks).
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.inner.conn.ping().await.map_err(anyhow::Error::from)
    }

    fn keys(&self, concert: ConcertId) -> RoomKeys {
        RoomKeys::new(&self.inner.prefix, concert)
    }

    fn keep(&self) -> Duration {
        let rules = self.inner.rules;
        ROOM_KEEP + rules.admission.max(rules.idle)
    }

    fn step_call(&self, op: Op, concert: ConcertId, user: UserId, now: DateTime<Utc>) -> Call {
        let keys = self.keys(concert);
        let rules = self.inner.rules;
        Call {
            keys: vec![keys.line, keys.seen, keys.admitted, keys.meta],
            args: vec![
                op.code().to_owned(),
                user.to_string(),
                now.timestamp_millis().max(0).to_string(),
                rules.active_limit.to_string(),
                millis(rules.admission).to_string(),
                millis(rules.idle).to_string(),
                millis(self.keep()).to_string(),
                scripts::RATE_BUCKET_MS.to_string(),
                scripts::IDLE_BATCH.to_string(),
            ],
        }
    }

    async fn step(
        &self,
        op: Op,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomView>, Failure> {
        let call = self.step_call(op, concert, user, now);
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply: (i64, i64, i64) = self.inner.conn.invoke(&scripts::STEP, &call).await?;
        view(reply)
    }
}

/// The view a step's reply describes.
fn view((kind, value, rate): (i64, i64, i64)) -> Result<Option<RoomView>, Failure> {
    let status = match kind {
        0 => return Ok(None),
        1 => RoomStatus::Waiting {
            position: u64::try_from(value)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Failure::unknown(anyhow!("room position {value}")))?,
        },
        2 => RoomStatus::Admitted {
            until: DateTime::from_timestamp_millis(value)
                .ok_or_else(|| Failure::unknown(anyhow!("admission end {value}")))?,
        },
        3 => RoomStatus::SoldOut,
        other => {
            return Err(Failure::unknown(anyhow!("unexpected room reply {other}")));
        }
    };
    Ok(Some(RoomView {
        status,
        admission_rate: rate.max(0) as f64 / 1000.0,
    }))
}

#[async_trait]
impl WaitingRoom for RedisWaitingRoom {
    async fn enter(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<RoomView, Failure> {
        self.step(Op::Enter, concert, user, now)
            .await?
            .ok_or_else(|| Failure::unknown(anyhow!("an entered user has no entry")))
    }

    async fn poll(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomView>, Failure> {
        self.step(Op::Poll, concert, user, now).await
    }

    async fn leave(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        self.step(Op::Leave, concert, user, now).await.map(drop)
    }

    async fn is_admitted(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<bool, Failure> {
        let key = self.keys(concert).admitted;
        let member = user.to_string();
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let end: Option<f64> = self
            .inner
            .conn
            .run(|mut conn| {
                let (key, member) = (&key, &member);
                async move {
                    redis::cmd("ZSCORE")
                        .arg(key)
                        .arg(member)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(end.is_some_and(|end| end > now.timestamp_millis() as f64))
    }

    async fn release(
        &self,
        concert: ConcertId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        self.step(Op::Release, concert, user, now).await.map(drop)
    }

    async fn set_sold_out(&self, concert: ConcertId, sold_out: bool) -> Result<(), Failure> {
        let call = Call {
            keys: vec![self.keys(concert).meta],
            args: vec![
                if sold_out { "1" } else { "0" }.to_owned(),
                millis(self.keep()).to_string(),
            ],
        };
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let _: i64 = self.inner.conn.invoke(&scripts::SOLD_OUT, &call).await?;
        Ok(())
    }

    async fn sizes(&self, concert: ConcertId, now: DateTime<Utc>) -> Result<(u64, u64), Failure> {
        let keys = self.keys(concert);
        let call = Call {
            keys: vec![keys.seen, keys.admitted],
            args: vec![
                now.timestamp_millis().max(0).to_string(),
                millis(self.inner.rules.idle).to_string(),
            ],
        };
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        self.inner.conn.invoke(&scripts::SIZES, &call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_for_every_key_of_a_room() {
        let keys = RoomKeys::new(&Prefix::new("t1").unwrap(), ConcertId::from(7));
        assert_eq!(keys.line, "{t1:room:7}:line");
        assert_eq!(keys.seen, "{t1:room:7}:seen");
        assert_eq!(keys.admitted, "{t1:room:7}:admitted");
        assert_eq!(keys.meta, "{t1:room:7}:meta");
        let bare = RoomKeys::new(&Prefix::new("").unwrap(), ConcertId::from(7));
        assert_eq!(bare.line, "{room:7}:line");
    }

    #[test]
    fn every_call_passes_what_its_script_reads() {
        let room = RedisWaitingRoom::new(
            "redis://127.0.0.1:1",
            "t",
            RoomRules::default(),
            RedisLockSettings::default(),
        )
        .unwrap();
        let now = DateTime::from_timestamp_millis(1_900_000_000_123).unwrap();
        let call = room.step_call(Op::Enter, ConcertId::from(3), UserId::from(42), now);
        assert_eq!(call.keys.len(), 4);
        assert!(call.keys.iter().all(|k| k.starts_with("{t:room:3}:")));
        assert_eq!(
            call.args,
            [
                "e",
                "42",
                "1900000000123",
                "100",
                "600000",
                "60000",
                "87000000",
                "10000",
                "256"
            ]
            .map(String::from)
        );
        for (name, body) in scripts::bodies() {
            let highest = |what: &str| {
                body.match_indices(&format!("{what}["))
                    .map(|(at, m)| {
                        let rest = &body[at + m.len()..];
                        rest[..rest.find(']').unwrap()].parse::<usize>().unwrap()
                    })
                    .max()
                    .unwrap_or(0)
            };
            let (keys, args) = match name {
                "step" => (4, 9),
                "sold-out" => (1, 2),
                _ => (2, 2),
            };
            assert_eq!((highest("KEYS"), highest("ARGV")), (keys, args), "{name}");
            assert!(!body.contains("'{"), "{name}: no literal key names");
        }
    }

    #[test]
    fn replies_become_views() {
        assert_eq!(view((0, 0, 0)).unwrap(), None);
        assert_eq!(
            view((1, 3, 2500)).unwrap(),
            Some(RoomView {
                status: RoomStatus::Waiting { position: 3 },
                admission_rate: 2.5
            })
        );
        assert_eq!(
            view((2, 1_900_000_000_123, 0)).unwrap().unwrap().status,
            RoomStatus::Admitted {
                until: DateTime::from_timestamp_millis(1_900_000_000_123).unwrap()
            }
        );
        assert_eq!(
            view((3, 0, 0)).unwrap().unwrap().status,
            RoomStatus::SoldOut
        );
        assert!(view((1, 0, 0)).is_err());
        assert!(view((9, 0, 0)).is_err());
    }
}
