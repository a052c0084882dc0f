//! The commit listener: [`Transactions`] that tell this process which
//! events each of its units committed (the relay wakes at once, and the
//! seat-map cache sees its own writes at once).

use std::sync::Arc;

use async_trait::async_trait;
use concert_domain::{Event, Failure, Outbox, Protection, Transactions, UnitOfWork};

/// Told about every unit of work that committed events, after the commit
/// (never for one that rolled back). Runs on the committing task: it must
/// only note or signal, never wait.
pub trait CommitListener: Send + Sync {
    fn committed(&self, events: &[Event]);
}

/// [`Transactions`] that tell a [`CommitListener`] which events each
/// committed unit recorded (the relay wakes at once, and this process's
/// caches see its own writes at once).
pub struct NotifyingTransactions {
    inner: Arc<dyn Transactions>,
    listener: Arc<dyn CommitListener>,
}

impl NotifyingTransactions {
    pub fn new(inner: Arc<dyn Transactions>, listener: Arc<dyn CommitListener>) -> Self {
        Self { inner, listener }
    }
}

#[async_trait]
impl Transactions for NotifyingTransactions {
    async fn begin(&self, protection: Protection) -> Result<Box<dyn UnitOfWork>, Failure> {
        let inner = self.inner.begin(protection).await?;
        Ok(Box::new(NotifyingUnit {
            inner,
            events: Vec::new(),
            listener: self.listener.clone(),
        }))
    }
}

struct NotifyingUnit {
    inner: Box<dyn UnitOfWork>,
    events: Vec<Event>,
    listener: Arc<dyn CommitListener>,
}

#[async_trait]
impl UnitOfWork for NotifyingUnit {
    fn repositories(&mut self) -> &mut dyn concert_domain::Repositories {
        self.inner.repositories()
    }

    fn outbox(&mut self) -> &mut dyn Outbox {
        self
    }

    async fn write(&mut self) -> Result<(), Failure> {
        self.inner.write().await
    }

    async fn commit(self: Box<Self>) -> Result<(), Failure> {
        let NotifyingUnit {
            inner,
            events,
            listener,
        } = *self;
        inner.commit().await?;
        if !events.is_empty() {
            listener.committed(&events);
        }
        Ok(())
    }

    async fn rollback(self: Box<Self>) {
        self.inner.rollback().await;
    }
}

#[async_trait]
impl Outbox for NotifyingUnit {
    async fn record(&mut self, events: &[Event]) -> Result<(), Failure> {
        self.inner.outbox().record(events).await?;
        self.events.extend_from_slice(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};
    use concert_domain::{EventType, PointChange, Points, UserId};

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).expect("valid time")
    }

    /// Collects what it is told.
    #[derive(Default)]
    struct Told(Mutex<Vec<EventType>>);

    impl CommitListener for Told {
        fn committed(&self, events: &[Event]) {
            self.0.lock().unwrap().extend(events.iter().map(|e| e.kind));
        }
    }

    #[tokio::test]
    async fn the_listener_hears_committed_events_only() {
        let store = concert_memory::MemoryStore::new();
        let told = Arc::new(Told::default());
        let transactions = NotifyingTransactions::new(Arc::new(store.clone()), told.clone());
        let charged = |balance| {
            Event::points(
                UserId::from(1),
                PointChange::Charge(Points::new(10).unwrap()),
                balance,
                None,
                t0(),
            )
        };
        let mut uow = transactions.begin(Protection::Optimistic).await.unwrap();
        uow.outbox().record(&[charged(10)]).await.unwrap();
        uow.rollback().await;
        let mut uow = transactions.begin(Protection::Optimistic).await.unwrap();
        uow.outbox().record(&[charged(20)]).await.unwrap();
        store.fail_next_commit(Failure::Conflict);
        assert!(uow.commit().await.is_err());
        assert!(told.0.lock().unwrap().is_empty());
        let uow = transactions.begin(Protection::Optimistic).await.unwrap();
        uow.commit().await.unwrap();
        let mut uow = transactions.begin(Protection::Optimistic).await.unwrap();
        uow.outbox()
            .record(&[charged(30), charged(40)])
            .await
            .unwrap();
        uow.commit().await.unwrap();
        assert_eq!(
            *told.0.lock().unwrap(),
            [EventType::PointsCharged, EventType::PointsCharged]
        );
        // the events reached the store's outbox too
        assert_eq!(store.events().len(), 2);
    }
}
