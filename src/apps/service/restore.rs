//! Restore at start: clears code a stopped process was unpacking, then runs
//! every app left `ACTIVE` (an app that cannot run becomes `ERROR`).

use super::{blocking, AppError, AppService};
use crate::apps::archive::{sweep_unpacking, ArchiveError};
use crate::store::AppStatus;

impl AppService {
    /// At start: runs every app left `ACTIVE` (its code comes from the store).
    /// One left `DEPLOYED` is settled by [`AppService::follow_store`] once its
    /// deploy counts as interrupted (see [`AppService::settle_interrupted`]).
    pub async fn restore(&self) -> Result<usize, AppError> {
        let root = self.code_root.clone();
        let swept = blocking(move || {
            std::fs::create_dir_all(&root).map_err(|e| ArchiveError::Io(e.to_string()))?;
            Ok(sweep_unpacking(&root))
        })
        .await?;
        if swept > 0 {
            tracing::info!(swept, "removed code a stopped process was unpacking");
        }
        if self.sole_owner {
            self.settle_operations(true).await;
        }
        let mut restored = 0;
        for record in self.store.list_apps().await? {
            if record.status == AppStatus::Deployed {
                tracing::info!(app = %record.name, version = record.current_version, "app left DEPLOYED: settled once its deploy counts as interrupted");
            }
            if record.status != AppStatus::Active {
                continue;
            }
            let app = record.name.clone();
            let mut ran = Vec::new();
            match self.ensure_running(&app, &record, &mut ran).await {
                Ok(()) => {
                    self.serve(app.as_str(), record.aliases.clone(), &ran);
                    restored += 1;
                }
                Err(err) => {
                    tracing::warn!(app = %app, error = %err, "could not restore app");
                    self.store
                        .set_app_status(
                            &app,
                            AppStatus::Error,
                            Some(&err.to_string()),
                            crate::support::now_ms(),
                        )
                        .await?;
                }
            }
        }
        Ok(restored)
    }
}
