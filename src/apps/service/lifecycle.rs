//! An app's lifecycle through the API: deploy (validate, unpack, store the
//! version, run it, settle it `ACTIVE` or `ERROR`), activate, deactivate,
//! remove.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{blocking, AppError, AppService, AppStatusView, AppView};
use crate::apps::archive::{Archive, ArchiveError, Unpacked};
use crate::apps::spec::{validate, DeployRequest};
use crate::function_config::AppName;
use crate::functions::FunctionError;
use crate::store::AppStatus;

impl AppService {
    /// Validates and unpacks the archive, then stores it as a new version
    /// and runs it. An archive refused at any step (including while it
    /// unpacks) leaves nothing behind: no version, no files, the app as it was.
    pub async fn deploy(&self, request: DeployRequest) -> Result<AppView, AppError> {
        // Checked alone first: a bad name is refused before the store is asked.
        let name = AppName::parse(&request.name)
            .map_err(|reason| AppError::Invalid(format!("name: {reason}")))?;
        let _guard = self.lock(&name)?;
        // A redeploy keeps what it omits from the version serving now (not
        // from a removed app, which starts over).
        let previous = self
            .store
            .get_app(&name)
            .await?
            .filter(|app| app.status != AppStatus::Removed)
            .map(|app| app.config);
        let (name, config) =
            validate(&request, previous.as_ref()).map_err(|e| AppError::Invalid(e.to_string()))?;
        let zip = base64::engine::general_purpose::STANDARD
            .decode(request.archive.trim())
            .map_err(|_| AppError::Invalid("archive must be a base64-encoded zip file".into()))?;
        let archive = Archive::check(zip)?;
        let expected = config.handler_files();
        if !expected.iter().any(|f| archive.contains(f)) {
            return Err(ArchiveError::MissingHandler(expected.join(", ")).into());
        }
        let sha = hex::encode(Sha256::digest(archive.bytes()));
        // Unpacked and checked before anything is stored.
        let root = self.code_root.clone();
        let (archive, unpacked) = blocking(move || {
            let unpacked = archive.unpack_temp(&root)?;
            Ok((archive, unpacked))
        })
        .await?;
        let zip = archive.bytes().to_vec();
        drop(archive);
        let stored = self
            .store
            .add_app_version(&name, &config, &zip, &sha, crate::support::now_ms())
            .await;
        let version = match stored {
            Ok(version) => version,
            Err(err) => {
                discard(unpacked).await;
                return Err(err.into());
            }
        };
        let target = self.code_dir(&name, version);
        if let Err(err) = blocking(move || unpacked.install(&target)).await {
            // `run_version` unpacks it again from the zip.
            tracing::warn!(app = %name, version, error = %err, "could not move the unpacked code into place");
        }
        let ran = self
            .beating(
                &name,
                version,
                self.run_version(&name, version, &config, Some(zip)),
            )
            .await;
        if let Err(err) = ran {
            // A conflict or throttling left the running function as it was:
            // an app being served stays served, with the failure noted.
            let transient = matches!(
                err,
                AppError::Backend(FunctionError::Conflict(_) | FunctionError::Unavailable { .. })
            );
            let serving = self.served_format(name.as_str()).is_some();
            let status = if transient && serving {
                AppStatus::Active
            } else {
                self.set_active(name.as_str(), None);
                AppStatus::Error
            };
            let note = format!(
                "deploying version {version} failed: {}",
                crate::support::with_causes(&err)
            );
            // Unless another replica changed the app meanwhile: its change stands.
            let settled = self
                .store
                .settle_app_deploy(
                    &name,
                    version,
                    status,
                    Some(&note),
                    crate::support::now_ms(),
                )
                .await?;
            if !settled {
                // The failure is still what the caller learns.
                let _ = self.superseded(&name, version).await;
            }
            return Err(err);
        }
        // A new app (or one not served) is `DEPLOYED` until now.
        let settled = self
            .store
            .settle_app_deploy(
                &name,
                version,
                AppStatus::Active,
                None,
                crate::support::now_ms(),
            )
            .await?;
        if !settled {
            return Err(self.superseded(&name, version).await);
        }
        self.set_active(name.as_str(), Some((config.payload_format, version)));
        tracing::info!(app = %name, version, runtime = %config.runtime, "app deployed");
        self.view(&name, false).await
    }

    async fn set_status(
        &self,
        app: &AppName,
        status: AppStatus,
    ) -> Result<AppStatusView, AppError> {
        self.store
            .set_app_status(app, status, None, crate::support::now_ms())
            .await?;
        Ok(AppStatusView {
            name: app.to_string(),
            status,
        })
    }

    /// Serves the current version again.
    pub async fn activate(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, record) = self.record(name).await?;
        if record.status == AppStatus::Removed {
            return Err(AppError::Conflict(format!(
                "app '{name}' was removed; deploy it again"
            )));
        }
        let _guard = self.lock(&app)?;
        let config = record.config.clone();
        self.run_version(&app, record.current_version, &config, None)
            .await?;
        self.set_active(name, Some((config.payload_format, record.current_version)));
        self.set_status(&app, AppStatus::Active).await
    }

    /// Stops serving (the proxy answers 404) and stops what runs here (the
    /// local runtime's workers; a Lambda function stays).
    pub async fn deactivate(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, record) = self.record(name).await?;
        if record.status == AppStatus::Removed {
            return Err(AppError::Conflict(format!("app '{name}' was removed")));
        }
        let _guard = self.lock(&app)?;
        self.set_active(name, None);
        // As the seed leaves its Lambda.
        self.backend.release(&app).await?;
        self.set_status(&app, AppStatus::Inactive).await
    }

    /// Stops serving and deletes the function; the record and versions stay.
    pub async fn remove(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, _) = self.record(name).await?;
        let _guard = self.lock(&app)?;
        self.set_active(name, None);
        self.stop(&app).await?;
        let _ = tokio::fs::remove_dir_all(self.code_root.join(app.as_str())).await;
        self.set_status(&app, AppStatus::Removed).await
    }
}

/// Removes unpacked code that will not be used, off the async threads.
async fn discard(unpacked: Unpacked) {
    let _ = tokio::task::spawn_blocking(move || drop(unpacked)).await;
}
