//! Row decoding for postgres (columns and code shared: `store::rows`).

pub(super) use crate::store::rows::{APP_COLUMNS, EVENT_COLUMNS, JOB_COLUMNS, TENANT_COLUMNS};

crate::store::rows::row_decoders!(sqlx::postgres::PgRow);
