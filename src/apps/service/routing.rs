//! What the proxy serves: the table of active apps (name → payload format
//! and the version running here), `route` with its store lookup behind the
//! negative cache, and `invoke`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::AppService;
use crate::function_config::AppName;
use crate::functions::FunctionError;
use crate::proxy::PayloadFormat;
use crate::store::AppStatus;

/// How the proxy serves an app: the event format its function takes and the
/// version running here (sent back as `x-app-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub format: PayloadFormat,
    pub version: i64,
}

/// How long a first request waits for a change of its app under way here.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl AppService {
    /// How many times the proxy looked in the store for an app it did not
    /// serve (bounded by a short negative cache and a rate limit).
    pub fn miss_lookups(&self) -> u64 {
        self.miss_lookups.load(Ordering::Relaxed)
    }

    /// Serves `running` (payload format, version) under `name`, or stops serving it.
    pub(super) fn set_active(&self, name: &str, running: Option<(PayloadFormat, i64)>) {
        if let Ok(mut active) = self.active.write() {
            match running {
                Some(running) => active.insert(name.to_owned(), running),
                None => active.remove(name),
            };
        }
    }

    /// The version this process serves under `name`.
    pub(super) fn running_version(&self, name: &str) -> Option<i64> {
        self.active.read().ok()?.get(name).map(|(_, v)| *v)
    }

    /// The payload format of an app this process serves.
    pub(super) fn served_format(&self, name: &str) -> Option<PayloadFormat> {
        self.served(name).map(|r| r.format)
    }

    /// How this process serves `name`, if it does.
    fn served(&self, name: &str) -> Option<Route> {
        self.active
            .read()
            .ok()?
            .get(name)
            .map(|&(format, version)| Route { format, version })
    }

    /// How an active app is served (its payload format and version), or
    /// `None` (the proxy answers 404).
    ///
    /// An app this process does not serve yet (deployed through another
    /// replica since the last sync) is looked up in the store and, if it is
    /// `ACTIVE`, served from this request on. Names the store has no active
    /// app for are remembered for [`MISS_TTL`](super::misses::MISS_TTL), and
    /// lookups are rate-limited, so unknown hosts cannot hammer the store.
    pub async fn route(&self, name: &str) -> Option<Route> {
        if let Some(route) = self.served(name) {
            return Some(route);
        }
        let app = AppName::parse(name).ok()?;
        if self.recent_miss(name) {
            return None;
        }
        // Concurrent first requests wait for one lookup, then find the app
        // served (or remembered as a miss).
        let _one_at_a_time = self.lookup.lock().await;
        if let Some(route) = self.served(name) {
            return Some(route);
        }
        let allowed = self
            .misses
            .lock()
            .map(|mut misses| !misses.recent(name) && misses.take_lookup())
            .unwrap_or(false);
        if !allowed {
            return None;
        }
        self.miss_lookups.fetch_add(1, Ordering::Relaxed);
        let record = match self.store.get_app(&app).await {
            Ok(Some(record)) if record.status == AppStatus::Active => record,
            Ok(_) => {
                if let Ok(mut misses) = self.misses.lock() {
                    misses.remember(name);
                }
                return None;
            }
            Err(err) => {
                tracing::warn!(app = name, error = %err, "could not look up an app in the store");
                return None;
            }
        };
        // A change of this app through this process (the store sync
        // following it, an activation) is under way: its outcome stands.
        let Some(_guard) = self.lock_waiting(&app, LOCK_WAIT).await else {
            return self.served(name);
        };
        if let Some(route) = self.served(name) {
            return Some(route);
        }
        if let Err(err) = self.follow_record(&app, &record, false).await {
            tracing::warn!(app = %app, version = record.current_version, error = %err, "could not serve an app found in the store");
            return None;
        }
        tracing::info!(app = %app, version = record.current_version, "app found in the store on its first request: serving it");
        self.served(name)
    }

    fn recent_miss(&self, name: &str) -> bool {
        self.misses
            .lock()
            .map(|misses| misses.recent(name))
            .unwrap_or(true)
    }

    /// Invokes an active app.
    pub async fn invoke(&self, name: &AppName, event: Vec<u8>) -> Result<Vec<u8>, FunctionError> {
        self.backend.invoke(name, event).await
    }
}
