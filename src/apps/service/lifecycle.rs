//! An app's lifecycle through the API: deploy (validate, unpack, store the
//! version, run it, settle it `ACTIVE` or `ERROR`), activate, deactivate,
//! remove.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{blocking, AppError, AppService, AppStatusView, AppView, DeployGuard};
use crate::apps::archive::{Archive, ArchiveError, Unpacked};
use crate::apps::spec::{validate, DeployRequest};
use crate::function_config::{AliasTarget, AppName, CodeLocation, FunctionConfig, LIVE};
use crate::functions::FunctionError;
use crate::store::AppStatus;

impl AppService {
    /// Validates and unpacks the archive, then stores it as a new version
    /// and runs it. An archive refused at any step (including while it
    /// unpacks) leaves nothing behind: no version, no files, the app as it was.
    ///
    /// The code is the request's archive, or a location: an S3 object (the
    /// AWS backend hands it to Lambda, the local one downloads it) or a
    /// container image (the AWS backend only).
    pub async fn deploy(&self, request: DeployRequest) -> Result<AppView, AppError> {
        let (name, mut config, promote, _guard) = self.prepare(&request).await?;
        match config.code.take() {
            None => {
                let text = request.archive.as_deref().unwrap_or_default();
                let zip = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| {
                        AppError::Invalid("archive must be a base64-encoded zip file".into())
                    })?;
                let archive = Archive::check(zip)?;
                self.deploy_archive(&name, &config, archive, promote).await
            }
            Some(location) if self.backend.fetches_code() => {
                config.code = Some(location);
                self.deploy_location(&name, &config, promote).await
            }
            Some(CodeLocation::S3(location)) => {
                let zip = self.s3.fetch(&location).await?;
                let archive = Archive::check(zip)?;
                self.deploy_archive(&name, &config, archive, promote).await
            }
            Some(CodeLocation::Image { .. }) => Err(AppError::Invalid(format!(
                "imageUri: container images run only on the aws functions backend; the {} backend runs zip archives",
                self.backend.name()
            ))),
        }
    }

    /// Deploys a raw zip written to `upload` (a file this service made with
    /// [`AppService::upload_path`]; removed here), with `request`'s
    /// settings (its `archive`, `s3` and `imageUri` unset).
    pub async fn deploy_upload(
        &self,
        request: DeployRequest,
        upload: Upload,
    ) -> Result<AppView, AppError> {
        let path = upload.path().to_owned();
        let zip =
            blocking(move || std::fs::read(&path).map_err(|e| ArchiveError::Io(e.to_string())))
                .await;
        drop(upload);
        let mut request = request;
        request.archive = Some(String::new());
        let (name, config, promote, _guard) = self.prepare(&request).await?;
        let archive = Archive::check(zip?)?;
        self.deploy_archive(&name, &config, archive, promote).await
    }

    /// A new file under the code root for an upload to stream into (swept
    /// at start if a process dies while it is there).
    pub fn upload_path(&self) -> Result<Upload, AppError> {
        std::fs::create_dir_all(&self.code_root).map_err(|e| AppError::Io(e.to_string()))?;
        Ok(Upload(self.code_root.join(format!(
            "{}upload-{}.zip",
            crate::apps::archive::UNPACKING_PREFIX,
            uuid::Uuid::new_v4().simple()
        ))))
    }

    /// Stores a version whose code the platform fetches itself (an S3
    /// object, an image) and deploys it (the caller holds the app's lock).
    async fn deploy_location(
        &self,
        name: &AppName,
        config: &FunctionConfig,
        promote: bool,
    ) -> Result<AppView, AppError> {
        let described = serde_json::to_vec(&config.code).unwrap_or_default();
        let sha = hex::encode(Sha256::digest(&described));
        let version = self
            .store
            .add_app_version(name, config, &[], &sha, crate::support::now_ms(), promote)
            .await?;
        self.start_version(name, config, version, Vec::new(), promote)
            .await
    }

    /// Checks a deploy's settings and takes the app's lock: its name, its
    /// configuration (what the request omits is the app's newest version's,
    /// as Lambda's `UpdateFunctionCode` keeps `$LATEST`'s), whether it moves
    /// `live` (always for an app's first version).
    pub(super) async fn prepare(
        &self,
        request: &DeployRequest,
    ) -> Result<(AppName, FunctionConfig, bool, DeployGuard<'_>), AppError> {
        // Checked alone first: a bad name is refused before the store is asked.
        let name = AppName::parse(&request.name)
            .map_err(|reason| AppError::Invalid(format!("name: {reason}")))?;
        let guard = self.lock(&name)?;
        // Not from a removed app, which starts over.
        let existing = self
            .store
            .get_app(&name)
            .await?
            .filter(|app| app.status != AppStatus::Removed);
        let previous = match &existing {
            Some(app) if app.latest_version != app.current_version => self
                .store
                .app_version(&name, app.latest_version)
                .await?
                .map(|newest| newest.config)
                .or_else(|| Some(app.config.clone())),
            Some(app) => Some(app.config.clone()),
            None => None,
        };
        // A new app that names no runtime gets the one this backend prefers.
        let defaulted;
        let request = match (previous.is_some(), self.backend.default_runtime()) {
            (false, Some(runtime)) if request.runtime.is_none() && request.image_uri.is_none() => {
                defaulted = DeployRequest {
                    runtime: Some(runtime.to_owned()),
                    ..request.clone()
                };
                &defaulted
            }
            _ => request,
        };
        let (name, config) =
            validate(request, previous.as_ref()).map_err(|e| AppError::Invalid(e.to_string()))?;
        if !matches!(config.code, Some(CodeLocation::Image { .. })) {
            self.backend
                .check_runtime(&config.runtime)
                .map_err(|why| AppError::Invalid(format!("runtime: {why}")))?;
        }
        let promote = request.promote.unwrap_or(true) || existing.is_none();
        Ok((name, config, promote, guard))
    }

    /// Stores a checked archive as the app's next version and runs it (the
    /// caller holds the app's lock); `promote` moves `live` to it.
    pub(super) async fn deploy_archive(
        &self,
        name: &AppName,
        config: &FunctionConfig,
        archive: Archive,
        promote: bool,
    ) -> Result<AppView, AppError> {
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
        let zip = archive.into_bytes();
        let stored = self
            .store
            .add_app_version(name, config, &zip, &sha, crate::support::now_ms(), promote)
            .await;
        let version = match stored {
            Ok(version) => version,
            Err(err) => {
                discard(unpacked).await;
                return Err(err.into());
            }
        };
        let target = self.code_dir(name, version);
        if let Err(err) = blocking(move || unpacked.install(&target)).await {
            // `run_version` unpacks it again from the zip.
            tracing::warn!(app = %name, version, error = %err, "could not move the unpacked code into place");
        }
        self.start_version(name, config, version, zip, promote)
            .await
    }

    /// Runs a version just stored; `promote`: it takes `live` and the app
    /// is settled `ACTIVE` (or `ERROR`).
    async fn start_version(
        &self,
        name: &AppName,
        config: &FunctionConfig,
        version: i64,
        zip: Vec<u8>,
        promote: bool,
    ) -> Result<AppView, AppError> {
        if !promote {
            // Published beside the live version: reachable as `v<N>--<app>`.
            self.run_version(name, version, config, Some(zip)).await?;
            self.mark_running(name.as_str(), version, config.payload_format);
            tracing::info!(app = %name, version, "version deployed without taking traffic");
            return self.view(name, false).await;
        }
        let run = async {
            self.run_version(name, version, config, Some(zip)).await?;
            if self.backend.routes_aliases() {
                self.backend
                    .set_alias(name, LIVE, &AliasTarget::to(version))
                    .await?;
            }
            Ok::<_, AppError>(())
        };
        if let Err(err) = self.beating(name, version, run).await {
            return Err(self.failed_deploy(name, version, err).await);
        }
        // A new app (or one not served) is `DEPLOYED` until now.
        let settled = self
            .store
            .settle_app_deploy(
                name,
                version,
                AppStatus::Active,
                None,
                crate::support::now_ms(),
            )
            .await?;
        if !settled {
            return Err(self.superseded(name, version).await);
        }
        let mut ran = vec![(version, config.payload_format)];
        match self.store.get_app(name).await? {
            Some(record) => {
                if let Err(err) = self.ensure_running(name, &record, &mut ran).await {
                    tracing::warn!(app = %name, error = %err, "could not run the versions the app's aliases name");
                }
                self.serve(name.as_str(), record.aliases, &ran);
            }
            None => return Err(AppError::NotFound(name.to_string())),
        }
        tracing::info!(app = %name, version, runtime = %config.runtime, "app deployed");
        self.view(name, false).await
    }

    /// Settles a deploy of `version` that failed, and gives the error the
    /// caller learns. A conflict or throttling left the running function as
    /// it was: an app being served stays served, with the failure noted.
    async fn failed_deploy(&self, name: &AppName, version: i64, err: AppError) -> AppError {
        let transient = matches!(
            err,
            AppError::Backend(FunctionError::Conflict(_) | FunctionError::Unavailable { .. })
        );
        let status = if transient && self.serves(name.as_str()) {
            AppStatus::Active
        } else {
            self.stop_serving(name.as_str());
            AppStatus::Error
        };
        let note = format!(
            "deploying version {version} failed: {}",
            crate::support::with_causes(&err)
        );
        // Unless another replica changed the app meanwhile: its change stands.
        match self
            .store
            .settle_app_deploy(name, version, status, Some(&note), crate::support::now_ms())
            .await
        {
            Ok(true) => {}
            // The failure is still what the caller learns.
            Ok(false) => drop(self.superseded(name, version).await),
            Err(store) => return store.into(),
        }
        err
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
        let mut ran = Vec::new();
        self.ensure_running(&app, &record, &mut ran).await?;
        self.serve(name, record.aliases.clone(), &ran);
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
        self.stop_serving(name);
        // As the seed leaves its Lambda.
        self.backend.release(&app).await?;
        self.set_status(&app, AppStatus::Inactive).await
    }

    /// Stops serving and deletes the function; the record and versions stay.
    pub async fn remove(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (app, _) = self.record(name).await?;
        let _guard = self.lock(&app)?;
        self.stop_serving(name);
        self.stop(&app).await?;
        let _ = tokio::fs::remove_dir_all(self.code_root.join(app.as_str())).await;
        self.set_status(&app, AppStatus::Removed).await
    }
}

/// Removes unpacked code that will not be used, off the async threads.
async fn discard(unpacked: Unpacked) {
    let _ = tokio::task::spawn_blocking(move || drop(unpacked)).await;
}

/// A file an upload streams into; removed when dropped (whatever became of
/// the request: read, refused, or its client gone).
#[derive(Debug)]
pub struct Upload(std::path::PathBuf);

impl Upload {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
