//! Row decoding for postgres (columns and code shared: `store::rows`).

pub(super) use crate::store::rows::{parse, EVENT_COLUMNS, JOB_COLUMNS, TENANT_COLUMNS};

crate::store::rows::row_decoders!(sqlx::postgres::PgRow);
