//! API Gateway's proxy formats as pure functions: an HTTP request becomes a
//! REST (payload 1.0) or HTTP API (payload 2.0) event, and a function's result
//! becomes an HTTP response following the same rules API Gateway applies.
//! Nothing here does I/O, so every rule is unit-tested.

mod request;
mod response;

pub use request::{event_v1, event_v2, IncomingRequest};
pub use response::{map_result, MappedResponse, MappingError, PayloadFormat};

/// Body of the 502 API Gateway answers when a function fails or returns an unmappable result.
pub const INTERNAL_SERVER_ERROR: &str = r#"{"message":"Internal server error"}"#;
