//! A deterministic generator of realistic estates, for benchmarks and demos:
//! regions, zones, VPCs, subnets, security groups, hosts with volumes,
//! services in tiers with instances spread across zones, load balancers with
//! target pools, database clusters with a primary and replicas, shared
//! platform services with huge fan-in, and a few dependency cycles.
//!
//! Pure: it returns observations; the CLI writes them as an inventory file.

use std::collections::BTreeMap;
use std::io::Write;

use collectors::{ObservedRelation, ObservedResource};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How big an estate to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// About 1,000 resources.
    Small,
    /// About 100,000 resources and 520,000 relations.
    Medium,
    /// About 1,000,000 resources and 5,200,000 relations.
    Large,
}

impl Size {
    fn units(self) -> usize {
        match self {
            Size::Small => 10,
            Size::Medium => 1_000,
            Size::Large => 10_000,
        }
    }
}

/// A generated estate.
#[derive(Debug, Default)]
pub struct Estate {
    /// Resources, in generation order.
    pub resources: Vec<ObservedResource>,
    /// Relations, in generation order.
    pub relations: Vec<ObservedRelation>,
}

const PLATFORM: [&str; 6] = ["dns", "auth", "logging", "metrics", "config", "secrets"];

struct Gen {
    rng: StdRng,
    out: Estate,
}

impl Gen {
    fn res(&mut self, id: String, kind: &str, labels: &[(&str, String)]) -> String {
        let mut r = ObservedResource::new(id.clone(), kind);
        r.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>();
        self.out.resources.push(r);
        id
    }
    fn rel(&mut self, from: &str, to: &str, kind: &str) {
        self.out
            .relations
            .push(ObservedRelation::new(from, to, kind));
    }
}

