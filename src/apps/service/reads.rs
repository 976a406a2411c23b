//! What the API reads: the list of apps, one app (with its versions and
//! what the function backend reports of it), its status.

use super::{AppError, AppService, AppStatusView, AppVersionView, AppView};
use crate::function_config::AppName;
use crate::store::AppRecord;

impl AppService {
    pub async fn list(&self) -> Result<Vec<AppView>, AppError> {
        self.store
            .list_apps()
            .await?
            .into_iter()
            .map(|r| Ok(self.to_view(r, None)))
            .collect()
    }

    pub async fn status(&self, name: &str) -> Result<AppStatusView, AppError> {
        let (_, record) = self.record(name).await?;
        Ok(AppStatusView {
            name: record.name.into_string(),
            status: record.status,
        })
    }

    /// An app, with its versions when `details`.
    pub async fn view(&self, name: &AppName, details: bool) -> Result<AppView, AppError> {
        let (_, record) = self.record(name.as_str()).await?;
        let versions = if details {
            Some(self.versions(name).await?)
        } else {
            None
        };
        Ok(self.to_view(record, versions))
    }

    async fn versions(&self, name: &AppName) -> Result<Vec<AppVersionView>, AppError> {
        Ok(self
            .store
            .app_versions(name)
            .await?
            .into_iter()
            .map(AppVersionView::of)
            .collect())
    }

    fn to_view(&self, record: AppRecord, versions: Option<Vec<AppVersionView>>) -> AppView {
        AppView::of(record, &self.base_domain, versions)
    }

    pub async fn get(&self, name: &str) -> Result<AppView, AppError> {
        let (app, record) = self.record(name).await?;
        let versions = self.versions(&app).await?;
        let mut view = self.to_view(record, Some(versions));
        view.function = match self.backend.describe(&app).await {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(app = %app, error = %err, "could not describe the function");
                None
            }
        };
        Ok(view)
    }
}
