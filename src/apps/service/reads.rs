//! What the API reads: the list of apps, one app (with its versions and
//! what the function backend reports of it), its status.

use std::collections::HashMap;

use super::{AppError, AppService, AppStatusView, AppVersionView, AppView};
use crate::function_config::AppName;
use crate::store::AppRecord;

impl AppService {
    pub async fn list(&self) -> Result<Vec<AppView>, AppError> {
        let mut domains: HashMap<AppName, Vec<String>> = HashMap::new();
        for (domain, app) in self.store.domains(None).await? {
            domains.entry(app).or_default().push(domain);
        }
        Ok(self
            .store
            .list_apps()
            .await?
            .into_iter()
            .map(|r| {
                let domains = domains.remove(&r.name).unwrap_or_default();
                AppView::of(r, &self.base_domain, domains, None)
            })
            .collect())
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
        self.to_view(record, versions).await
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

    async fn to_view(
        &self,
        record: AppRecord,
        versions: Option<Vec<AppVersionView>>,
    ) -> Result<AppView, AppError> {
        let domains = self
            .store
            .domains(Some(&record.name))
            .await?
            .into_iter()
            .map(|(domain, _)| domain)
            .collect();
        Ok(AppView::of(record, &self.base_domain, domains, versions))
    }

    pub async fn get(&self, name: &str) -> Result<AppView, AppError> {
        let (app, record) = self.record(name).await?;
        let versions = self.versions(&app).await?;
        let mut view = self.to_view(record, Some(versions)).await?;
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
