//! Tenants: the lifecycle state machine, the views the API returns, and the
//! signed webhook that reports outcomes to ARC SaaS tenant management.

pub mod state;
pub mod view;
pub mod webhook;

pub use state::{next, Lifecycle, Transition};
