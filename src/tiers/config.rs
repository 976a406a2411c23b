//! Tier details from the `[tiers.<name>]` tables of the configuration.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{TierDetails, TierError, TierSource};

/// Tiers read once from the configuration file.
#[derive(Debug, Clone, Default)]
pub struct ConfigTiers {
    tiers: BTreeMap<String, Map<String, Value>>,
}

impl ConfigTiers {
    pub fn new(tiers: BTreeMap<String, Map<String, Value>>) -> Self {
        Self { tiers }
    }
}

#[async_trait]
impl TierSource for ConfigTiers {
    fn name(&self) -> &'static str {
        "config"
    }

    async fn get(&self, tier: &str) -> Result<TierDetails, TierError> {
        match self.tiers.get(tier) {
            Some(values) => Ok(TierDetails {
                tier: tier.to_owned(),
                values: values.clone(),
            }),
            None => Err(TierError::NotFound(format!(
                "unknown tier '{tier}': no [tiers.{tier}] table in the configuration"
            ))),
        }
    }
}
