//! Diagram figures on a generated estate: build time, node count and DOT
//! size of the folded, capped network, dependency and impact diagrams, and
//! (when Graphviz is installed) the SVG render time.
//!
//! `cargo bench --bench diagram` (medium, ≈100k resources);
//! `INFRAGRAPH_BENCH_SIZE=small|large` to change the size. No database: the
//! estate goes straight into a snapshot.

use std::time::Instant;

use infragraph::diagram::{self, Format, Kind, Options};
use infragraph::generate::{Size, generate};
use infragraph::graph::Snapshot;
use infragraph::model::{Provenance, Relation, Resource, Status};

fn prov() -> Vec<Provenance> {
    vec![Provenance {
        source: "generated".into(),
        status: Status::Present,
        first_seen: 0,
        last_seen: 0,
        gone_at: None,
    }]
}

fn main() {
    let size = match std::env::var("INFRAGRAPH_BENCH_SIZE").as_deref() {
        Ok("small") => Size::Small,
        Ok("large") => Size::Large,
        _ => Size::Medium,
    };
    let t = Instant::now();
    let e = generate(size, 42);
    let resources: Vec<Resource> = e
        .resources
        .into_iter()
        .map(|o| Resource {
            name: o.name.clone().unwrap_or_else(|| o.id.clone()),
            id: o.id,
            kind: o.kind,
            labels: o.labels,
            attributes: o.attributes,
            status: Status::Present,
            first_seen: 0,
            last_seen: 0,
            gone_at: None,
            sources: prov(),
        })
        .collect();
    let relations: Vec<Relation> = e
        .relations
        .into_iter()
        .map(|o| Relation {
            from: o.from,
            to: o.to,
            kind: o.kind,
            attributes: o.attributes,
            status: Status::Present,
            first_seen: 0,
            last_seen: 0,
            gone_at: None,
            sources: prov(),
        })
        .collect();
    let (nr, nl) = (resources.len(), relations.len());
    let snap = Snapshot::build(resources, relations, 0);
    println!(
        "{size:?} estate: {nr} resources, {nl} relations (generated and snapshotted in {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    let dot_ok = std::process::Command::new(diagram::dot_program())
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let cases: Vec<(&str, Kind, Options)> = vec![
        ("network (whole estate)", Kind::Network, Options::default()),
        (
            "network --scope vpc:r0-v0",
            Kind::Network,
            Options {
                scope: Some("vpc:r0-v0".into()),
                ..Options::default()
            },
        ),
        (
            "network --scope subnet:r0-v0-z0-0",
            Kind::Network,
            Options {
                scope: Some("subnet:r0-v0-z0-0".into()),
                ..Options::default()
            },
        ),
        (
            "dependencies (whole estate)",
            Kind::Dependencies,
            Options::default(),
        ),
        (
            "dependencies --around svc:s1 --hops 2",
            Kind::Dependencies,
            Options {
                around: Some("svc:s1".into()),
                hops: Some(2),
                ..Options::default()
            },
        ),
        (
            "impact zone:r0a",
            Kind::Impact,
            Options {
                failed: vec!["zone:r0a".into()],
                ..Options::default()
            },
        ),
    ];
    for (name, kind, opts) in cases {
        let t = Instant::now();
        let d = match diagram::build(&snap, kind, &opts) {
            Ok(d) => d,
            Err(e) => {
                println!("{name}: {e}");
                continue;
            }
        };
        let dot = d.dot();
        let built = t.elapsed();
        let mut line = format!(
            "{name}: {} nodes, {} KiB DOT, built in {:.3} s",
            d.nodes,
            dot.len() / 1024,
            built.as_secs_f64()
        );
        if dot_ok {
            let t = Instant::now();
            match diagram::render(&dot, Format::Svg) {
                Ok(svg) => line.push_str(&format!(
                    ", SVG {} KiB rendered in {:.2} s",
                    svg.len() / 1024,
                    t.elapsed().as_secs_f64()
                )),
                Err(e) => line.push_str(&format!(", render failed: {e}")),
            }
        }
        println!("{line}");
        for n in &d.notes {
            println!("    note: {n}");
        }
    }
}
