//! Tenants: the lifecycle state machine, the views the API returns, the
//! signed webhook that reports outcomes to ARC SaaS tenant management, and
//! the outcome events an sbt-aws control plane gets.

pub mod notify;
pub mod sbt;
pub mod state;
pub mod view;
pub mod webhook;

pub use state::{next, Lifecycle, Transition};
