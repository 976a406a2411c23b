//! What the proxy serves: the table of active apps (each one's aliases and
//! the versions running here), custom domains, `route` with its store
//! lookup behind the negative cache, and `invoke`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::AppService;
use crate::function_config::{AliasTarget, Aliases, AppName, LIVE};
use crate::functions::{FunctionError, Invoked, Target};
use crate::proxy::PayloadFormat;
use crate::store::AppStatus;

/// Which of an app's functions a request asks for, read from its host's
/// first label: `<app>` (its `live` alias), `<alias>--<app>`, `v<N>--<app>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The `live` alias: what `<app>` and custom domains serve.
    Live,
    Alias(String),
    Version(i64),
}

impl Selector {
    /// The selector and app name a host's first label holds (app names and
    /// aliases cannot hold `--`).
    pub fn parse_label(label: &str) -> (Selector, &str) {
        let Some((head, app)) = label.split_once("--") else {
            return (Selector::Live, label);
        };
        let version = head
            .strip_prefix('v')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok());
        match version {
            Some(version) => (Selector::Version(version), app),
            None if head == LIVE => (Selector::Live, app),
            None => (Selector::Alias(head.to_owned()), app),
        }
    }

    /// How the proxy names it to the user (`live`, `beta`, `v3`).
    pub fn describe(&self) -> String {
        match self {
            Selector::Live => LIVE.to_owned(),
            Selector::Alias(alias) => alias.clone(),
            Selector::Version(version) => format!("v{version}"),
        }
    }
}

/// How the proxy serves one request: the event format the function takes,
/// the version picked (sent back as `x-app-version` unless the backend says
/// which ran) and, for a backend that routes aliases, the alias to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub format: PayloadFormat,
    pub version: i64,
    alias: Option<String>,
}

/// What this process serves of an active app.
#[derive(Debug, Clone)]
pub(super) struct Serving {
    pub(super) aliases: Aliases,
    /// The versions running here, with their payload formats.
    pub(super) running: HashMap<i64, PayloadFormat>,
}

