//! The proxy's negative cache: names the store recently had no active app
//! for, and the budget of store lookups for names it does not serve; imports
//! nothing of the service.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the proxy remembers that the store had no active app by a name
/// (an unknown host, or an app not `ACTIVE`) before it looks again.
pub(super) const MISS_TTL: Duration = Duration::from_secs(3);
/// Most names remembered as misses; beyond, expired ones go, then all.
const MAX_MISSES: usize = 4096;
/// Most store lookups for names the proxy does not serve, per second, however
/// many distinct unknown hosts are asked for; beyond, they answer 404 at once.
const MISS_LOOKUPS_PER_SEC: u32 = 20;

/// Names the store recently had no active app for, and the lookup budget.
pub(super) struct Misses {
    names: HashMap<String, Instant>,
    window: Instant,
    lookups_in_window: u32,
}

impl Default for Misses {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
            window: Instant::now(),
            lookups_in_window: 0,
        }
    }
}

impl Misses {
    /// Whether the store had no active app by `name` a moment ago.
    pub(super) fn recent(&self, name: &str) -> bool {
        self.names
            .get(name)
            .is_some_and(|at| at.elapsed() < MISS_TTL)
    }

    /// Whether the lookup budget allows one more lookup now (and takes it).
    pub(super) fn take_lookup(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.lookups_in_window = 0;
        }
        if self.lookups_in_window >= MISS_LOOKUPS_PER_SEC {
            return false;
        }
        self.lookups_in_window += 1;
        true
    }

    pub(super) fn remember(&mut self, name: &str) {
        if self.names.len() >= MAX_MISSES {
            self.names.retain(|_, at| at.elapsed() < MISS_TTL);
            if self.names.len() >= MAX_MISSES {
                self.names.clear();
            }
        }
        self.names.insert(name.to_owned(), Instant::now());
    }
}
