//! The AWS EC2 collector: regions, zones, VPCs, subnets, security groups,
//! instances, volumes, interfaces, route tables, gateways, peerings, transit
//! gateways and elastic IPs, discovered through aws-sdk-ec2.
//!
//! One scope per account and region (`123456789012/us-east-1`). Every
//! (account, region) pair is collected on its own: one that fails (bad
//! credentials, AccessDenied, an endpoint that does not answer) becomes a
//! warning naming the account, region and reason, and makes the run partial,
//! so the store retires nothing; the others are still reported.
//!
//! Ids are ARNs (`arn:aws:ec2:us-east-1:123456789012:instance/i-0abc`), with
//! the account taken from the API's owner fields where it has them and from
//! STS `GetCallerIdentity` otherwise. Regions are `aws:region/us-east-1`;
//! zones are `aws:az/use1-az1` (the zone *id*, the same physical zone in every
//! account, named after the account's zone name). Services found through tags
//! are `svc:NAME`, the id an inventory file uses for the same service.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::{Filter, IpPermission, Tag};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    CollectError, Collection, ConfigError, ObservedRelation, ObservedResource, ScopeBatch, kinds,
};

/// The SDK crates, re-exported so callers (and tests) use the same versions.
pub mod sdk {
    pub use aws_config;
    pub use aws_sdk_ec2;
    pub use aws_sdk_sts;
}

/// Collector type name.
pub const TYPE: &str = "aws-ec2";

/// Relation kind: security group `from` accepts traffic from `to` (another
/// group, or a subnet a CIDR rule covers). Attributes list the ports. It
/// carries no failure impact.
pub const ALLOWS_TRAFFIC_FROM: &str = "allows_traffic_from";
/// Relation kind: VPC `from` is attached to transit gateway `to` (no impact;
/// the dependency is the route table's `depends_on` the transit gateway).
pub const CONNECTED_TO: &str = "connected_to";
/// Relation kind: elastic IP `from` is associated with instance or interface
/// `to` (no impact).
pub const ASSOCIATED_WITH: &str = "associated_with";

fn default_service_tags() -> Vec<String> {
    vec!["Service".into(), "service".into(), "app".into()]
}

fn default_max_attempts() -> u32 {
    3
}

fn default_concurrency() -> usize {
    4
}

/// Configuration of the AWS EC2 collector (`[[collectors]] type = "aws-ec2"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsEc2Config {
    /// Regions to collect. Empty: the credentials' default region, unless
    /// `all_regions`.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Collect every region enabled for each account (DescribeRegions).
    #[serde(default)]
    pub all_regions: bool,
    /// Named profile of the shared AWS config/credentials files.
    #[serde(default)]
    pub profile: Option<String>,
    /// Role ARNs to assume, one per account. Empty: the base credentials'
    /// own account only.
    #[serde(default, alias = "assume_roles")]
    pub roles: Vec<String>,
    /// External id passed when assuming the roles.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Endpoint for every AWS call (a VPC endpoint, a proxy, a test server).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Per-region EC2 endpoints, overriding `endpoint_url` for that region.
    #[serde(default)]
    pub region_endpoint_urls: BTreeMap<String, String>,
    /// Tag keys naming the service an instance belongs to; the first one an
    /// instance has wins.
    #[serde(default = "default_service_tags")]
    pub service_tags: Vec<String>,
    /// Attempts per API call (the SDK's standard retry with backoff).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How many (account, region) pairs are collected at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Instances asked for per DescribeInstances page (5..=1000).
    #[serde(default = "default_page_size")]
    pub page_size: i32,
}

fn default_page_size() -> i32 {
    1000
}

impl Default for AwsEc2Config {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            all_regions: false,
            profile: None,
            roles: Vec::new(),
            external_id: None,
            endpoint_url: None,
            region_endpoint_urls: BTreeMap::new(),
            service_tags: default_service_tags(),
            max_attempts: default_max_attempts(),
            concurrency: default_concurrency(),
            page_size: default_page_size(),
        }
    }
}

fn config_error(field: &'static str, message: String) -> ConfigError {
    ConfigError {
        collector: TYPE,
        field,
        message,
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
pub fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > "role/".len()
}

fn is_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace)
}

impl AwsEc2Config {
    /// Checks the configuration; the error names the field and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.all_regions && !self.regions.is_empty() {
            return Err(config_error(
                "regions",
                "give either regions or all_regions, not both".into(),
            ));
        }
        for r in &self.regions {
            if !is_region(r) {
                return Err(config_error(
                    "regions",
                    format!("'{r}' is not a region name (like us-east-1)"),
                ));
            }
        }
        for r in &self.roles {
            if !is_role_arn(r) {
                return Err(config_error(
                    "roles",
                    format!("'{r}' is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"),
                ));
            }
        }
        if let Some(u) = &self.endpoint_url
            && !is_url(u)
        {
            return Err(config_error(
                "endpoint_url",
                format!("'{u}' is not an http(s) URL"),
            ));
        }
        for (r, u) in &self.region_endpoint_urls {
            if !is_region(r) {
                return Err(config_error(
                    "region_endpoint_urls",
                    format!("'{r}' is not a region name"),
                ));
            }
            if !is_url(u) {
                return Err(config_error(
                    "region_endpoint_urls",
                    format!("'{u}' (for {r}) is not an http(s) URL"),
                ));
            }
        }
        if self.service_tags.iter().any(|t| t.trim().is_empty()) {
            return Err(config_error(
                "service_tags",
                "tag keys must not be empty".into(),
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return Err(config_error(
                "max_attempts",
                format!("{} is outside 1..=10", self.max_attempts),
            ));
        }
        if !(5..=1000).contains(&self.page_size) {
            return Err(config_error(
                "page_size",
                format!("{} is outside 5..=1000", self.page_size),
            ));
        }
        if self.concurrency == 0 || self.concurrency > 64 {
            return Err(config_error(
                "concurrency",
                format!("{} is outside 1..=64", self.concurrency),
            ));
        }
        Ok(())
    }

    /// What one run covers, for the run record.
    pub fn scope(&self) -> String {
        let regions = if self.all_regions {
            "all regions".to_string()
        } else if self.regions.is_empty() {
            "default region".to_string()
        } else {
            self.regions.join(",")
        };
        let accounts = match self.roles.len() {
            0 => match &self.profile {
                Some(p) => format!("profile {p}"),
                None => "default credentials".to_string(),
            },
            1 => "1 role".to_string(),
            n => format!("{n} roles"),
        };
        format!("{regions}; {accounts}")
    }
}

