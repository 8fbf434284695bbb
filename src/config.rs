//! The `serve` configuration file (TOML): store, listen address, token file
//! and the scheduled collectors. Command-line flags and environment
//! variables override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::collector::ConfiguredCollector;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: Option<String>,
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// File holding the bearer token for writes.
    pub token_file: Option<PathBuf>,
    /// File of agent tokens: `HOSTNAME TOKEN` per line.
    pub agent_tokens_file: Option<PathBuf>,
    /// A host whose agent is silent this long is STALE (default 5m).
    pub agent_stale_after: Option<String>,
    /// ... and this long GONE: its observations are retired (default 24h).
    pub agent_gone_after: Option<String>,
    /// How often to look for runs other processes committed (replicas,
    /// `infragraph collect`) and reload the graph when there are (default 5s).
    pub store_check_interval: Option<String>,
    /// How long a GraphQL request may take before it is abandoned with a
    /// TIMEOUT error (default 30s).
    pub query_timeout: Option<String>,
    /// Names for services found by agents, by port: `{ "5432" = "postgresql" }`.
    #[serde(default)]
    pub service_ports: std::collections::BTreeMap<String, String>,
    /// Scheduled collectors.
    #[serde(default)]
    pub collectors: Vec<CollectorEntry>,
}

/// One `[[collectors]]` entry: `type`, `interval`, and the collector's own
/// options, either inline or under `options`.
#[derive(Debug, Deserialize)]
pub struct CollectorEntry {
    /// Collector type, e.g. `inventory`.
    #[serde(rename = "type")]
    pub kind: String,
    /// How often to run, e.g. `5m`, `1h` (default 15m).
    pub interval: Option<String>,
    /// Options nested under `options = { ... }`.
    #[serde(default)]
    pub options: toml::Table,
    /// Options given inline.
    #[serde(flatten)]
    pub inline: toml::Table,
}

/// A scheduled collector, validated.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The collector.
    pub collector: ConfiguredCollector,
    /// Time between the end of one run and the start of the next.
    pub interval: Duration,
}

/// The configuration `serve` runs with.
#[derive(Debug)]
pub struct Config {
    /// Store URL (absent: the caller's default).
    pub database_url: Option<String>,
    /// Listen address (absent: 127.0.0.1:8080).
    pub listen: Option<SocketAddr>,
    /// Token file.
    pub token_file: Option<PathBuf>,
    /// Collectors to schedule.
    pub collectors: Vec<Scheduled>,
    /// Agent tokens file.
    pub agent_tokens_file: Option<PathBuf>,
    /// Service names by port, for agent reports.
    pub service_ports: std::collections::BTreeMap<u16, String>,
    /// Agent staleness threshold.
    pub agent_stale_after: Option<Duration>,
    /// Agent gone threshold.
    pub agent_gone_after: Option<Duration>,
    /// How often to check the store for other processes' runs.
    pub store_check_interval: Option<Duration>,
    /// See [`ConfigFile::query_timeout`].
    pub query_timeout: Option<Duration>,
}

/// Default interval between runs of a collector.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15 * 60);

impl Config {
    /// Reads and validates a config file. Errors name the file and the entry.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Config> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(l) => anyhow::anyhow!("{}:{l}: {}", path.display(), e.message()),
                None => anyhow::anyhow!("{}: {}", path.display(), e.message()),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let listen = file
            .listen
            .as_deref()
            .map(|l| {
                l.parse::<SocketAddr>().with_context(|| {
                    format!(
                        "{}: listen: '{l}' is not an address like 127.0.0.1:8080",
                        path.display()
                    )
                })
            })
            .transpose()?;
        let mut collectors = Vec::new();
        for (i, entry) in file.collectors.into_iter().enumerate() {
            let what = format!(
                "{}: collectors[{i}] (type '{}')",
                path.display(),
                entry.kind
            );
            let interval = match entry.interval.as_deref() {
                None => DEFAULT_INTERVAL,
                Some(s) => humantime::parse_duration(s).with_context(|| {
                    format!("{what}: interval '{s}' is not a duration like 30s, 5m or 1h")
                })?,
            };
            if interval < Duration::from_secs(1) {
                anyhow::bail!("{what}: interval must be at least 1s");
            }
            let mut options = entry.options;
            options.extend(entry.inline);
            let collector = ConfiguredCollector::from_options(&entry.kind, options, base)
                .with_context(|| what.clone())?;
            collectors.push(Scheduled {
                collector,
                interval,
            });
        }
        let mut service_ports = std::collections::BTreeMap::new();
        for (port, name) in file.service_ports {
            let p: u16 = port.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: service_ports: '{port}' is not a port number",
                    path.display()
                )
            })?;
            collectors::host::valid_service_name(&name).map_err(|why| {
                anyhow::anyhow!(
                    "{}: service_ports: the name '{}' for port {p} {why}",
                    path.display(),
                    name.escape_debug()
                )
            })?;
            service_ports.insert(p, name);
        }
        let duration = |field: &str, v: Option<String>| -> anyhow::Result<Option<Duration>> {
            v.map(|s| {
                humantime::parse_duration(&s).with_context(|| {
                    format!(
                        "{}: {field}: '{s}' is not a duration like 5m or 24h",
                        path.display()
                    )
                })
            })
            .transpose()
        };
        let agent_stale_after = duration("agent_stale_after", file.agent_stale_after)?;
        let agent_gone_after = duration("agent_gone_after", file.agent_gone_after)?;
        // A host goes STALE (shown) before it goes GONE (what it reported
        // retired), and not within two reports at the agent's shortest
        // interval (5 s): "0s" would retire every host a second after its
        // report.
        let stale = agent_stale_after.unwrap_or(crate::agent::DEFAULT_STALE_AFTER);
        let gone = agent_gone_after.unwrap_or(crate::agent::DEFAULT_GONE_AFTER);
        if gone < Duration::from_secs(10) {
            anyhow::bail!(
                "{}: agent_gone_after must be at least 10s (two reports at the shortest agent interval), not {}",
                path.display(),
                humantime::format_duration(gone)
            );
        }
        if stale >= gone {
            anyhow::bail!(
                "{}: agent_stale_after ({}) must be shorter than agent_gone_after ({}): a silent host is shown STALE before what it reported is retired",
                path.display(),
                humantime::format_duration(stale),
                humantime::format_duration(gone)
            );
        }
        Ok(Config {
            agent_stale_after,
            agent_gone_after,
            store_check_interval: match duration("store_check_interval", file.store_check_interval)?
            {
                Some(d) if d < Duration::from_millis(100) => anyhow::bail!(
                    "{}: store_check_interval must be at least 100ms",
                    path.display()
                ),
                d => d,
            },
            query_timeout: match duration("query_timeout", file.query_timeout)? {
                Some(d) if d < Duration::from_millis(100) => {
                    anyhow::bail!("{}: query_timeout must be at least 100ms", path.display())
                }
                d => d,
            },
            agent_tokens_file: file
                .agent_tokens_file
                .map(|p| if p.is_relative() { base.join(p) } else { p }),
            service_ports,
            database_url: file.database_url,
            listen,
            token_file: file
                .token_file
                .map(|p| if p.is_relative() { base.join(p) } else { p }),
            collectors,
        })
    }
}

