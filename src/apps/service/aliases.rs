//! Aliases and rollback: pointing `live` (what an app's host serves) or any
//! other alias at a version, with an optional share for a second one, as
//! Lambda's aliases do; a rollback moves `live` without uploading anything.

use serde::Deserialize;
use utoipa::ToSchema;

use super::{AliasView, AppError, AppService, AppView};
use crate::function_config::{
    check_alias_name, AliasTarget, Aliases, AppName, FunctionConfig, Routing, LIVE,
};
use crate::store::{AppRecord, AppStatus};

/// `PUT /apps/{name}/aliases/{alias}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    /// The version the alias serves.
    pub version: i64,
    /// A second version taking `weight` of the alias's requests (a canary).
    pub routing: Option<Routing>,
}

/// `POST /apps/{name}/rollback`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Default: the version `live` pointed at before its last move.
    pub version: Option<i64>,
}

impl AppService {
    /// An app's aliases, `live` first.
    pub async fn aliases(&self, name: &str) -> Result<Vec<AliasView>, AppError> {
        let (_, record) = self.record(name).await?;
        Ok(AliasView::all(&record, &self.base_domain))
    }

    /// Points `alias` at a version (and a share at a second one).
    pub async fn put_alias(
        &self,
        name: &str,
        alias: &str,
        request: AliasRequest,
    ) -> Result<AliasView, AppError> {
        check_alias_name(alias).map_err(AppError::Invalid)?;
        let (app, _) = self.record(name).await?;
        if alias != LIVE && alias.len() + 2 + app.as_str().len() > 63 {
            return Err(AppError::Invalid(format!(
                "alias '{alias}' is too long for app '{app}': '{alias}--{app}' must be a DNS label of at most 63 characters"
            )));
        }
        let _guard = self.lock(&app)?;
        let record = self.current(&app).await?;
        let target = AliasTarget {
            version: request.version,
            routing: request.routing,
        };
        let aliases = self.move_alias(&app, &record, alias, target).await?;
        let target = aliases.get(alias).copied().unwrap_or(target);
        Ok(AliasView::of(alias, &target, &app, &self.base_domain))
    }