/// Collects with the standard AWS credential chain (environment, profile,
/// SSO, web identity, container and instance metadata).
pub async fn collect(cfg: &AwsEc2Config) -> Result<Collection, CollectError> {
    cfg.validate()
        .map_err(|e| CollectError::Invalid(e.to_string()))?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = cfg.regions.first() {
        // The regions are given: no need to look for a default one (which
        // would ask the instance metadata service off EC2).
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &cfg.profile {
        loader = loader.profile_name(p);
    }
    if let Some(u) = &cfg.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    let base = loader.load().await;
    collect_with(cfg, base).await
}

/// Collects with a given base SDK configuration (credentials, default
/// region); `cfg`'s endpoint, retry and timeout settings are applied on top.
pub async fn collect_with(cfg: &AwsEc2Config, base: SdkConfig) -> Result<Collection, CollectError> {
    cfg.validate()
        .map_err(|e| CollectError::Invalid(e.to_string()))?;
    let started = Instant::now();
    let mut builder = base
        .to_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .operation_attempt_timeout(Duration::from_secs(60))
                .operation_timeout(Duration::from_secs(180))
                .build(),
        );
    if let Some(u) = &cfg.endpoint_url {
        builder = builder.endpoint_url(u);
    }
    let base = builder.build();
    if base.credentials_provider().is_none() {
        return Err(CollectError::Invalid(
            "no AWS credentials provider: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where instance metadata answers".into(),
        ));
    }
    let home_region = cfg
        .regions
        .first()
        .cloned()
        .or_else(|| base.region().map(|r| r.to_string()));
    if home_region.is_none() && !cfg.all_regions {
        return Err(CollectError::Invalid(
            "no region: pass --regions (or regions = [...]), --all-regions, or set AWS_REGION"
                .into(),
        ));
    }
    let home_region = Region::new(home_region.unwrap_or_else(|| "us-east-1".to_string()));

    // One SDK configuration per account: the base credentials, or each role.
    let mut accounts: Vec<(String, SdkConfig)> = Vec::new();
    if cfg.roles.is_empty() {
        let label = match &cfg.profile {
            Some(p) => format!("profile {p}"),
            None => "default credentials".to_string(),
        };
        accounts.push((label, base.clone()));
    } else {
        for role in &cfg.roles {
            let mut b = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("infragraph")
                .region(home_region.clone())
                .configure(&base);
            if let Some(x) = &cfg.external_id {
                b = b.external_id(x);
            }
            let provider = b.build().await;
            let conf = base
                .to_builder()
                .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                    provider,
                ))
                .build();
            accounts.push((role.clone(), conf));
        }
    }

    let mut warnings = Vec::new();
    let mut tasks: Vec<(String, String, SdkConfig)> = Vec::new();
    for (label, conf) in &accounts {
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(conf)
                .region(home_region.clone())
                .build(),
        );
        let account = match sts.get_caller_identity().send().await {
            Ok(out) => match out.account {
                Some(a) => a,
                None => {
                    warnings.push(format!(
                        "{label}: STS GetCallerIdentity returned no account"
                    ));
                    continue;
                }
            },
            Err(e) => {
                warnings.push(format!(
                    "{label}: cannot identify the account (STS GetCallerIdentity): {}",
                    DisplayErrorContext(&e)
                ));
                continue;
            }
        };
        let regions = if cfg.all_regions {
            let ec2 = ec2_client(cfg, conf, home_region.as_ref());
            match ec2.describe_regions().send().await {
                Ok(out) => {
                    let mut r: Vec<String> = out
                        .regions
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|r| r.region_name)
                        .collect();
                    r.sort();
                    r
                }
                Err(e) => {
                    warnings.push(format!(
                        "{account} ({label}): cannot list regions (DescribeRegions): {}",
                        DisplayErrorContext(&e)
                    ));
                    continue;
                }
            }
        } else if cfg.regions.is_empty() {
            vec![home_region.to_string()]
        } else {
            cfg.regions.clone()
        };
        if tasks.iter().any(|(a, _, _)| *a == account) {
            tracing::info!(account = %account, via = %label, "account already covered; skipped");
            continue;
        }
        tracing::info!(account = %account, via = %label, regions = regions.len(), "collecting EC2");
        for r in regions {
            tasks.push((account.clone(), r, conf.clone()));
        }
    }

    let total = tasks.len();
    let mut results =
        futures_util::stream::iter(tasks.into_iter().map(|(account, region, conf)| {
            let ec2 = ec2_client(cfg, &conf, &region);
            async move {
                let t = Instant::now();
                let res = collect_region(&ec2, &account, &region, cfg).await;
                (account, region, t.elapsed(), res)
            }
        }))
        .buffer_unordered(cfg.concurrency);
    let mut batches = Vec::new();
    let mut done = 0usize;
    while let Some((account, region, took, res)) = results.next().await {
        done += 1;
        match res {
            Ok(batch) => {
                tracing::info!(
                    account = %account,
                    region = %region,
                    resources = batch.resources.len(),
                    relations = batch.relations.len(),
                    took_ms = took.as_millis() as u64,
                    "region {done}/{total} collected"
                );
                batches.push(batch);
            }
            Err(e) => {
                tracing::warn!(account = %account, region = %region, error = %e, "region {done}/{total} failed");
                warnings.push(format!("{account}/{region}: {e}"));
            }
        }
    }
    drop(results);
    batches.sort_by(|a, b| a.scope.cmp(&b.scope));
    if batches.is_empty() {
        return Err(CollectError::Invalid(if warnings.is_empty() {
            "nothing to collect: no account and region".to_string()
        } else {
            format!("every account and region failed: {}", warnings.join("; "))
        }));
    }
    prune_dangling(&mut batches);
    tracing::info!(
        scopes = batches.len(),
        failed = warnings.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "EC2 collection finished"
    );
    Ok(Collection {
        batches,
        warnings,
        notes: Vec::new(),
    })
}

fn ec2_client(cfg: &AwsEc2Config, conf: &SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    let mut b = aws_sdk_ec2::config::Builder::from(conf).region(Region::new(region.to_string()));
    if let Some(u) = cfg.region_endpoint_urls.get(region) {
        b = b.endpoint_url(u);
    }
    aws_sdk_ec2::Client::from_conf(b.build())
}

