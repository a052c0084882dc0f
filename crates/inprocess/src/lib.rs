//! In-process adapters, for a single instance and for tests:
//!
//! - [`SystemClock`]: the domain's `Clock` over the system clock and tokio.
//! - [`LocalLock`]: the lock port's contract inside one process (`local`):
//!   leases, watchdog, fencing tokens that grow per key, wake-one FIFO
//!   waiting, background release of a dropped guard.
//! - [`KeyQueue`]: a process-local queue per key in front of any shared
//!   `DistributedLock`: one request per process and key contends in the
//!   shared lock, and a release hands the shared lock to the next local
//!   request in memory (bounded streaks), so a hot key costs the lock
//!   service one round trip per streak, not per request. Its acquisitions
//!   can also be passed on before the holder's commit
//!   (`concert_locking::ordered::Passing`, under `Ordered`).
//! - [`LocalWaitingRoom`]: the waiting room port for one instance.
//! - [`SeatMapCache`]: seat maps and bookable dates served from memory,
//!   kept current by invalidation (own commits, events, age).
//!
//! The lease, waiter and counter machinery the locks share with the Redis
//! locks lives in `concert-locking`.

mod clock;
mod key_queue;
mod local;
mod room;
mod seatmap;

pub use clock::SystemClock;
pub use key_queue::{KeyQueue, MAX_STREAK, MAX_STREAK_AGE};
pub use local::{LocalHeld, LocalLock};
pub use room::LocalWaitingRoom;
pub use seatmap::{SeatMapCache, SeatMapStats};
