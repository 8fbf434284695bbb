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
    /// AWS EC2 (built with the `aws` feature).
    #[cfg(feature = "aws")]
    AwsEc2(collectors::aws_ec2::AwsEc2Config),
}

/// The collector types `[[collectors]] type = ...` accepts.
pub const TYPES: &[&str] = &["inventory", "aws-ec2"];

/// The error for `aws-ec2` in a binary built without the `aws` feature.
pub const NO_AWS: &str = "this infragraph was built without AWS support: rebuild with `cargo build --release --features aws` (or `cargo run --features aws -- ...`)";

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
            #[cfg(feature = "aws")]
            "aws-ec2" => {
                let cfg = collectors::aws_ec2::AwsEc2Config::deserialize(options)
                    .map_err(|e| anyhow::anyhow!("collector 'aws-ec2': {e}"))?;
                cfg.validate()?;
                Ok(ConfiguredCollector::AwsEc2(cfg))
            }
            #[cfg(not(feature = "aws"))]
            "aws-ec2" => anyhow::bail!("collector 'aws-ec2': {NO_AWS}"),
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
            #[cfg(feature = "aws")]
            ConfiguredCollector::AwsEc2(_) => collectors::aws_ec2::TYPE,
        }
    }

    /// What one run covers.
    pub fn scope(&self) -> String {
        match self {
            ConfiguredCollector::Inventory(c) => c.scope(),
            #[cfg(feature = "aws")]
            ConfiguredCollector::AwsEc2(c) => c.scope(),
        }
    }

    /// Runs the collector once and records the run in the store (one
    /// transaction). A failed collection is recorded as a failed run.
    #[tracing::instrument(skip_all, fields(collector = self.type_name(), scope = %self.scope()))]
    pub async fn run(&self, store: &Store) -> anyhow::Result<Run> {
        let started_at = now_ms();
        let outcome = match self {
            ConfiguredCollector::Inventory(c) => collectors::inventory::collect(c).await,
            #[cfg(feature = "aws")]
            ConfiguredCollector::AwsEc2(c) => collectors::aws_ec2::collect(c).await,
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
