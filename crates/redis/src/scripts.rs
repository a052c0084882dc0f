//! What every Lua script call of this crate shares: [`Call`] (the `KEYS`
//! and `ARGV` of one call, run by [`crate::connection::Connection`]),
//! [`millis`] (durations as script arguments) and [`KEEP`]. The scripts
//! themselves live with their adapters: `lock/scripts.rs`,
//! `queue/scripts.rs`, `room/scripts.rs`, and the RedLock's in `redlock.rs`.

use std::time::Duration;

use deadpool_redis::redis::{Script, ScriptInvocation};

/// How long the bookkeeping keys of an idle lock live: the fence counter
/// and the waiter queue expire a day after their last use.
pub(crate) const KEEP: Duration = Duration::from_secs(24 * 3600);

/// A duration in whole milliseconds for `PX`/`PEXPIRE` and deadlines: at
/// least 1, at most ten years (Redis refuses expiry times that overflow its
/// clock).
pub(crate) fn millis(d: Duration) -> u64 {
    const MAX: u64 = 10 * 365 * 24 * 3600 * 1000;
    u64::try_from(d.as_millis()).unwrap_or(MAX).clamp(1, MAX)
}

/// The `KEYS` and `ARGV` of one script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

impl Call {
    pub fn invocation(&self, script: &'static Script) -> ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in &self.args {
            invocation.arg(arg);
        }
        invocation
    }
}