/// Reads a token file: the first line, trimmed; empty files are an error.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        anyhow::bail!(
            "token file {}: the token must be at least 16 characters",
            path.display()
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_collectors_inline_and_nested() {
        let cfg = Config::parse(
            Path::new("conf/infragraph.toml"),
            r#"
listen = "127.0.0.1:9000"
query_timeout = "2m"
[[collectors]]
type = "inventory"
interval = "5m"
paths = ["demo.yaml"]
[[collectors]]
type = "inventory"
options = { paths = ["/abs/x.json"] }
"#,
        )
        .unwrap();
        assert_eq!(cfg.listen.unwrap().port(), 9000);
        assert_eq!(cfg.query_timeout, Some(Duration::from_secs(120)));
        assert_eq!(cfg.collectors.len(), 2);
        assert_eq!(cfg.collectors[0].interval, Duration::from_secs(300));
        assert_eq!(cfg.collectors[0].collector.scope(), "conf/demo.yaml");
        assert_eq!(cfg.collectors[1].collector.scope(), "/abs/x.json");
        assert_eq!(cfg.collectors[1].interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn errors_name_the_file_and_entry() {
        let p = Path::new("c.toml");
        let e = Config::parse(p, "[[collectors]]\ntype = \"nope\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("c.toml: collectors[0] (type 'nope')"),
            "{e:#}"
        );
        assert!(
            format!("{e:#}").contains("unknown collector type 'nope'"),
            "{e:#}"
        );
        let e = Config::parse(
            p,
            "[[collectors]]\ntype = \"inventory\"\ninterval = \"soon\"\npaths=[\"a.yaml\"]\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("interval 'soon'"), "{e:#}");
        let e = Config::parse(p, "lissen = 1\n").unwrap_err();
        assert!(
            format!("{e:#}").starts_with("c.toml:1: unknown field `lissen`"),
            "{e:#}"
        );
        let e = Config::parse(
            p,
            "[[collectors]]\ntype = \"inventory\"\npath = \"x.yaml\"\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `path`"), "{e:#}");
        let e = Config::parse(p, "query_timeout = \"10ms\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("c.toml: query_timeout must be at least 100ms"),
            "{e:#}"
        );
        let e = Config::parse(p, "query_timeout = \"forever\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("c.toml: query_timeout: 'forever' is not a duration"),
            "{e:#}"
        );
        // Agent times that make no sense, against each other or the
        // defaults (stale 5m, gone 24h).
        for (text, said) in [
            (
                "agent_stale_after = \"1h\"\nagent_gone_after = \"5m\"\n",
                "c.toml: agent_stale_after (1h) must be shorter than agent_gone_after (5m)",
            ),
            (
                "agent_gone_after = \"2m\"\n",
                "c.toml: agent_stale_after (5m) must be shorter than agent_gone_after (2m)",
            ),
            (
                "agent_stale_after = \"1s\"\nagent_gone_after = \"0s\"\n",
                "c.toml: agent_gone_after must be at least 10s",
            ),
        ] {
            let e = Config::parse(p, text).unwrap_err();
            assert!(format!("{e:#}").contains(said), "{text}: {e:#}");
        }
        let cfg = Config::parse(
            p,
            "agent_stale_after = \"30s\"\nagent_gone_after = \"90s\"\n",
        )
        .unwrap();
        assert_eq!(cfg.agent_gone_after, Some(Duration::from_secs(90)));
        // A service_ports name must be one a service id can hold.
        let e = Config::parse(p, "[service_ports]\n8080 = \"my web/app@x\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains(
                "c.toml: service_ports: the name 'my web/app@x' for port 8080 may not contain whitespace"
            ),
            "{e:#}"
        );
        assert!(Config::parse(p, "[service_ports]\n8080 = \"web\"\n").is_ok());
    }
}
