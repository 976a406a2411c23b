//! Tenant events: types, envelopes, the durable inbox, and the dispatcher that
//! runs handlers from it with retries.

pub mod completions;
pub mod envelope;
pub mod handlers;
mod inbox;
mod types;
pub mod view;
mod worker;

pub use handlers::{EventHandler, Handled, HandlerError, HandlerSet, InboxEvent, Services};
pub use inbox::{Inbox, InboxError, Submitted};
pub use types::EventType;
pub use worker::{backoff_ms, Dispatcher, RetryPolicy};