    /// Deletes an alias (not `live`).
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), AppError> {
        if alias == LIVE {
            return Err(AppError::Invalid(
                "the live alias cannot be deleted: it is what the app's host serves".into(),
            ));
        }
        let (app, _) = self.record(name).await?;
        let _guard = self.lock(&app)?;
        let record = self.current(&app).await?;
        if !record.aliases.others.contains_key(alias) {
            return Err(AppError::Missing(format!(
                "app '{app}' has no alias '{alias}'"
            )));
        }
        let mut aliases = record.aliases.clone();
        aliases.others.remove(alias);
        let serving = self.serves(app.as_str());
        self.commit_aliases(&app, &record, &aliases, &record.config, &[], serving)
            .await?;
        // The store's word first: a Lambda alias left behind by a failure here
        // is named by nothing and removed by the next delete.
        self.backend.remove_alias(&app, alias).await?;
        Ok(())
    }

    /// Moves `live` to a version already deployed (default: where it was
    /// before), without uploading anything; an app in `ERROR` serves again
    /// (in the same write, so a removal made meanwhile stands).
    pub async fn rollback(
        &self,
        name: &str,
        request: RollbackRequest,
    ) -> Result<AppView, AppError> {
        let (app, _) = self.record(name).await?;
        let _guard = self.lock(&app)?;
        let record = self.current(&app).await?;
        let version = match request.version.or(record.aliases.previous) {
            Some(version) => version,
            None => {
                return Err(AppError::Conflict(format!(
                    "app '{app}' has no earlier version to roll back to: name one with \"version\""
                )))
            }
        };
        self.move_alias(&app, &record, LIVE, AliasTarget::to(version))
            .await?;
        tracing::info!(app = %app, from = record.current_version, to = version, "live rolled back");
        self.view(&app, false).await
    }

    /// The app as the store has it now (the caller holds its lock): not removed.
    async fn current(&self, app: &AppName) -> Result<AppRecord, AppError> {
        let record = self
            .store
            .get_app(app)
            .await?
            .ok_or_else(|| AppError::NotFound(app.to_string()))?;
        if record.status == AppStatus::Removed {
            return Err(AppError::Conflict(format!(
                "app '{app}' was removed; deploy it again"
            )));
        }
        Ok(record)
    }

    /// Checks `target`, runs its versions here when the app is served (or
    /// in `ERROR`, which a move of `live` mends), points the backend's alias
    /// at it and records it; the app's aliases now.
    async fn move_alias(
        &self,
        app: &AppName,
        record: &AppRecord,
        alias: &str,
        target: AliasTarget,
    ) -> Result<Aliases, AppError> {
        let primary = self.stored_config(app, target.version).await?;
        if let Some(routing) = target.routing {
            check_routing(&target, &routing)?;
            let second = self.stored_config(app, routing.version).await?;
            if second.payload_format != primary.payload_format {
                return Err(AppError::Invalid(format!(
                    "routing: version {} takes payload format {}, version {} takes {}; both must take the same",
                    routing.version,
                    second.payload_format.as_str(),
                    target.version,
                    primary.payload_format.as_str()
                )));
            }
        }
        let aliases = if alias == LIVE {
            record.aliases.with_live(target)
        } else {
            let mut aliases = record.aliases.clone();
            aliases.others.insert(alias.to_owned(), target);
            aliases
        };
        let live_config = if aliases.live.version == record.current_version {
            record.config.clone()
        } else if aliases.live.version == target.version {
            primary.clone()
        } else {
            self.stored_config(app, aliases.live.version).await?
        };
        // Running before it takes traffic: no request finds it missing.
        let serving = matches!(record.status, AppStatus::Active)
            || (alias == LIVE && record.status == AppStatus::Error);
        let mut ran = Vec::new();
        if serving {
            for version in target.versions() {
                if self.runs_here(app.as_str(), version) {
                    continue;
                }
                let config = if version == target.version {
                    primary.clone()
                } else {
                    self.stored_config(app, version).await?
                };
                self.run_version(app, version, &config, None).await?;
                ran.push((version, config.payload_format));
            }
            // And what the other aliases name, if this process did not serve the app.
            let mut next = record.clone();
            next.aliases = aliases.clone();
            next.current_version = aliases.live.version;
            next.config = live_config.clone();
            self.ensure_running(app, &next, &mut ran).await?;
        }
        // The store first (its compare-and-set decides between concurrent
        // changes), then the platform's alias; if that fails, the store's
        // change is undone.
        self.commit_aliases(app, record, &aliases, &live_config, &ran, serving)
            .await?;
        if let Err(err) = self.backend.set_alias(app, alias, &target).await {
            let reverted = self
                .store
                .set_aliases(
                    app,
                    &aliases,
                    &record.aliases,
                    &record.config,
                    false,
                    crate::support::now_ms(),
                )
                .await;
            if !matches!(reverted, Ok(true)) {
                tracing::warn!(app = %app, alias, "could not undo an alias change the platform refused");
            }
            if self.serves(app.as_str()) {
                self.serve(app.as_str(), record.aliases.clone(), &[]);
            }
            return Err(err.into());
        }
        Ok(aliases)
    }

    /// Records `aliases` if the app's are still the record's, then serves
    /// them here when `serving` (`ran`: the versions just started for them).
    async fn commit_aliases(
        &self,
        app: &AppName,
        record: &AppRecord,
        aliases: &Aliases,
        live_config: &FunctionConfig,
        ran: &[(i64, crate::proxy::PayloadFormat)],
        serving: bool,
    ) -> Result<(), AppError> {
        // Moving `live` of an app in `ERROR` mends it.
        let mend = aliases.live != record.aliases.live;
        let stored = self
            .store
            .set_aliases(
                app,
                &record.aliases,
                aliases,
                live_config,
                mend,
                crate::support::now_ms(),
            )
            .await?;
        if !stored {
            return Err(AppError::Conflict(format!(
                "the aliases of app '{app}' changed meanwhile; read them again and retry"
            )));
        }
        if serving {
            self.serve(app.as_str(), aliases.clone(), ran);
        }
        Ok(())
    }

    /// The configuration of a stored version, or `404`.
    async fn stored_config(&self, app: &AppName, version: i64) -> Result<FunctionConfig, AppError> {
        self.store
            .app_version(app, version)
            .await?
            .map(|stored| stored.config)
            .ok_or_else(|| AppError::Missing(format!("app '{app}' has no version {version}")))
    }
}

/// A routing share must be a weight from 0 to 1, to another version.
fn check_routing(target: &AliasTarget, routing: &Routing) -> Result<(), AppError> {
    if !routing.weight.is_finite() || !(0.0..=1.0).contains(&routing.weight) {
        return Err(AppError::Invalid(format!(
            "routing.weight must be between 0.0 and 1.0, not {}",
            routing.weight
        )));
    }
    if routing.version == target.version {
        return Err(AppError::Invalid(format!(
            "routing.version must be another version than the alias's own ({})",
            target.version
        )));
    }
    Ok(())
}