/// How long a first request waits for a change of its app under way here.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl AppService {
    /// How many times the proxy looked in the store for an app it did not
    /// serve (bounded by a short negative cache and a rate limit).
    pub fn miss_lookups(&self) -> u64 {
        self.miss_lookups.load(Ordering::Relaxed)
    }

    /// Stops serving `name` here.
    pub(super) fn stop_serving(&self, name: &str) {
        if let Ok(mut active) = self.active.write() {
            active.remove(name);
        }
    }

    /// Serves `name` with `aliases`; `ran` (versions and their formats) run
    /// here now, besides those that ran already.
    pub(super) fn serve(&self, name: &str, aliases: Aliases, ran: &[(i64, PayloadFormat)]) {
        if let Ok(mut active) = self.active.write() {
            let serving = active.entry(name.to_owned()).or_insert_with(|| Serving {
                aliases: aliases.clone(),
                running: HashMap::new(),
            });
            serving.aliases = aliases;
            serving.running.extend(ran.iter().copied());
        }
    }

    /// Notes that `version` of a served app runs here now.
    pub(super) fn mark_running(&self, name: &str, version: i64, format: PayloadFormat) {
        if let Ok(mut active) = self.active.write() {
            if let Some(serving) = active.get_mut(name) {
                serving.running.insert(version, format);
            }
        }
    }

    /// The aliases this process serves `name` with, if it serves it.
    pub(super) fn served_aliases(&self, name: &str) -> Option<Aliases> {
        Some(self.active.read().ok()?.get(name)?.aliases.clone())
    }

    /// Whether `version` of `name` runs here.
    pub(super) fn runs_here(&self, name: &str, version: i64) -> bool {
        self.active
            .read()
            .ok()
            .and_then(|active| active.get(name).map(|s| s.running.contains_key(&version)))
            .unwrap_or(false)
    }

    /// Whether this process serves `name`.
    pub(super) fn serves(&self, name: &str) -> bool {
        self.active
            .read()
            .map(|active| active.contains_key(name))
            .unwrap_or(false)
    }

    /// The app a custom domain names (a host without its port, lowercase).
    pub fn domain_app(&self, host: &str) -> Option<String> {
        let domains = self.domains.read().ok()?;
        domains.get(host).map(|app| app.to_string())
    }

    /// Whether this process knows any custom domain (most hosts then need no lookup).
    pub fn has_domains(&self) -> bool {
        self.domains.read().map(|d| !d.is_empty()).unwrap_or(false)
    }

    /// How this process serves `selector` of `name` now, if it does: an
    /// alias's version drawn here (unless the backend routes aliases).
    fn pick(&self, name: &str, selector: &Selector) -> Option<Route> {
        let active = self.active.read().ok()?;
        let serving = active.get(name)?;
        match selector {
            Selector::Version(version) => Some(Route {
                format: *serving.running.get(version)?,
                version: *version,
                alias: None,
            }),
            Selector::Live => self.pick_alias(serving, LIVE, &serving.aliases.live),
            Selector::Alias(alias) => self.pick_alias(serving, alias, serving.aliases.get(alias)?),
        }
    }

    /// A request of `alias` (`target`): the version drawn here, or the
    /// alias named to a backend that routes aliases.
    fn pick_alias(&self, serving: &Serving, alias: &str, target: &AliasTarget) -> Option<Route> {
        let format = *serving.running.get(&target.version)?;
        if self.backend.routes_aliases() {
            return Some(Route {
                format,
                version: target.version,
                alias: Some(alias.to_owned()),
            });
        }
        let drawn = match target.routing {
            Some(_) => target.pick(fastrand::f64()),
            None => target.version,
        };
        Some(match serving.running.get(&drawn) {
            Some(format) => Route {
                format: *format,
                version: drawn,
                alias: None,
            },
            None => Route {
                format,
                version: target.version,
                alias: None,
            },
        })
    }

    /// How `selector` of an active app is served (its payload format and
    /// version), or `None` (the proxy answers 404).
    ///
    /// An app this process does not serve yet (deployed through another
    /// replica since the last sync) is looked up in the store and, if it is
    /// `ACTIVE`, served from this request on; so is a version of it not
    /// running here yet. Names the store has nothing active for are
    /// remembered for [`MISS_TTL`](super::misses::MISS_TTL), and lookups
    /// are rate-limited, so unknown hosts cannot hammer the store.
    pub async fn route(&self, name: &str, selector: &Selector) -> Option<Route> {
        if let Some(route) = self.pick(name, selector) {
            return Some(route);
        }
        let app = AppName::parse(name).ok()?;
        let key = match selector {
            Selector::Live => name.to_owned(),
            other => format!("{}--{name}", other.describe()),
        };
        if self.recent_miss(&key) {
            return None;
        }
        // Concurrent first requests wait for one lookup, then find the app
        // served (or remembered as a miss).
        let _one_at_a_time = self.lookup.lock().await;
        if let Some(route) = self.pick(name, selector) {
            return Some(route);
        }
        let allowed = self
            .misses
            .lock()
            .map(|mut misses| !misses.recent(&key) && misses.take_lookup())
            .unwrap_or(false);
        if !allowed {
            return None;
        }
        self.miss_lookups.fetch_add(1, Ordering::Relaxed);
        let found = self.look_up(&app, selector).await;
        if !found {
            if let Ok(mut misses) = self.misses.lock() {
                misses.remember(&key);
            }
        }
        self.pick(name, selector)
    }

    /// Serves the app (and the version `selector` names) from the store if
    /// it is active there; whether it found something to serve.
    async fn look_up(&self, app: &AppName, selector: &Selector) -> bool {
        let record = match self.store.get_app(app).await {
            Ok(Some(record)) if record.status == AppStatus::Active => record,
            Ok(_) => return false,
            Err(err) => {
                tracing::warn!(app = %app, error = %err, "could not look up an app in the store");
                return false;
            }
        };
        // A change of this app through this process (the store sync
        // following it, an activation) is under way: its outcome stands.
        let Some(_guard) = self.lock_waiting(app, LOCK_WAIT).await else {
            return match selector {
                Selector::Version(version) => self.runs_here(app.as_str(), *version),
                _ => self.serves(app.as_str()),
            };
        };
        if !self.serves(app.as_str()) {
            if let Err(err) = self.follow_record(app, &record, false).await {
                tracing::warn!(app = %app, version = record.current_version, error = %err, "could not serve an app found in the store");
                return false;
            }
            tracing::info!(app = %app, version = record.current_version, "app found in the store on its first request: serving it");
        }
        // The versions the request may go to, each started here if it is
        // not running yet (one that failed to start before is tried again).
        let versions: Vec<i64> = match selector {
            Selector::Version(version) => vec![*version],
            Selector::Live => record.aliases.live.versions().collect(),
            Selector::Alias(alias) => match self.served_aliases(app.as_str()) {
                Some(aliases) => match aliases.get(alias) {
                    Some(target) => target.versions().collect(),
                    None => return false,
                },
                None => return false,
            },
        };
        for version in versions {
            if self.runs_here(app.as_str(), version) {
                continue;
            }
            let stored = match self.store.app_version(app, version).await {
                Ok(Some(stored)) => stored,
                Ok(None) => return false,
                Err(err) => {
                    tracing::warn!(app = %app, version, error = %err, "could not look up a version in the store");
                    return false;
                }
            };
            let config = stored.config;
            if let Err(err) = self.run_version(app, version, &config, None).await {
                tracing::warn!(app = %app, version, error = %err, "could not run a version a request asked for");
                return false;
            }
            self.mark_running(app.as_str(), version, config.payload_format);
        }
        true
    }

    fn recent_miss(&self, key: &str) -> bool {
        self.misses
            .lock()
            .map(|misses| misses.recent(key))
            .unwrap_or(true)
    }

    /// Invokes what `route` picked of an active app.
    pub async fn invoke(
        &self,
        name: &AppName,
        route: &Route,
        event: Vec<u8>,
    ) -> Result<Invoked, FunctionError> {
        let target = match &route.alias {
            Some(alias) => Target::Alias(alias),
            None => Target::Version(route.version),
        };
        self.backend.invoke_target(name, target, event).await
    }

    /// What an Invoke API call names: the app's newest version when
    /// unqualified (or `$LATEST`, as Lambda's `$LATEST`), a version by its
    /// number, an alias by its name; started here if it does not run yet.
    pub async fn resolve_function(
        &self,
        name: &str,
        qualifier: Option<&str>,
    ) -> Result<(AppName, Route), FunctionError> {
        let app = AppName::parse(name).map_err(|_| FunctionError::NotFound)?;
        let selector = match qualifier {
            None | Some("$LATEST") => {
                let record = self
                    .store
                    .get_app(&app)
                    .await
                    .map_err(|e| FunctionError::unavailable_because("reading the app", e))?
                    .ok_or(FunctionError::NotFound)?;
                Selector::Version(record.latest_version)
            }
            Some(number) if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
                Selector::Version(number.parse().map_err(|_| FunctionError::NotFound)?)
            }
            Some(LIVE) => Selector::Live,
            Some(alias) => Selector::Alias(alias.to_owned()),
        };
        let route = self
            .route(name, &selector)
            .await
            .ok_or(FunctionError::NotFound)?;
        Ok((app, route))
    }

    /// An Invoke API call: the version that ran, and its outcome (a
    /// function's own failure is the inner error; the call's, the outer).
    pub async fn invoke_function(
        &self,
        name: &str,
        qualifier: Option<&str>,
        payload: Vec<u8>,
    ) -> Result<(i64, Result<Vec<u8>, FunctionError>), FunctionError> {
        let (app, route) = self.resolve_function(name, qualifier).await?;
        match self.invoke(&app, &route, payload).await {
            Ok(invoked) => Ok((
                invoked.version.unwrap_or(route.version),
                Ok(invoked.payload),
            )),
            Err(err @ (FunctionError::Failed(_) | FunctionError::Timeout(_))) => {
                Ok((route.version, Err(err)))
            }
            Err(err) => Err(err),
        }
    }
}
