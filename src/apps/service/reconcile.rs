//! Reconciliation with the platform: an active app whose function was
//! deleted or broken outside the service becomes `ERROR`, on demand
//! (`POST /apps/{name}/sync`) and periodically.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AppError, AppService, AppView};
use crate::function_config::AppName;
use crate::store::{AppRecord, AppStatus};

impl AppService {
    /// Checks the app's function against the platform now (`POST /apps/{name}/sync`).
    pub async fn sync(&self, name: &str) -> Result<AppView, AppError> {
        let (app, record) = self.record(name).await?;
        self.reconcile(&app, &record).await?;
        self.get(name).await
    }

    /// An active app whose function was deleted or failed outside the service
    /// becomes `ERROR`, with the reason; the proxy stops serving it.
    async fn reconcile(&self, app: &AppName, record: &AppRecord) -> Result<(), AppError> {
        if record.status != AppStatus::Active {
            return Ok(());
        }
        if let Some(problem) = self.backend.problem(app).await? {
            tracing::warn!(app = %app, problem = %problem, "app marked ERROR by reconciliation");
            self.stop_serving(app.as_str());
            self.store
                .set_app_status(
                    app,
                    AppStatus::Error,
                    Some(&problem),
                    crate::support::now_ms(),
                )
                .await?;
        }
        Ok(())
    }

    /// Reconciles every active app every `every` until `shutdown`, which
    /// also ends a round under way (the next start reconciles again). On
    /// the local runtime a round is one listing of the apps: its functions
    /// never have a problem.
    pub async fn reconcile_periodically(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.reconcile_active() => {}
            }
        }
    }

    /// One round: every `ACTIVE` app checked against the platform.
    async fn reconcile_active(&self) {
        let apps = match self.store.list_apps().await {
            Ok(apps) => apps,
            Err(err) => {
                tracing::warn!(error = %err, "reconciliation could not list apps");
                return;
            }
        };
        for record in apps.iter().filter(|r| r.status == AppStatus::Active) {
            let app = record.name.clone();
            if let Err(err) = self.reconcile(&app, record).await {
                tracing::warn!(app = %app, error = %err, "could not reconcile the app");
            }
        }
    }
}