/// Generates an estate; the same size and seed always give the same estate.
pub fn generate(size: Size, seed: u64) -> Estate {
    let u = size.units();
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        out: Estate::default(),
    };
    let regions = match size {
        Size::Small => 1,
        Size::Medium => 3,
        Size::Large => 6,
    };
    // Network: region → zones; VPCs per region with subnets per zone, SGs per VPC.
    let mut subnets: Vec<(String, usize)> = Vec::new(); // (id, zone index)
    let mut sgs: Vec<Vec<String>> = Vec::new(); // per subnet's VPC
    let mut subnet_sgs: Vec<usize> = Vec::new();
    let mut zones: Vec<String> = Vec::new();
    let vpcs_per_region = (u / 500).clamp(1, 4);
    let subnets_per_zone = (u / 250).clamp(1, 8);
    let sgs_per_vpc = (u / 50).clamp(3, 40);
    for r in 0..regions {
        let region = g.res(format!("region:r{r}"), "region", &[]);
        let zone_base = zones.len();
        for z in 0..3 {
            let zone = g.res(
                format!("zone:r{r}{}", (b'a' + z) as char),
                "availability_zone",
                &[],
            );
            g.rel(&zone, &region, "contained_in");
            zones.push(zone);
        }
        for v in 0..vpcs_per_region {
            let vpc = g.res(format!("vpc:r{r}-v{v}"), "vpc", &[]);
            g.rel(&vpc, &region, "contained_in");
            let mut groups = Vec::new();
            for s in 0..sgs_per_vpc {
                let sg = g.res(format!("sg:r{r}-v{v}-{s}"), "security_group", &[]);
                g.rel(&sg, &vpc, "contained_in");
                groups.push(sg);
            }
            sgs.push(groups);
            for z in 0..3 {
                for s in 0..subnets_per_zone {
                    let sn = g.res(format!("subnet:r{r}-v{v}-z{z}-{s}"), "subnet", &[]);
                    g.rel(&sn, &vpc, "contained_in");
                    let zone = zones[zone_base + z].clone();
                    g.rel(&sn, &zone, "contained_in");
                    subnets.push((sn, zone_base + z));
                    subnet_sgs.push(sgs.len() - 1);
                }
            }
        }
    }
    // Hosts, grouped by zone so instances can be spread across zones.
    let n_hosts = 40 * u;
    let mut hosts_by_zone: Vec<Vec<String>> = vec![Vec::new(); zones.len()];
    for h in 0..n_hosts {
        let si = g.rng.random_range(0..subnets.len());
        let (subnet, zone) = subnets[si].clone();
        let rack = format!("r{}", h % (u.max(1) * 2));
        let host = g.res(
            format!("host:h{h}"),
            "host",
            &[
                ("rack", rack),
                ("zone", zones[zone].trim_start_matches("zone:").to_string()),
            ],
        );
        g.rel(&host, &subnet, "contained_in");
        let groups = &sgs[subnet_sgs[si]];
        let picks: Vec<String> = (0..3)
            .map(|_| groups[g.rng.random_range(0..groups.len())].clone())
            .collect();
        let mut seen = Vec::new();
        for sg in picks {
            if !seen.contains(&sg) {
                g.rel(&host, &sg, "contained_in");
                seen.push(sg);
            }
        }
        if h % 8 < 3 {
            let vol = g.res(format!("volume:h{h}-data"), "volume", &[]);
            g.rel(&vol, &host, "attached_to");
        }
        hosts_by_zone[zone].push(host);
    }
    let place =
        |g: &mut Gen, svc: &str, n: usize, labels: &[(&str, String)], kind: &str| -> Vec<String> {
            let z0 = g.rng.random_range(0..zones.len());
            (0..n)
                .map(|i| {
                    let zone = (z0 + i) % zones.len();
                    let pool = &hosts_by_zone[zone];
                    let host = pool[g.rng.random_range(0..pool.len())].clone();
                    let inst = g.res(format!("{svc}#{i}"), kind, labels);
                    g.rel(&inst, svc, "instance_of");
                    g.rel(&inst, &host, "runs_on");
                    inst
                })
                .collect()
        };
    // Platform services: redundant, and every service instance needs them.
    let mut platform = Vec::new();
    for p in PLATFORM {
        let svc = g.res(
            format!("svc:platform-{p}"),
            "service",
            &[("tier", "1".into()), ("team", "platform".into())],
        );
        place(
            &mut g,
            &svc,
            6,
            &[("team", "platform".into())],
            "service_instance",
        );
        platform.push(svc);
    }
    // Database clusters: a primary (a single point of failure for writes) and replicas.
    let n_db = u;
    let mut dbs = Vec::new();
    for d in 0..n_db {
        let team = format!("team{}", d % 50);
        let db = g.res(
            format!("db:d{d}"),
            "database",
            &[("team", team.clone()), ("tier", (1 + d % 3).to_string())],
        );
        let members = place(&mut g, &db, 3, &[("team", team)], "database_instance");
        if d % 2 == 0 {
            g.rel(&db, &members[0], "depends_on");
        }
        dbs.push(db);
    }
    // Services in tiers: tier 1 (front), 2 (mid), 3 (back). A service depends
    // on services of deeper tiers, on databases, and sometimes on the load
    // balancer in front of another service.
    let n_svc = 6 * u;
    let mut services: Vec<(String, usize)> = Vec::new();
    let mut lbs: BTreeMap<usize, String> = BTreeMap::new();
    for s in 0..n_svc {
        let tier = match s * 10 / n_svc {
            0 => 1,
            1..=3 => 2,
            _ => 3,
        };
        let team = format!("team{}", s % 50);
        let svc = g.res(
            format!("svc:s{s}"),
            "service",
            &[
                ("tier", tier.to_string()),
                ("team", team.clone()),
                ("env", "prod".into()),
            ],
        );
        let n = g.rng.random_range(3..=9);
        let instances = place(
            &mut g,
            &svc,
            n,
            &[("team", team.clone())],
            "service_instance",
        );
        for inst in &instances {
            for p in &platform {
                g.rel(inst, p, "depends_on");
            }
        }
        if s % 3 == 0 {
            let lb = g.res(format!("lb:s{s}"), "load_balancer", &[("team", team)]);
            for inst in &instances {
                g.rel(&lb, inst, "routes_to");
            }
            lbs.insert(s, lb);
        }
        services.push((svc, tier));
    }
    for s in 0..n_svc {
        let (svc, tier) = services[s].clone();
        let deps = g.rng.random_range(4..=12);
        let mut chosen = Vec::new();
        for _ in 0..deps {
            let r: u32 = g.rng.random_range(0..10);
            let target = if r < 3 || tier == 3 {
                dbs[g.rng.random_range(0..dbs.len())].clone()
            } else {
                // a service in a deeper tier
                let lo = if tier == 1 {
                    n_svc / 10
                } else {
                    n_svc * 4 / 10
                };
                let t = g.rng.random_range(lo..n_svc);
                match lbs.get(&t) {
                    Some(lb) if r < 6 => lb.clone(),
                    _ => services[t].0.clone(),
                }
            };
            if target != svc && !chosen.contains(&target) {
                g.rel(&svc, &target, "depends_on");
                chosen.push(target);
            }
        }
    }
    // A few cycles among services of the same tier.
    for c in 0..(u / 100).max(1) {
        let a = (n_svc / 2 + c * 7) % n_svc;
        let b = (a + 1) % n_svc;
        let (sa, sb) = (services[a].0.clone(), services[b].0.clone());
        g.rel(&sa, &sb, "depends_on");
        g.rel(&sb, &sa, "depends_on");
    }
    // Relations can repeat by chance (a cycle edge that a tier edge already
    // made); the inventory format merges repeats, so we drop them here.
    let mut seen = std::collections::HashSet::new();
    g.out
        .relations
        .retain(|r| seen.insert((r.from.clone(), r.to.clone(), r.kind.clone())));
    g.out
}

