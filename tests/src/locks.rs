//! Locks for tests of fencing in storage: [`FixedFenceLock`] grants every
//! key at once with a chosen fencing token (optionally already lost), so a
//! test can put a stale or lost holder in front of the database without
//! timing games.

use std::sync::Arc;

use async_trait::async_trait;
use concert_domain::{Control, DistributedLock, Failure, Fence, HeldLock, LockKey, LockOptions};
use concert_locking::Ordered;

/// Grants every acquisition with the fence token it was built with.
#[derive(Debug, Clone)]
pub struct FixedFenceLock {
    token: u64,
    lost: bool,
}

impl FixedFenceLock {
    /// Acquisitions carry `token`.
    pub fn new(token: u64) -> Self {
        Self { token, lost: false }
    }

    /// Acquisitions carry `token`, flagged lost (the holder's lease ran
    /// out while it worked).
    pub fn lost(token: u64) -> Self {
        Self { token, lost: true }
    }

    /// A control that runs its work fenced under this lock.
    pub fn control(self) -> Control {
        Control::locked(
            "fixed-fence",
            Arc::new(Ordered::plain(self)),
            LockOptions::default(),
        )
    }
}

#[derive(Debug)]
struct Held {
    key: LockKey,
    fence: Fence,
}

#[async_trait]
impl HeldLock for Held {
    fn key(&self) -> &LockKey {
        &self.key
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    async fn release(self: Box<Self>) -> Result<(), Failure> {
        if self.fence.is_lost() {
            Err(Failure::LockLost)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl DistributedLock for FixedFenceLock {
    async fn acquire(
        &self,
        key: &LockKey,
        _options: LockOptions,
    ) -> Result<Box<dyn HeldLock>, Failure> {
        let fence = Fence::new(self.token);
        if self.lost {
            fence.mark_lost();
        }
        Ok(Box::new(Held {
            key: key.clone(),
            fence,
        }))
    }
}
