//! Operations: deploys asked not to wait (`?wait=false`). Each is a row in
//! the store, `pending` while a task of this process runs it (renewing a
//! lease), then `succeeded` with the app or `failed` with the error
//! envelope. One whose process stopped is settled `failed` once its lease
//! runs out, or at start when this process alone uses the store.

use std::future::Future;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{AppError, AppService};
use crate::store::{OperationRecord, OperationStatus};
use crate::support::timestamp;

/// What an interrupted operation says.
const INTERRUPTED: &str = r#"{"error":{"statusCode":503,"name":"ServiceUnavailableError","code":"interrupted","message":"the service stopped before the operation ended; deploy again"}}"#;

/// An operation as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationView {
    pub id: String,
    /// `deploy`.
    pub kind: String,
    pub app: String,
    pub status: OperationStatus,
    pub created_at: String,
    pub updated_at: String,
    /// The app once it succeeded (as `GET /apps/{name}` shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The error envelope once it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

impl OperationView {
    fn of(record: OperationRecord) -> Self {
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        OperationView {
            id: record.id,
            kind: record.kind,
            app: record.name,
            status: record.status,
            created_at: timestamp(record.created_at_ms),
            updated_at: timestamp(record.updated_at_ms),
            result: json(record.result),
            error: json(record.error),
        }
    }
}

impl AppService {
    /// Records a new `pending` operation of `kind` on `app`.
    pub async fn begin_operation(&self, kind: &str, app: &str) -> Result<OperationView, AppError> {
        let now = crate::support::now_ms();
        let record = OperationRecord {
            id: format!("op-{}", uuid::Uuid::new_v4().simple()),
            kind: kind.to_owned(),
            name: app.to_owned(),
            status: OperationStatus::Pending,
            result: None,
            error: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.store
            .create_operation(&record, now.saturating_add(self.lease_ms()))
            .await?;
        Ok(OperationView::of(record))
    }

    /// Runs `work` for operation `id`, keeping its lease, and records how
    /// it ended (`Ok`: the result, `Err`: the error envelope).
    pub async fn run_operation(&self, id: &str, work: impl Future<Output = Result<Value, Value>>) {
        let mut work = std::pin::pin!(work);
        let every = self.deploy_lease / 3;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = tokio::time::sleep(every) => {
                    let until = crate::support::now_ms().saturating_add(self.lease_ms());
                    if let Err(err) = self.store.renew_operation(id, until).await {
                        tracing::warn!(operation = id, error = %err, "could not renew an operation's lease");
                    }
                }
            }
        };
        let (status, result, error) = match outcome {
            Ok(result) => (OperationStatus::Succeeded, Some(result.to_string()), None),
            Err(error) => (OperationStatus::Failed, None, Some(error.to_string())),
        };
        if let Err(err) = self
            .store
            .finish_operation(
                id,
                status,
                result.as_deref(),
                error.as_deref(),
                crate::support::now_ms(),
            )
            .await
        {
            tracing::warn!(operation = id, error = %err, "could not record how an operation ended");
        }
        tracing::info!(operation = id, status = %status, "operation ended");
    }

    /// An operation, or `404`.
    pub async fn operation(&self, id: &str) -> Result<OperationView, AppError> {
        self.store
            .get_operation(id)
            .await?
            .map(OperationView::of)
            .ok_or_else(|| AppError::Missing(format!("no operation '{id}'")))
    }

    /// Settles `failed` the operations whose process stopped: every pending
    /// one when `all` (this process alone uses the store and has just
    /// started), else those whose lease ran out.
    pub(super) async fn settle_operations(&self, all: bool) {
        let now = crate::support::now_ms();
        let expired_before = if all { i64::MAX } else { now };
        match self
            .store
            .settle_abandoned_operations(expired_before, INTERRUPTED, now)
            .await
        {
            Ok(0) => {}
            Ok(settled) => {
                tracing::warn!(settled, "operations interrupted by a stop settled failed")
            }
            Err(err) => tracing::warn!(error = %err, "could not settle interrupted operations"),
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.deploy_lease.as_millis()).unwrap_or(i64::MAX)
    }
}
