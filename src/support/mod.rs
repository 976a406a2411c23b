//! Small helpers every layer may use: the bottom of the crate. Nothing here
//! imports another module of the crate.

mod clock;
mod errors;
mod host;
mod ids;
mod process;

pub use clock::{now_ms, timestamp};
pub use errors::{error_chain, with_causes};
pub use host::{cpus, run_as_batch_work};
pub use ids::request_uuid;
pub use process::{spawn_supervised, stop_groups, ProcessGroup};