/// Drops relations whose ends no batch of this run reports (a peering to an
/// account or region not collected, a route through a VPN gateway): the store
/// refuses relations to unknown resources, and they stay visible as
/// attributes of the resource that named them.
fn prune_dangling(batches: &mut [ScopeBatch]) {
    let ids: HashSet<String> = batches
        .iter()
        .flat_map(|b| b.resources.iter().map(|r| r.id.clone()))
        .collect();
    for b in batches.iter_mut() {
        let before = b.relations.len();
        b.relations
            .retain(|r| ids.contains(&r.from) && ids.contains(&r.to));
        let dropped = before - b.relations.len();
        if dropped > 0 {
            tracing::debug!(scope = %b.scope, dropped, "relations to resources outside this run dropped");
        }
    }
}

/// ARN partition of a region.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else {
        "aws"
    }
}

/// Id of a region resource.
pub fn region_id(region: &str) -> String {
    format!("aws:region/{region}")
}

/// Id of an availability zone resource, by zone id (`use1-az1`).
pub fn zone_id(zone: &str) -> String {
    format!("aws:az/{zone}")
}

/// Id of the service an instance's service tag names.
pub fn service_id(name: &str) -> String {
    format!("svc:{name}")
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// Drops null fields so attributes stay small and diffs meaningful.
fn attrs(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: u32,
    len: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        Some(Cidr {
            net: u32::from(ip) & Self::mask(len),
            len,
        })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    /// True when `other` lies entirely within `self`.
    fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && (other.net & Self::mask(self.len)) == self.net
    }
}

/// `tcp/443`, `tcp/8000-8999`, `udp/all`, `icmp`, `all`.
fn port_label(p: &IpPermission) -> String {
    let proto = match p.ip_protocol().unwrap_or("-1") {
        "-1" => return "all".to_string(),
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        other => other,
    };
    match (p.from_port(), p.to_port()) {
        _ if proto == "icmp" || proto == "icmpv6" => proto.to_string(),
        (Some(-1), _) | (None, _) => format!("{proto}/all"),
        (Some(0), Some(65535)) => format!("{proto}/all"),
        (Some(f), Some(t)) if f == t => format!("{proto}/{f}"),
        (Some(f), Some(t)) => format!("{proto}/{f}-{t}"),
        (Some(f), None) => format!("{proto}/{f}"),
    }
}

fn rule_json(p: &IpPermission) -> Value {
    attrs(json!({
        "ports": port_label(p),
        "cidrs": p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect::<Vec<_>>(),
        "ipv6_cidrs": p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()).collect::<Vec<_>>(),
        "groups": p.user_id_group_pairs().iter().filter_map(|g| g.group_id()).collect::<Vec<_>>(),
        "prefix_lists": p.prefix_list_ids().iter().filter_map(|g| g.prefix_list_id()).collect::<Vec<_>>(),
    }))
}

/// An association that is (being) in force: not disassociated or failed.
fn association_live(a: &aws_sdk_ec2::types::RouteTableAssociation) -> bool {
    !matches!(
        a.association_state()
            .and_then(|s| s.state())
            .map(|s| s.as_str()),
        Some("disassociating" | "disassociated" | "failed")
    )
}

/// What one region's describe calls returned.
struct RegionData {
    zones: Vec<aws_sdk_ec2::types::AvailabilityZone>,
    vpcs: Vec<aws_sdk_ec2::types::Vpc>,
    subnets: Vec<aws_sdk_ec2::types::Subnet>,
    groups: Vec<aws_sdk_ec2::types::SecurityGroup>,
    reservations: Vec<aws_sdk_ec2::types::Reservation>,
    volumes: Vec<aws_sdk_ec2::types::Volume>,
    interfaces: Vec<aws_sdk_ec2::types::NetworkInterface>,
    route_tables: Vec<aws_sdk_ec2::types::RouteTable>,
    internet_gateways: Vec<aws_sdk_ec2::types::InternetGateway>,
    nat_gateways: Vec<aws_sdk_ec2::types::NatGateway>,
    peerings: Vec<aws_sdk_ec2::types::VpcPeeringConnection>,
    transit_gateways: Vec<aws_sdk_ec2::types::TransitGateway>,
    tgw_attachments: Vec<aws_sdk_ec2::types::TransitGatewayAttachment>,
    addresses: Vec<aws_sdk_ec2::types::Address>,
}

/// Follows every page of a paginated describe call, collecting one field.
macro_rules! all_pages {
    ($req:expr, $field:ident, $op:literal) => {
        async {
            let mut out = Vec::new();
            let mut pages = $req.into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| format!("{}: {}", $op, DisplayErrorContext(&e)))?;
                out.extend(page.$field.unwrap_or_default());
            }
            Ok::<_, String>(out)
        }
    };
}

