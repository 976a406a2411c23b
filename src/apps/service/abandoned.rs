//! Deploy heartbeats and interrupted deploys: a deploy renews a heartbeat
//! on its app row while it runs; an app left `DEPLOYED` whose heartbeat
//! stopped is deployed again here, or set `ERROR` with the reason.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{AppError, AppService};
use crate::function_config::{AppName, LIVE};
use crate::store::{AppRecord, AppStatus};

impl AppService {
    /// Settles an app left `DEPLOYED` by a deploy that was interrupted (its
    /// process died: kill -9, a crash): deploys its stored version again and
    /// serves it (`ACTIVE`), or marks it `ERROR` with the reason in
    /// `lastError`. Its heartbeat is this process's while it runs.
    pub async fn settle_interrupted(
        self: Arc<Self>,
        record: AppRecord,
        shutdown: CancellationToken,
    ) {
        let app = record.name.clone();
        // A deploy through this process is under way: it settles the app itself.
        let Ok(_guard) = self.lock(&app) else {
            return;
        };
        let version = record.current_version;
        // Read again under the lock: a local deploy may have settled it since.
        match self.store.get_app(&app).await {
            Ok(Some(now))
                if now.status == AppStatus::Deployed && now.current_version == version => {}
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(app = %app, error = %err, "could not read an app whose deploy was interrupted");
                return;
            }
        }
        tracing::warn!(app = %app, version, "the deploy of this version was interrupted: deploying it again");
        let run = async {
            let config = record.config.clone();
            let zip = self.store.app_code(&app, version).await?;
            self.run_version(&app, version, &config, Some(zip)).await?;
            self.backend
                .set_alias(&app, LIVE, &record.aliases.live)
                .await?;
            Ok::<_, AppError>(config)
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = self.beating(&app, version, run) => outcome,
        };
        let (status, note, serve) = match outcome {
            Ok(config) => (AppStatus::Active, None, Some(config.payload_format)),
            Err(err) => {
                let note = format!("deploying version {version} was interrupted, and deploying it again failed: {}", crate::support::with_causes(&err));
                tracing::warn!(app = %app, version, error = %err, "could not settle an interrupted deploy: app marked ERROR");
                (AppStatus::Error, Some(note), None)
            }
        };
        match self
            .store
            .settle_app_deploy(
                &app,
                version,
                status,
                note.as_deref(),
                crate::support::now_ms(),
            )
            .await
        {
            Ok(true) => match serve {
                Some(format) => {
                    let mut ran = vec![(version, format)];
                    match self.ensure_running(&app, &record, &mut ran).await {
                        Ok(()) => {}
                        Err(err) => {
                            tracing::warn!(app = %app, error = %err, "could not run the versions the app's aliases name");
                        }
                    }
                    self.serve(app.as_str(), record.aliases.clone(), &ran);
                    tracing::info!(app = %app, version, "interrupted deploy settled: app served");
                }
                None => self.stop_serving(app.as_str()),
            },
            Ok(false) => {
                let _ = self.superseded(&app, version).await;
            }
            Err(err) => {
                tracing::warn!(app = %app, error = %err, "could not record the outcome of an interrupted deploy");
            }
        }
    }

    /// Runs `work` (a deploy of `version`) while renewing the app's deploy
    /// heartbeat every third of the lease, so no other process takes it as
    /// interrupted.
    pub(super) async fn beating<T>(
        &self,
        app: &AppName,
        version: i64,
        work: impl Future<Output = T>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let every = self.deploy_lease / 3;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(every) => {
                    if let Err(err) = self.store.renew_app_deploy(app, version, crate::support::now_ms()).await {
                        tracing::warn!(app = %app, version, error = %err, "could not renew the deploy's heartbeat");
                    }
                }
            }
        }
    }
}
