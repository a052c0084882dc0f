//! How a unit of work is protected against concurrent writers of the rows
//! it reads and then writes: the protections of the brief, never a
//! technology. A [`crate::Control`] chooses one per attempt; storage
//! (a [`crate::Transactions`] adapter) honours it.

use crate::lock::Fences;

/// How a unit of work protects the rows it reads and then writes.
#[derive(Debug, Clone)]
pub enum Protection {
    Optimistic,
    Pessimistic,
    Atomic,
    Fenced(Fences),
}

impl Protection {
    /// The fences to check, under [`Protection::Fenced`].
    pub fn fences(&self) -> Option<&Fences> {
        match self {
            Protection::Fenced(fences) => Some(fences),
            _ => None,
        }
    }
}