/// Writes an estate in the inventory-file format (YAML, flow style per item).
pub fn write_yaml(estate: &Estate, mut w: impl Write) -> std::io::Result<()> {
    writeln!(w, "# generated by `infragraph generate`")?;
    writeln!(w, "resources:")?;
    for r in &estate.resources {
        write!(w, "  - {{id: {}, kind: {}", yaml_str(&r.id), r.kind)?;
        if !r.labels.is_empty() {
            write!(w, ", labels: {{")?;
            for (i, (k, v)) in r.labels.iter().enumerate() {
                if i > 0 {
                    write!(w, ", ")?;
                }
                write!(w, "{}: {}", yaml_str(k), yaml_str(v))?;
            }
            write!(w, "}}")?;
        }
        writeln!(w, "}}")?;
    }
    writeln!(w, "relations:")?;
    for r in &estate.relations {
        writeln!(
            w,
            "  - {{from: {}, to: {}, kind: {}}}",
            yaml_str(&r.from),
            yaml_str(&r.to),
            r.kind
        )?;
    }
    Ok(())
}

/// Writes an estate in the inventory-file format as JSON (one item a line).
pub fn write_json(estate: &Estate, mut w: impl Write) -> std::io::Result<()> {
    let q = yaml_str;
    writeln!(w, "{{\"resources\": [")?;
    for (i, r) in estate.resources.iter().enumerate() {
        write!(w, "  {{\"id\": {}, \"kind\": {}", q(&r.id), q(&r.kind))?;
        if !r.labels.is_empty() {
            let labels: Vec<String> = r
                .labels
                .iter()
                .map(|(k, v)| format!("{}: {}", q(k), q(v)))
                .collect();
            write!(w, ", \"labels\": {{{}}}", labels.join(", "))?;
        }
        let comma = if i + 1 < estate.resources.len() {
            ","
        } else {
            ""
        };
        writeln!(w, "}}{comma}")?;
    }
    writeln!(w, "], \"relations\": [")?;
    for (i, r) in estate.relations.iter().enumerate() {
        let comma = if i + 1 < estate.relations.len() {
            ","
        } else {
            ""
        };
        writeln!(
            w,
            "  {{\"from\": {}, \"to\": {}, \"kind\": {}}}{comma}",
            q(&r.from),
            q(&r.to),
            q(&r.kind)
        )?;
    }
    writeln!(w, "]}}")
}

fn yaml_str(s: &str) -> String {
    // JSON strings are valid YAML scalars and quote everything that needs it.
    serde_json::to_string(s).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 4's sizes: medium ≈ 100k resources and 500k–1M relations.
    #[test]
    fn medium_is_the_size_the_benchmarks_are_set_for() {
        let m = generate(Size::Medium, 1);
        assert!(
            (95_000..=110_000).contains(&m.resources.len())
                && (500_000..=1_000_000).contains(&m.relations.len()),
            "{} resources, {} relations",
            m.resources.len(),
            m.relations.len()
        );
    }

    #[test]
    fn small_is_deterministic_consistent_and_parses_back() {
        let a = generate(Size::Small, 7);
        let b = generate(Size::Small, 7);
        assert_eq!(a.resources, b.resources);
        assert_eq!(a.relations, b.relations);
        let ids: std::collections::HashSet<&str> =
            a.resources.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), a.resources.len(), "ids are unique");
        for r in &a.relations {
            assert!(
                ids.contains(r.from.as_str()) && ids.contains(r.to.as_str()),
                "{r:?}"
            );
        }
        let mut buf = Vec::new();
        write_yaml(&a, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let batch =
            collectors::inventory::parse_file("gen.yaml", std::path::Path::new("gen.yaml"), &text)
                .unwrap();
        assert_eq!(batch.resources.len(), a.resources.len());
        assert_eq!(batch.relations.len(), a.relations.len());
        assert!(a.resources.len() > 500, "{}", a.resources.len());
        // The same estate as JSON reads back to the same batch.
        let mut buf = Vec::new();
        write_json(&a, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let json =
            collectors::inventory::parse_file("gen.json", std::path::Path::new("gen.json"), &text)
                .unwrap();
        // The same items; only where each came from (file and line) differs.
        let strip = |b: &collectors::ScopeBatch| {
            let mut b = b.clone();
            b.resources.iter_mut().for_each(|r| r.origin = None);
            b.relations.iter_mut().for_each(|r| r.origin = None);
            b
        };
        let (json, yaml) = (strip(&json), strip(&batch));
        assert!(json.resources == yaml.resources, "resources differ");
        assert!(json.relations == yaml.relations, "relations differ");
    }
}