async fn fetch_region(
    ec2: &aws_sdk_ec2::Client,
    account: &str,
    region: &str,
    page_size: i32,
) -> Result<RegionData, String> {
    let zones = async {
        ec2.describe_availability_zones()
            .send()
            .await
            .map(|o| o.availability_zones.unwrap_or_default())
            .map_err(|e| format!("DescribeAvailabilityZones: {}", DisplayErrorContext(&e)))
    };
    let addresses = async {
        ec2.describe_addresses()
            .send()
            .await
            .map(|o| o.addresses.unwrap_or_default())
            .map_err(|e| format!("DescribeAddresses: {}", DisplayErrorContext(&e)))
    };
    // Instances page by page, with progress for large fleets.
    let reservations = async {
        let mut out = Vec::new();
        let mut count = 0usize;
        let mut last_report = 0usize;
        let mut pages = ec2
            .describe_instances()
            .max_results(page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| format!("DescribeInstances: {}", DisplayErrorContext(&e)))?;
            for r in page.reservations.unwrap_or_default() {
                count += r.instances().len();
                out.push(r);
            }
            if count - last_report >= 1000 {
                last_report = count;
                tracing::info!(account, region, instances = count, "instances so far");
            }
        }
        Ok::<_, String>(out)
    };
    let (zones, addresses, reservations) = tokio::try_join!(zones, addresses, reservations)?;
    let (vpcs, subnets, groups, volumes, interfaces) = tokio::try_join!(
        all_pages!(ec2.describe_vpcs(), vpcs, "DescribeVpcs"),
        all_pages!(ec2.describe_subnets(), subnets, "DescribeSubnets"),
        all_pages!(
            ec2.describe_security_groups(),
            security_groups,
            "DescribeSecurityGroups"
        ),
        all_pages!(ec2.describe_volumes(), volumes, "DescribeVolumes"),
        all_pages!(
            ec2.describe_network_interfaces(),
            network_interfaces,
            "DescribeNetworkInterfaces"
        ),
    )?;
    let (
        route_tables,
        internet_gateways,
        nat_gateways,
        peerings,
        transit_gateways,
        tgw_attachments,
    ) = tokio::try_join!(
        all_pages!(
            ec2.describe_route_tables(),
            route_tables,
            "DescribeRouteTables"
        ),
        all_pages!(
            ec2.describe_internet_gateways(),
            internet_gateways,
            "DescribeInternetGateways"
        ),
        all_pages!(
            ec2.describe_nat_gateways(),
            nat_gateways,
            "DescribeNatGateways"
        ),
        all_pages!(
            ec2.describe_vpc_peering_connections(),
            vpc_peering_connections,
            "DescribeVpcPeeringConnections"
        ),
        all_pages!(
            ec2.describe_transit_gateways(),
            transit_gateways,
            "DescribeTransitGateways"
        ),
        all_pages!(
            ec2.describe_transit_gateway_attachments().filters(
                Filter::builder()
                    .name("resource-type")
                    .values("vpc")
                    .build()
            ),
            transit_gateway_attachments,
            "DescribeTransitGatewayAttachments"
        ),
    )?;
    Ok(RegionData {
        zones,
        vpcs,
        subnets,
        groups,
        reservations,
        volumes,
        interfaces,
        route_tables,
        internet_gateways,
        nat_gateways,
        peerings,
        transit_gateways,
        tgw_attachments,
        addresses,
    })
}

/// Collects one account in one region into one scope batch.
async fn collect_region(
    ec2: &aws_sdk_ec2::Client,
    account: &str,
    region: &str,
    cfg: &AwsEc2Config,
) -> Result<ScopeBatch, String> {
    let data = fetch_region(ec2, account, region, cfg.page_size).await?;
    Ok(build_batch(&data, account, region, cfg))
}

/// Turns describe results into resources and relations.
struct Builder<'a> {
    account: &'a str,
    region: &'a str,
    scope: String,
    resources: Vec<ObservedResource>,
    relations: Vec<ObservedRelation>,
    seen: HashSet<String>,
}

impl<'a> Builder<'a> {
    fn arn(&self, owner: Option<&str>, kind: &str, id: &str) -> String {
        format!(
            "arn:{}:ec2:{}:{}:{kind}/{id}",
            partition(self.region),
            self.region,
            owner.filter(|o| !o.is_empty()).unwrap_or(self.account)
        )
    }

    fn origin(&self) -> Option<String> {
        Some(format!("aws-ec2:{}", self.scope))
    }

    /// Adds a resource once; its name is the `Name` tag, else `default_name`.
    /// Every tag becomes a label.
    fn resource(
        &mut self,
        id: String,
        kind: &str,
        default_name: &str,
        tags: BTreeMap<String, String>,
        attributes: Value,
    ) -> String {
        let name = tags
            .get("Name")
            .filter(|n| !n.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| default_name.to_string());
        if self.seen.insert(id.clone()) {
            self.resources.push(ObservedResource {
                id: id.clone(),
                kind: kind.to_string(),
                name: Some(name),
                labels: tags,
                attributes: attrs(attributes),
                origin: self.origin(),
                placeholder: false,
            });
        }
        id
    }

    fn relation(&mut self, from: &str, to: &str, kind: &str, attributes: Value) {
        if from == to {
            return;
        }
        self.relations.push(ObservedRelation {
            from: from.to_string(),
            to: to.to_string(),
            kind: kind.to_string(),
            attributes: attrs(attributes),
            origin: self.origin(),
        });
    }
}

