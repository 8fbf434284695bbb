//! The collectors this binary knows, as configured values, and how one run
//! of any of them is executed and recorded. New collectors add a variant.

use std::path::Path;

use serde::Deserialize;

use crate::model::{Run, now_ms};
use crate::store::{RunInput, Store};

/// A collector with a validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfiguredCollector {
    /// Inventory files.
    Inventory(collectors::inventory::InventoryConfig),
}

/// The collector types `[[collectors]] type = ...` accepts.
pub const TYPES: &[&str] = &["inventory"];

impl ConfiguredCollector {
    /// Builds a collector from its type and options (a TOML table). Relative
    /// paths are resolved against `base` (the config file's folder).
    pub fn from_options(kind: &str, options: toml::Table, base: &Path) -> anyhow::Result<Self> {
        match kind {
            "inventory" => {
                let mut cfg = collectors::inventory::InventoryConfig::deserialize(options)
                    .map_err(|e| anyhow::anyhow!("collector 'inventory': {e}"))?;
                for p in &mut cfg.paths {
                    if p.is_relative() {
                        *p = base.join(&*p);
                    }
                }
                cfg.validate()?;
                Ok(ConfiguredCollector::Inventory(cfg))
            }
            other => anyhow::bail!(
                "unknown collector type '{other}' (known types: {})",
                TYPES.join(", ")
            ),
        }
    }

    /// The collector type, e.g. `inventory`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConfiguredCollector::Inventory(_) => "inventory",
        }
    }

    /// What one run covers.
    pub fn scope(&self) -> String {
        match self {
            ConfiguredCollector::Inventory(c) => c.scope(),
        }
    }

    /// Runs the collector once and records the run in the store (one
    /// transaction). A failed collection is recorded as a failed run.
    #[tracing::instrument(skip_all, fields(collector = self.type_name(), scope = %self.scope()))]
    pub async fn run(&self, store: &Store) -> anyhow::Result<Run> {
        let started_at = now_ms();
        let outcome = match self {
            ConfiguredCollector::Inventory(c) => collectors::inventory::collect(c).await,
        }
        .map_err(|e| e.to_string());
        if let Err(err) = &outcome {
            tracing::warn!(error = %err, "collection failed");
        }
        store
            .apply(RunInput {
                collector: self.type_name().to_string(),
                scope: self.scope(),
                started_at,
                outcome,
                retract: Vec::new(),
                additive: false,
            })
            .await
    }
}
