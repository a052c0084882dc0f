//! [`EventPublisher`] on [`RedisStreams`]: one script call per batch, so a
//! batch is appended whole or not at all, and the fencing check and the
//! appends are one atomic step.

use std::sync::LazyLock;

use anyhow::anyhow;
use async_trait::async_trait;
use concert_domain::{EventPublisher, Failure, OutboxEvent, Published, Stream};
use deadpool_redis::redis::Script;

use super::RedisStreams;
use crate::scripts::Call;

/// `KEYS[1]`: the relay's state hash; `KEYS[2..]`: the streams.
/// `ARGV[1]`: the relay's fencing token; `ARGV[2]`: `1` when the outbox
/// says events were published before; `ARGV[3]`: `MAXLEN ~` (0: no
/// trimming); then four values per event: the index of its stream key
/// (1-based, among the streams), its id, its type, its payload.
///
/// Replies `{1, n}` (appended n), `{0, 0}` (the state is gone although
/// events were published before: nothing appended), `{-1, 0}` (a larger
/// token already published: nothing appended).
const PUBLISH_LUA: &str = r"
local seen = redis.call('HGET', KEYS[1], 'fence')
if not seen then
  if ARGV[2] == '1' then return {0, 0} end
elseif tonumber(seen) > tonumber(ARGV[1]) then
  return {-1, 0}
end
if seen ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'fence', ARGV[1])
end
local n = 0
for i = 4, #ARGV, 4 do
  local key = KEYS[1 + tonumber(ARGV[i])]
  if ARGV[3] == '0' then
    redis.call('XADD', key, '*', 'id', ARGV[i + 1], 'type', ARGV[i + 2], 'payload', ARGV[i + 3])
  else
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*',
      'id', ARGV[i + 1], 'type', ARGV[i + 2], 'payload', ARGV[i + 3])
  end
  n = n + 1
end
return {1, n}
";

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_LUA));

impl RedisStreams {
    /// The script call of one batch.
    fn publish_call(&self, events: &[OutboxEvent], fence: u64, published_before: bool) -> Call {
        let names = &self.inner.names;
        let mut streams: Vec<Stream> = Vec::with_capacity(3);
        let mut args = Vec::with_capacity(3 + events.len() * 4);
        args.push(fence.to_string());
        args.push(if published_before { "1" } else { "0" }.to_owned());
        args.push(self.inner.settings.max_len.to_string());
        for event in events {
            let index = match streams.iter().position(|s| *s == event.stream) {
                Some(i) => i + 1,
                None => {
                    streams.push(event.stream);
                    streams.len()
                }
            };
            args.push(index.to_string());
            args.push(event.id.clone());
            args.push(event.kind.as_str().to_owned());
            args.push(event.payload.clone());
        }
        let mut keys = vec![names.relay()];
        keys.extend(streams.iter().map(|s| names.stream(*s)));
        Call { keys, args }
    }
}

#[async_trait]
impl EventPublisher for RedisStreams {
    /// A call that fails on a closed connection is sent once more on a new
    /// one, so a batch may be appended twice (duplicates, never a loss).
    async fn publish(
        &self,
        events: &[OutboxEvent],
        fence: u64,
        published_before: bool,
    ) -> Result<Published, Failure> {
        if events.is_empty() {
            return Ok(Published::Appended);
        }
        let call = self.publish_call(events, fence, published_before);
        let (status, _count): (i64, i64) = self.inner.conn.invoke(&PUBLISH, &call).await?;
        match status {
            1 => Ok(Published::Appended),
            0 => Ok(Published::Forgotten),
            -1 => Err(Failure::LockLost),
            other => Err(Failure::unknown(anyhow!(
                "unexpected reply {other} from the publish script"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use concert_domain::EventType;

    use super::*;
    use crate::streams::StreamSettings;

    fn event(position: u64, stream: Stream, kind: EventType) -> OutboxEvent {
        OutboxEvent {
            position,
            id: format!("id-{position}"),
            stream,
            kind,
            aggregate: "user:1".into(),
            payload: format!("{{\"n\":{position}}}"),
            created_at: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn a_batch_names_each_stream_once_and_keeps_the_order() {
        let streams =
            RedisStreams::new("redis://127.0.0.1:1", "p", StreamSettings::default()).unwrap();
        let call = streams.publish_call(
            &[
                event(1, Stream::Points, EventType::PointsCharged),
                event(2, Stream::Reservations, EventType::SeatHeld),
                event(3, Stream::Points, EventType::PointsUsed),
            ],
            42,
            true,
        );
        assert_eq!(
            call.keys,
            ["p:events:relay", "p:events:points", "p:events:reservations"]
        );
        assert_eq!(
            call.args,
            [
                "42",
                "1",
                "100000",
                "1",
                "id-1",
                "PointsCharged",
                "{\"n\":1}",
                "2",
                "id-2",
                "SeatHeld",
                "{\"n\":2}",
                "1",
                "id-3",
                "PointsUsed",
                "{\"n\":3}",
            ]
        );
    }
}