fn build_batch(d: &RegionData, account: &str, region: &str, cfg: &AwsEc2Config) -> ScopeBatch {
    let mut b = Builder {
        account,
        region,
        scope: format!("{account}/{region}"),
        resources: Vec::new(),
        relations: Vec::new(),
        seen: HashSet::new(),
    };
    let mut gone = Vec::new();

    // Region and zones.
    let region_ref = b.resource(
        region_id(region),
        "region",
        region,
        BTreeMap::new(),
        json!({"provider": "aws", "partition": partition(region), "region": region}),
    );
    let mut zone_by_name: HashMap<String, String> = HashMap::new();
    for z in &d.zones {
        let Some(name) = z.zone_name() else { continue };
        let zid = zone_id(z.zone_id().unwrap_or(name));
        let id = b.resource(
            zid,
            "availability_zone",
            name,
            BTreeMap::new(),
            json!({
                "provider": "aws",
                "zone_name": name,
                "zone_id": z.zone_id(),
                "region": region,
                "zone_type": z.zone_type(),
                "state": z.state().map(|s| s.as_str()),
            }),
        );
        b.relation(&id, &region_ref, kinds::CONTAINED_IN, Value::Null);
        zone_by_name.insert(name.to_string(), id);
    }
    let zone_of = |name: Option<&str>| name.and_then(|n| zone_by_name.get(n).cloned());

    // VPCs.
    let mut vpc_arn: HashMap<String, String> = HashMap::new();
    for v in &d.vpcs {
        let Some(vid) = v.vpc_id() else { continue };
        let id = b.arn(v.owner_id(), "vpc", vid);
        let id = b.resource(
            id,
            "vpc",
            vid,
            tag_map(v.tags()),
            json!({
                "provider": "aws",
                "vpc_id": vid,
                "account": v.owner_id().unwrap_or(account),
                "region": region,
                "cidr_block": v.cidr_block(),
                "is_default": v.is_default(),
                "state": v.state().map(|s| s.as_str()),
            }),
        );
        b.relation(&id, &region_ref, kinds::CONTAINED_IN, Value::Null);
        vpc_arn.insert(vid.to_string(), id);
    }
    let vpc_ref = |b: &Builder, vid: Option<&str>| -> Option<String> {
        let vid = vid?;
        vpc_arn
            .get(vid)
            .cloned()
            .or_else(|| Some(b.arn(None, "vpc", vid)))
    };

    // Subnets.
    let mut subnet_arn: HashMap<String, String> = HashMap::new();
    let mut subnet_cidrs: Vec<(Cidr, String, String)> = Vec::new();
    let mut subnets_of_vpc: HashMap<String, Vec<String>> = HashMap::new();
    for s in &d.subnets {
        let Some(sid) = s.subnet_id() else { continue };
        let id = s
            .subnet_arn()
            .map(str::to_string)
            .unwrap_or_else(|| b.arn(s.owner_id(), "subnet", sid));
        let zone = s
            .availability_zone_id()
            .map(zone_id)
            .or_else(|| zone_of(s.availability_zone()));
        let id = b.resource(
            id,
            "subnet",
            sid,
            tag_map(s.tags()),
            json!({
                "provider": "aws",
                "subnet_id": sid,
                "account": s.owner_id().unwrap_or(account),
                "region": region,
                "vpc_id": s.vpc_id(),
                "cidr_block": s.cidr_block(),
                "availability_zone": s.availability_zone(),
                "zone_id": s.availability_zone_id(),
                "available_ip_addresses": s.available_ip_address_count(),
                "map_public_ip_on_launch": s.map_public_ip_on_launch(),
                "default_for_az": s.default_for_az(),
            }),
        );
        if let Some(v) = vpc_ref(&b, s.vpc_id()) {
            b.relation(&id, &v, kinds::CONTAINED_IN, Value::Null);
            subnets_of_vpc
                .entry(s.vpc_id().unwrap_or_default().to_string())
                .or_default()
                .push(sid.to_string());
        }
        if let Some(z) = zone {
            b.relation(&id, &z, kinds::CONTAINED_IN, Value::Null);
        }
        if let Some(c) = s.cidr_block().and_then(Cidr::parse) {
            subnet_cidrs.push((c, id.clone(), s.vpc_id().unwrap_or_default().to_string()));
        }
        subnet_arn.insert(sid.to_string(), id);
    }
    let subnet_ref = |b: &Builder, sid: Option<&str>| -> Option<String> {
        let sid = sid?;
        subnet_arn
            .get(sid)
            .cloned()
            .or_else(|| Some(b.arn(None, "subnet", sid)))
    };

    // Security groups and their rules; reachability between them.
    let mut sg_arn: HashMap<String, String> = HashMap::new();
    for g in &d.groups {
        if let Some(gid) = g.group_id() {
            sg_arn.insert(gid.to_string(), b.arn(g.owner_id(), "security-group", gid));
        }
    }
    for g in &d.groups {
        let Some(gid) = g.group_id() else { continue };
        let id = sg_arn[gid].clone();
        let ingress: Vec<Value> = g.ip_permissions().iter().map(rule_json).collect();
        let egress: Vec<Value> = g.ip_permissions_egress().iter().map(rule_json).collect();
        let mut allows_self = Vec::new();
        let mut open_to_world = Vec::new();
        let mut reach: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in g.ip_permissions() {
            let ports = port_label(p);
            for pair in p.user_id_group_pairs() {
                let Some(src) = pair.group_id() else { continue };
                if src == gid {
                    allows_self.push(ports.clone());
                    continue;
                }
                let src_id = sg_arn
                    .get(src)
                    .cloned()
                    .unwrap_or_else(|| b.arn(pair.user_id(), "security-group", src));
                reach.entry(src_id).or_default().insert(ports.clone());
            }
            for r in p.ip_ranges() {
                let Some(c) = r.cidr_ip().and_then(Cidr::parse) else {
                    continue;
                };
                if c.len == 0 {
                    open_to_world.push(ports.clone());
                    continue;
                }
                // Only the group's own VPC: other VPCs often reuse the
                // same private ranges.
                for (sc, sid, svpc) in &subnet_cidrs {
                    if Some(svpc.as_str()) == g.vpc_id() && c.covers(sc) {
                        reach.entry(sid.clone()).or_default().insert(ports.clone());
                    }
                }
            }
            if p.ipv6_ranges()
                .iter()
                .any(|r| r.cidr_ipv6() == Some("::/0"))
            {
                open_to_world.push(ports.clone());
            }
        }
        open_to_world.sort();
        open_to_world.dedup();
        allows_self.sort();
        allows_self.dedup();
        b.resource(
            id.clone(),
            "security_group",
            g.group_name().unwrap_or(gid),
            tag_map(g.tags()),
            json!({
                "provider": "aws",
                "group_id": gid,
                "group_name": g.group_name(),
                "description": g.description(),
                "account": g.owner_id().unwrap_or(account),
                "region": region,
                "vpc_id": g.vpc_id(),
                "ingress": ingress,
                "egress": egress,
                "open_to_world": if open_to_world.is_empty() { Value::Null } else { json!(open_to_world) },
                "allows_self": if allows_self.is_empty() { Value::Null } else { json!(allows_self) },
            }),
        );
        if let Some(v) = vpc_ref(&b, g.vpc_id()) {
            b.relation(&id, &v, kinds::CONTAINED_IN, Value::Null);
        }
        for (src, ports) in reach {
            b.relation(
                &id,
                &src,
                ALLOWS_TRAFFIC_FROM,
                json!({"ports": ports.into_iter().collect::<Vec<_>>()}),
            );
        }
    }

    // Instances (hosts), and the services their tags name.
    let mut instance_arn: HashMap<String, String> = HashMap::new();
    for r in &d.reservations {
        for i in r.instances() {
            let Some(iid) = i.instance_id() else { continue };
            let id = b.arn(r.owner_id(), "instance", iid);
            let state = i.state().and_then(|s| s.name()).map(|s| s.as_str());
            if state == Some("terminated") {
                gone.push(id);
                continue;
            }
            instance_arn.insert(iid.to_string(), id.clone());
            let tags = tag_map(i.tags());
            let zone_name = i.placement().and_then(|p| p.availability_zone());
            let id = b.resource(
                id,
                "host",
                iid,
                tags.clone(),
                json!({
                    "provider": "aws",
                    "instance_id": iid,
                    "account": r.owner_id().unwrap_or(account),
                    "region": region,
                    "state": state,
                    "instance_type": i.instance_type().map(|t| t.as_str()),
                    "image_id": i.image_id(),
                    "availability_zone": zone_name,
                    "vpc_id": i.vpc_id(),
                    "subnet_id": i.subnet_id(),
                    "private_ip": i.private_ip_address(),
                    "public_ip": i.public_ip_address(),
                    "private_dns": i.private_dns_name().filter(|s| !s.is_empty()),
                    "public_dns": i.public_dns_name().filter(|s| !s.is_empty()),
                    "key_name": i.key_name(),
                    "iam_instance_profile": i.iam_instance_profile().and_then(|p| p.arn()),
                    "launch_time": i.launch_time().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
                    "platform": i.platform_details(),
                    "architecture": i.architecture().map(|a| a.as_str()),
                }),
            );
            match subnet_ref(&b, i.subnet_id()) {
                Some(s) => b.relation(&id, &s, kinds::CONTAINED_IN, Value::Null),
                None => {
                    if let Some(z) = zone_of(zone_name) {
                        b.relation(&id, &z, kinds::CONTAINED_IN, Value::Null);
                    }
                }
            }
            let mut groups: BTreeSet<String> = BTreeSet::new();
            for g in i.security_groups() {
                if let Some(gid) = g.group_id() {
                    groups.insert(
                        sg_arn
                            .get(gid)
                            .cloned()
                            .unwrap_or_else(|| b.arn(None, "security-group", gid)),
                    );
                }
            }
            for g in groups {
                b.relation(&id, &g, kinds::CONTAINED_IN, Value::Null);
            }
            let service = cfg.service_tags.iter().find_map(|k| {
                tags.get(k)
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(|v| (k, v.to_string()))
            });
            if let Some((key, name)) = service {
                // Created if absent; an inventory that declares `svc:NAME`
                // as another kind (a database, say) keeps its kind.
                let sid = service_id(&name);
                if b.seen.insert(sid.clone()) {
                    b.resources.push(ObservedResource {
                        id: sid.clone(),
                        kind: "service".into(),
                        name: Some(name.clone()),
                        labels: BTreeMap::new(),
                        attributes: Value::Null,
                        origin: b.origin(),
                        placeholder: true,
                    });
                }
                b.relation(&id, &sid, kinds::INSTANCE_OF, json!({"tag": key}));
            }
        }
    }
    let instance_ref = |iid: Option<&str>| iid.and_then(|i| instance_arn.get(i).cloned());

    // Volumes.
    for v in &d.volumes {
        let Some(vid) = v.volume_id() else { continue };
        let id = b.arn(None, "volume", vid);
        let id = b.resource(
            id,
            "volume",
            vid,
            tag_map(v.tags()),
            json!({
                "provider": "aws",
                "volume_id": vid,
                "account": account,
                "region": region,
                "size_gib": v.size(),
                "volume_type": v.volume_type().map(|t| t.as_str()),
                "state": v.state().map(|s| s.as_str()),
                "availability_zone": v.availability_zone(),
                "encrypted": v.encrypted(),
                "iops": v.iops(),
                "snapshot_id": v.snapshot_id().filter(|s| !s.is_empty()),
            }),
        );
        if let Some(z) = zone_of(v.availability_zone()) {
            b.relation(&id, &z, kinds::CONTAINED_IN, Value::Null);
        }
        for a in v.attachments() {
            let attached = matches!(
                a.state().map(|s| s.as_str()),
                Some("attached" | "attaching") | None
            );
            if let (true, Some(inst)) = (attached, instance_ref(a.instance_id())) {
                b.relation(
                    &id,
                    &inst,
                    kinds::ATTACHED_TO,
                    json!({"device": a.device(), "delete_on_termination": a.delete_on_termination()}),
                );
            }
        }
    }

    // Network interfaces.
    let mut eni_arn: HashMap<String, String> = HashMap::new();
    for n in &d.interfaces {
        let Some(nid) = n.network_interface_id() else {
            continue;
        };
        let id = b.arn(n.owner_id(), "network-interface", nid);
        let id = b.resource(
            id,
            "network_interface",
            nid,
            tag_map(n.tag_set()),
            json!({
                "provider": "aws",
                "interface_id": nid,
                "account": n.owner_id().unwrap_or(account),
                "region": region,
                "interface_type": n.interface_type().map(|t| t.as_str()),
                "status": n.status().map(|s| s.as_str()),
                "description": n.description().filter(|s| !s.is_empty()),
                "vpc_id": n.vpc_id(),
                "subnet_id": n.subnet_id(),
                "private_ip": n.private_ip_address(),
                "public_ip": n.association().and_then(|a| a.public_ip()),
                "mac_address": n.mac_address(),
                "attached_instance": n.attachment().and_then(|a| a.instance_id()),
            }),
        );
        if let Some(s) = subnet_ref(&b, n.subnet_id()) {
            b.relation(&id, &s, kinds::CONTAINED_IN, Value::Null);
        }
        if let Some(inst) = instance_ref(n.attachment().and_then(|a| a.instance_id())) {
            b.relation(
                &id,
                &inst,
                kinds::ATTACHED_TO,
                json!({"device_index": n.attachment().and_then(|a| a.device_index())}),
            );
        }
        eni_arn.insert(nid.to_string(), id);
    }

    // Gateways first, so route targets resolve to their ARNs.
    let mut gateway_arn: HashMap<String, String> = HashMap::new();
    for g in &d.internet_gateways {
        let Some(gid) = g.internet_gateway_id() else {
            continue;
        };
        let id = b.arn(g.owner_id(), "internet-gateway", gid);
        let id = b.resource(
            id,
            "internet_gateway",
            gid,
            tag_map(g.tags()),
            json!({
                "provider": "aws",
                "gateway_id": gid,
                "account": g.owner_id().unwrap_or(account),
                "region": region,
                "vpc_ids": g.attachments().iter().filter_map(|a| a.vpc_id()).collect::<Vec<_>>(),
            }),
        );
        for a in g.attachments() {
            if let Some(v) = vpc_ref(&b, a.vpc_id()) {
                b.relation(&id, &v, kinds::CONTAINED_IN, Value::Null);
            }
        }
        gateway_arn.insert(gid.to_string(), id);
    }
    for n in &d.nat_gateways {
        let Some(nid) = n.nat_gateway_id() else {
            continue;
        };
        let state = n.state().map(|s| s.as_str());
        if matches!(state, Some("deleted" | "deleting" | "failed")) {
            continue;
        }
        let id = b.arn(None, "natgateway", nid);
        let addr = n.nat_gateway_addresses().first();
        let id = b.resource(
            id,
            "nat_gateway",
            nid,
            tag_map(n.tags()),
            json!({
                "provider": "aws",
                "nat_gateway_id": nid,
                "account": account,
                "region": region,
                "state": state,
                "vpc_id": n.vpc_id(),
                "subnet_id": n.subnet_id(),
                "connectivity_type": n.connectivity_type().map(|c| c.as_str()),
                "public_ip": addr.and_then(|a| a.public_ip()),
                "private_ip": addr.and_then(|a| a.private_ip()),
            }),
        );
        if let Some(s) = subnet_ref(&b, n.subnet_id()) {
            b.relation(&id, &s, kinds::CONTAINED_IN, Value::Null);
        }
        gateway_arn.insert(nid.to_string(), id);
    }
    for p in &d.peerings {
        let Some(pid) = p.vpc_peering_connection_id() else {
            continue;
        };
        let status = p.status().and_then(|s| s.code()).map(|c| c.as_str());
        if matches!(
            status,
            Some("deleted" | "deleting" | "rejected" | "failed" | "expired")
        ) {
            continue;
        }
        let req = p.requester_vpc_info();
        let acc = p.accepter_vpc_info();
        let owner = req.and_then(|r| r.owner_id());
        // One id for both ends of a cross-region peering: the requester's.
        let req_region = req.and_then(|r| r.region()).unwrap_or(region);
        let id = format!(
            "arn:{}:ec2:{req_region}:{}:vpc-peering-connection/{pid}",
            partition(req_region),
            owner.unwrap_or(account)
        );
        let vpc_arn_of = |info: Option<&aws_sdk_ec2::types::VpcPeeringConnectionVpcInfo>| {
            let info = info?;
            let vid = info.vpc_id()?;
            let reg = info.region().unwrap_or(region);
            Some(format!(
                "arn:{}:ec2:{reg}:{}:vpc/{vid}",
                partition(reg),
                info.owner_id().unwrap_or(account)
            ))
        };
        let (req_vpc, acc_vpc) = (vpc_arn_of(req), vpc_arn_of(acc));
        let id = b.resource(
            id,
            "vpc_peering_connection",
            pid,
            tag_map(p.tags()),
            json!({
                "provider": "aws",
                "peering_id": pid,
                "account": owner.unwrap_or(account),
                "region": region,
                "status": status,
                "requester_vpc": req_vpc,
                "accepter_vpc": acc_vpc,
                "requester_cidr": req.and_then(|r| r.cidr_block()),
                "accepter_cidr": acc.and_then(|r| r.cidr_block()),
            }),
        );
        for v in [req_vpc, acc_vpc].into_iter().flatten() {
            b.relation(&id, &v, kinds::CONTAINED_IN, Value::Null);
        }
        gateway_arn.insert(pid.to_string(), id);
    }
    for t in &d.transit_gateways {
        let Some(tid) = t.transit_gateway_id() else {
            continue;
        };
        let state = t.state().map(|s| s.as_str());
        if matches!(state, Some("deleted" | "deleting")) {
            continue;
        }
        let id = t
            .transit_gateway_arn()
            .map(str::to_string)
            .unwrap_or_else(|| b.arn(t.owner_id(), "transit-gateway", tid));
        let id = b.resource(
            id,
            "transit_gateway",
            tid,
            tag_map(t.tags()),
            json!({
                "provider": "aws",
                "transit_gateway_id": tid,
                "account": t.owner_id().unwrap_or(account),
                "region": region,
                "state": state,
                "description": t.description().filter(|s| !s.is_empty()),
            }),
        );
        b.relation(&id, &region_ref, kinds::CONTAINED_IN, Value::Null);
        gateway_arn.insert(tid.to_string(), id);
    }
    for a in &d.tgw_attachments {
        let state = a.state().map(|s| s.as_str());
        if matches!(state, Some("deleted" | "deleting" | "failed" | "rejected")) {
            continue;
        }
        let (Some(tid), Some(vid)) = (a.transit_gateway_id(), a.resource_id()) else {
            continue;
        };
        let Some(tgw) = gateway_arn.get(tid).cloned() else {
            continue;
        };
        let vpc = vpc_arn
            .get(vid)
            .cloned()
            .unwrap_or_else(|| b.arn(a.resource_owner_id(), "vpc", vid));
        b.relation(
            &vpc,
            &tgw,
            CONNECTED_TO,
            json!({"attachment_id": a.transit_gateway_attachment_id(), "state": state}),
        );
    }

    // Route tables: subnets depend on theirs; tables on what they route through.
    let mut main_tables: Vec<(String, String)> = Vec::new();
    for t in &d.route_tables {
        let Some(rid) = t.route_table_id() else {
            continue;
        };
        let id = b.arn(t.owner_id(), "route-table", rid);
        let main = t.associations().iter().any(|a| a.main() == Some(true));
        let mut targets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut routes = Vec::new();
        for r in t.routes() {
            let dest = r
                .destination_cidr_block()
                .or(r.destination_ipv6_cidr_block())
                .or(r.destination_prefix_list_id())
                .unwrap_or("?");
            let target = r
                .nat_gateway_id()
                .or(r.transit_gateway_id())
                .or(r.vpc_peering_connection_id())
                .or(r.instance_id())
                .or(r.gateway_id())
                .or(r.egress_only_internet_gateway_id())
                .or(r.carrier_gateway_id())
                .or(r.local_gateway_id())
                .or(r.core_network_arn())
                .or(r.network_interface_id())
                .unwrap_or("?");
            let state = r.state().map(|s| s.as_str());
            routes.push(json!({
                "destination": dest,
                "target": target,
                "state": state,
            }));
            // A blackhole route leads nowhere: nothing to depend on.
            if state == Some("blackhole") {
                continue;
            }
            let resolved = gateway_arn
                .get(target)
                .cloned()
                .or_else(|| instance_arn.get(target).cloned())
                .or_else(|| eni_arn.get(target).cloned());
            if let Some(to) = resolved {
                targets.entry(to).or_default().insert(dest.to_string());
            }
        }
        let id = b.resource(
            id,
            "route_table",
            rid,
            tag_map(t.tags()),
            json!({
                "provider": "aws",
                "route_table_id": rid,
                "account": t.owner_id().unwrap_or(account),
                "region": region,
                "vpc_id": t.vpc_id(),
                "main": main,
                "routes": routes,
            }),
        );
        if let Some(v) = vpc_ref(&b, t.vpc_id()) {
            b.relation(&id, &v, kinds::CONTAINED_IN, Value::Null);
        }
        for (to, dests) in targets {
            b.relation(
                &id,
                &to,
                kinds::DEPENDS_ON,
                json!({"destinations": dests.into_iter().collect::<Vec<_>>()}),
            );
        }
        let mut explicit: Vec<&str> = Vec::new();
        for a in t.associations().iter().filter(|a| association_live(a)) {
            if let Some(sid) = a.subnet_id() {
                explicit.push(sid);
            }
        }
        for sid in &explicit {
            if let Some(s) = subnet_ref(&b, Some(sid)) {
                b.relation(
                    &s,
                    &id,
                    kinds::DEPENDS_ON,
                    json!({"association": "explicit"}),
                );
            }
        }
        if main {
            main_tables.push((t.vpc_id().unwrap_or_default().to_string(), id.clone()));
        }
    }
    // Subnets without an explicit association use their VPC's main table.
    let explicit: HashSet<String> = d
        .route_tables
        .iter()
        .flat_map(|t| {
            t.associations()
                .iter()
                .filter(|a| association_live(a))
                .filter_map(|a| a.subnet_id().map(str::to_string))
        })
        .collect();
    for (vid, table) in main_tables {
        for sid in subnets_of_vpc.get(&vid).into_iter().flatten() {
            if explicit.contains(sid) {
                continue;
            }
            if let Some(s) = subnet_arn.get(sid).cloned() {
                b.relation(
                    &s,
                    &table,
                    kinds::DEPENDS_ON,
                    json!({"association": "main"}),
                );
            }
        }
    }

    // Elastic IPs.
    for a in &d.addresses {
        let Some(ip) = a.public_ip() else { continue };
        let native = a.allocation_id().unwrap_or(ip);
        let id = b.arn(None, "elastic-ip", native);
        let id = b.resource(
            id,
            "elastic_ip",
            ip,
            tag_map(a.tags()),
            json!({
                "provider": "aws",
                "public_ip": ip,
                "allocation_id": a.allocation_id(),
                "association_id": a.association_id(),
                "private_ip": a.private_ip_address(),
                "domain": a.domain().map(|d| d.as_str()),
                "account": account,
                "region": region,
            }),
        );
        b.relation(&id, &region_ref, kinds::CONTAINED_IN, Value::Null);
        let target = instance_ref(a.instance_id()).or_else(|| {
            a.network_interface_id()
                .and_then(|n| eni_arn.get(n).cloned())
        });
        if let Some(t) = target {
            b.relation(&id, &t, ASSOCIATED_WITH, Value::Null);
        }
    }

    ScopeBatch {
        scope: b.scope,
        complete: true,
        resources: b.resources,
        relations: b.relations,
        gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_and_role_names() {
        for r in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-4",
        ] {
            assert!(is_region(r), "{r}");
        }
        for r in [
            "",
            "us-east",
            "US-EAST-1",
            "us-east-1a",
            "us--1",
            "mars",
            "us-east-x",
        ] {
            assert!(!is_region(r), "{r}");
        }
        assert!(is_role_arn(
            "arn:aws:iam::111111111111:role/infragraph-read"
        ));
        assert!(is_role_arn("arn:aws-us-gov:iam::111111111111:role/path/x"));
        assert!(!is_role_arn("arn:aws:iam::1111:role/x"));
        assert!(!is_role_arn("arn:aws:iam::111111111111:user/x"));
        assert!(!is_role_arn("arn:aws:iam::111111111111:role/"));
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition("eu-west-1"), "aws");
    }

    #[test]
    fn cidr_coverage() {
        let c = |s| Cidr::parse(s).unwrap();
        assert!(c("10.0.0.0/16").covers(&c("10.0.1.0/24")));
        assert!(c("10.0.1.0/24").covers(&c("10.0.1.0/24")));
        assert!(!c("10.0.1.0/24").covers(&c("10.0.0.0/16")));
        assert!(!c("10.0.1.0/24").covers(&c("10.0.2.0/24")));
        assert!(c("0.0.0.0/0").covers(&c("192.168.0.0/16")));
        // Host bits are ignored, as AWS does.
        assert!(c("10.0.1.7/24").covers(&c("10.0.1.0/28")));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("10.0.0/8"), None);
        assert_eq!(Cidr::parse("::/0"), None);
    }

    #[test]
    fn port_labels() {
        let p = |proto: &str, from: Option<i32>, to: Option<i32>| {
            port_label(
                &IpPermission::builder()
                    .ip_protocol(proto)
                    .set_from_port(from)
                    .set_to_port(to)
                    .build(),
            )
        };
        assert_eq!(p("tcp", Some(443), Some(443)), "tcp/443");
        assert_eq!(p("tcp", Some(8000), Some(8999)), "tcp/8000-8999");
        assert_eq!(p("6", Some(22), Some(22)), "tcp/22");
        assert_eq!(p("udp", Some(0), Some(65535)), "udp/all");
        assert_eq!(p("-1", None, None), "all");
        assert_eq!(p("icmp", Some(8), Some(-1)), "icmp");
    }

    #[test]
    fn validation_names_the_field_and_value() {
        let bad = |cfg: AwsEc2Config| cfg.validate().unwrap_err().to_string();
        let base = AwsEc2Config::default();
        assert!(base.validate().is_ok());
        assert_eq!(
            bad(AwsEc2Config {
                regions: vec!["us-east-1".into()],
                all_regions: true,
                ..base.clone()
            }),
            "collector 'aws-ec2': regions: give either regions or all_regions, not both"
        );
        assert!(
            bad(AwsEc2Config {
                region_endpoint_urls: [("eu-west-1".to_string(), "localhost:1".to_string())].into(),
                ..base.clone()
            })
            .contains("'localhost:1' (for eu-west-1) is not an http(s) URL")
        );
        assert!(
            bad(AwsEc2Config {
                service_tags: vec![" ".into()],
                ..base.clone()
            })
            .contains("service_tags")
        );
        assert!(
            bad(AwsEc2Config {
                max_attempts: 0,
                ..base.clone()
            })
            .contains("max_attempts: 0")
        );
        assert_eq!(
            AwsEc2Config {
                regions: vec!["us-east-1".into(), "eu-west-1".into()],
                roles: vec!["arn:aws:iam::111111111111:role/r".into()],
                ..base
            }
            .scope(),
            "us-east-1,eu-west-1; 1 role"
        );
    }
}
