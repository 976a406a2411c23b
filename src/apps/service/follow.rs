//! Following the store: this process serves what the store says, as other
//! replicas change apps (`follow_store`, `sync_from_store`), and hands apps
//! whose deploys were interrupted to `settle_interrupted`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AppError, AppService};
use crate::function_config::{Aliases, AppName, LIVE};
use crate::store::{AppRecord, AppStatus};

impl AppService {
    /// Keeps this process in step with apps changed by other replicas sharing
    /// the store, checking every `every` until `shutdown`.
    /// Also settles deploys that were interrupted (see
    /// [`AppService::settle_interrupted`]), the first time at once.
    pub async fn follow_store(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if !self.sole_owner {
                self.settle_operations(false).await;
            }
            let deploying = match self.sync_listed().await {
                Ok((_, deploying)) => deploying,
                Err(err) => {
                    tracing::warn!(error = %err, "could not check the store for app changes");
                    continue;
                }
            };
            if !deploying {
                first = false;
                continue;
            }
            // The sole user of the store finds every unsettled deploy at
            // start interrupted; replicas only those whose heartbeat stopped.
            let expired_before = if first && self.sole_owner {
                i64::MAX
            } else {
                crate::support::now_ms().saturating_sub(millis(self.deploy_lease))
            };
            first = false;
            match self
                .store
                .take_abandoned_deploys(expired_before, crate::support::now_ms())
                .await
            {
                Ok(records) => {
                    for record in records {
                        tokio::spawn(self.clone().settle_interrupted(record, shutdown.clone()));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not check the store for interrupted deploys");
                }
            }
        }
    }

    /// Serves what the store says: runs apps made active (or redeployed)
    /// elsewhere, stops those deactivated or removed elsewhere. Returns how
    /// many apps changed here.
    pub async fn sync_from_store(&self) -> Result<usize, AppError> {
        Ok(self.sync_listed().await?.0)
    }

    /// [`AppService::sync_from_store`], also saying whether some app is `DEPLOYED`.
    async fn sync_listed(&self) -> Result<(usize, bool), AppError> {
        let mut changed = 0;
        let listed = self.store.list_apps().await?;
        let deploying = listed.iter().any(|r| r.status == AppStatus::Deployed);
        self.refresh_domains().await;
        for listed in listed {
            if self.wanted_aliases(&listed) == self.served_aliases(listed.name.as_str()) {
                continue;
            }
            let app = listed.name.clone();
            // A change through this process is under way: it settles the app itself.
            let Ok(_guard) = self.lock(&app) else {
                continue;
            };
            // Read again under the lock: a local change may have landed since the listing.
            let Some(record) = self.store.get_app(&app).await? else {
                continue;
            };
            let wanted = self.wanted_aliases(&record);
            if wanted == self.served_aliases(app.as_str()) {
                continue;
            }
            if let Err(err) = self.follow_record(&app, &record, false).await {
                tracing::warn!(app = %app, status = %record.status, version = record.current_version, error = %err, "could not follow an app changed by another replica");
                continue;
            }
            match wanted {
                Some(aliases) => {
                    tracing::info!(app = %app, version = aliases.live.version, "app changed by another replica: serving it");
                }
                None => {
                    tracing::info!(app = %app, status = %record.status, "app changed by another replica: not serving it");
                }
            }
            changed += 1;
        }
        Ok((changed, deploying))
    }

    /// What the store wants served: the app's aliases when it is `ACTIVE`.
    fn wanted_aliases(&self, record: &AppRecord) -> Option<Aliases> {
        (record.status == AppStatus::Active).then(|| record.aliases.clone())
    }

    /// Reads the custom domains again (another replica may have changed them).
    pub(super) async fn refresh_domains(&self) {
        match self.store.domains(None).await {
            Ok(listed) => {
                if let Ok(mut domains) = self.domains.write() {
                    *domains = listed.into_iter().collect();
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not read the custom domains"),
        }
    }

    /// Another replica deactivated, removed or redeployed the app while
    /// `version` was deploying here: what it did stands, and this process
    /// follows it now (the caller holds the app's lock). Gives the `409`.
    pub(super) async fn superseded(&self, name: &AppName, version: i64) -> AppError {
        let record = match self.store.get_app(name).await {
            Ok(Some(record)) => record,
            Ok(None) => return AppError::NotFound(name.to_string()),
            Err(err) => return err.into(),
        };
        tracing::warn!(app = %name, version, status = %record.status, current = record.current_version, "app changed elsewhere while it deployed");
        if let Err(err) = self.follow_record(name, &record, true).await {
            tracing::warn!(app = %name, error = %err, "could not follow the change made elsewhere");
        }
        AppError::Conflict(format!(
            "app '{name}' changed while version {version} was deploying: it is now {} at version {}",
            record.status, record.current_version
        ))
    }

    /// Serves what the store says of the app (the caller holds its lock):
    /// its `ACTIVE` version, or nothing. `overtaken`: this process has just
    /// deployed a version the store no longer wants, so a platform function
    /// gets the wanted code again, and is deleted if the app was removed.
    pub(super) async fn follow_record(
        &self,
        app: &AppName,
        record: &AppRecord,
        overtaken: bool,
    ) -> Result<(), AppError> {
        if let Some(aliases) = self.wanted_aliases(record) {
            let mut ran = Vec::new();
            if overtaken {
                // The live version's code again, whatever the platform holds.
                let version = record.current_version;
                let zip = self.store.app_code(app, version).await?;
                self.run_version(app, version, &record.config, Some(zip))
                    .await?;
                // And the platform's `live` where the store has it.
                self.backend
                    .set_alias(app, LIVE, &record.aliases.live)
                    .await?;
                ran.push((version, record.config.payload_format));
            }
            self.ensure_running(app, record, &mut ran).await?;
            self.serve(app.as_str(), aliases, &ran);
            return Ok(());
        }
        self.stop_serving(app.as_str());
        let removed = record.status == AppStatus::Removed;
        // What runs here stops; a platform function is the business of whoever
        // deactivated or removed the app, unless this process recreated it.
        if overtaken && removed {
            self.stop(app).await?;
        } else {
            self.backend.release(app).await?;
        }
        if removed {
            let _ = tokio::fs::remove_dir_all(self.code_root.join(app.as_str())).await;
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
