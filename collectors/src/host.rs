//! The host collector: what a Linux machine itself knows — its facts, the
//! sockets it listens on and the connections it has open, with the process
//! behind each — read from `/proc` and `/sys` without root, and turned into
//! observations: the host, a service per listening (or connecting) process,
//! and an observed `depends_on` from a client's service to the service it
//! talks to.
//!
//! The agent (`infragraph agent`) gathers a [`HostReport`] on each machine
//! and posts it to the server; `infragraph collect host` gathers one locally.
//! Either way [`observations`] turns the report into one scope batch per
//! host (`agent:HOSTNAME`), so a new report replaces that host's previous one
//! atomically.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{ObservedRelation, ObservedResource, ScopeBatch, kinds};

/// The report format version this build writes and accepts.
pub const REPORT_VERSION: u32 = 1;

/// Largest number of listeners or connections one report may carry.
pub const MAX_SOCKETS: usize = 20_000;

/// What one host reports (JSON; the README documents it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// Always [`REPORT_VERSION`].
    pub version: u32,
    /// Facts about the machine.
    pub host: HostFacts,
    /// Listening TCP sockets and bound UDP sockets.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Established TCP connections.
    #[serde(default)]
    pub connections: Vec<Connection>,
    /// What the agent could not see (other users' processes without root).
    #[serde(default)]
    pub limitations: Vec<String>,
    /// When the agent gathered the report, milliseconds since the epoch.
    /// The server refuses a report not newer than the last one it recorded
    /// for the host (a delayed or replayed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
}

/// Facts about the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFacts {
    /// Host name (`/proc/sys/kernel/hostname`, or `--hostname`).
    pub hostname: String,
    /// `/etc/machine-id`.
    #[serde(default)]
    pub machine_id: Option<String>,
    /// `PRETTY_NAME` of os-release.
    #[serde(default)]
    pub os: Option<String>,
    /// Kernel release (`uname -r`).
    #[serde(default)]
    pub kernel: Option<String>,
    /// Logical CPUs.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Total memory in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Seconds since boot (reported, not stored: it changes every report).
    #[serde(default)]
    pub uptime_seconds: Option<u64>,
    /// Boot time, Unix seconds (`btime` of `/proc/stat`): stored as the
    /// host's `boot_time`, so a reboot shows in its history.
    #[serde(default)]
    pub boot_time: Option<u64>,
    /// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`): the
    /// same boot whatever the clock did to `boot_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Network interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// The EC2 instance identity, when the agent runs on EC2.
    #[serde(default)]
    pub ec2: Option<Ec2Identity>,
}

/// A network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// `eth0`.
    pub name: String,
    /// MAC address, if it has one.
    #[serde(default)]
    pub mac: Option<String>,
    /// Addresses, IPv4 and IPv6, without prefix length.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// From the EC2 instance identity document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Identity {
    /// `i-0abc...`.
    pub instance_id: String,
    /// `us-east-1`.
    pub region: String,
    /// `123456789012`.
    pub account_id: String,
    /// Zone name.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Primary private IP.
    #[serde(default)]
    pub private_ip: Option<String>,
}

/// The process behind a socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// `comm`.
    pub name: String,
    /// Executable path, when readable.
    #[serde(default)]
    pub exe: Option<String>,
    /// systemd unit (`postgresql@15-main.service`), when there is one.
    #[serde(default)]
    pub unit: Option<String>,
}

/// A listening socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Bound address (`0.0.0.0` and `::` for all).
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// The owning process, when visible.
    #[serde(default)]
    pub process: Option<Process>,
}

/// An established TCP connection, seen from this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Local address.
    pub local_address: IpAddr,
    /// Local port.
    pub local_port: u16,
    /// Remote address.
    pub remote_address: IpAddr,
    /// Remote port.
    pub remote_port: u16,
    /// The local process, when visible.
    #[serde(default)]
    pub process: Option<Process>,
}

/// A socket as `/proc/net/{tcp,tcp6,udp,udp6}` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSocket {
    /// Local address (IPv4-mapped IPv6 addresses are turned into IPv4).
    pub local: (IpAddr, u16),
    /// Remote address.
    pub remote: (IpAddr, u16),
    /// Kernel state: 0x0A LISTEN, 0x01 ESTABLISHED, 0x07 CLOSE (bound UDP).
    pub state: u8,
    /// Socket inode, the link to the owning process.
    pub inode: u64,
}

/// TCP state LISTEN.
pub const TCP_LISTEN: u8 = 0x0A;
/// TCP state ESTABLISHED.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// Parses `0100007F:1F90` (IPv4) or a 32-hex-digit IPv6 address and port.
/// The kernel prints each 32-bit word as the host's in-memory integer.
pub fn parse_address(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Parses the text of `/proc/net/tcp`, `tcp6`, `udp` or `udp6`. Lines that
/// do not parse are skipped and counted.
pub fn parse_proc_net(text: &str) -> (Vec<ProcSocket>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            if !line.trim().is_empty() {
                bad += 1;
            }
            continue;
        }
        let parsed = (|| {
            Some(ProcSocket {
                local: parse_address(f[1])?,
                remote: parse_address(f[2])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })();
        match parsed {
            Some(s) => out.push(s),
            None => bad += 1,
        }
    }
    (out, bad)
}

/// The socket inode of an `/proc/PID/fd/N` link target (`socket:[12345]`).
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A process name fit for a service id: `comm` may hold spaces (`Web
/// Content`), `@` or control characters; those become `_`, at most 64 bytes.
pub fn clean_name(comm: &str) -> String {
    comm.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || c == '@' {
                '_'
            } else {
                c
            }
        })
        .fold(String::new(), |mut acc, c| {
            if acc.len() + c.len_utf8() <= 64 {
                acc.push(c);
            }
            acc
        })
}

/// The systemd unit of a process from its `/proc/PID/cgroup` text
/// (`0::/system.slice/postgresql@15-main.service` → the last `.service`).
pub fn systemd_unit(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|l| l.rsplit_once(':').map(|(_, path)| path))
        .flat_map(|path| path.rsplit('/'))
        .find(|c| c.ends_with(".service"))
        .map(str::to_string)
}

/// `PRETTY_NAME` (else `NAME VERSION`) of an os-release file.
pub fn os_release_name(text: &str) -> Option<String> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.trim(), v.trim().trim_matches('"').to_string());
        }
    }
    fields.get("PRETTY_NAME").cloned().or_else(|| {
        let name = fields.get("NAME")?;
        Some(match fields.get("VERSION") {
            Some(v) => format!("{name} {v}"),
            None => name.clone(),
        })
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The host-side reading of `/proc` and `/sys`, rooted at `root` (`/` on a
/// live system; a captured tree in tests).
pub struct ProcFs<'a> {
    /// Usually `/`.
    pub root: &'a Path,
}

impl ProcFs<'_> {
    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(rel)).ok()
    }

    /// Facts, without interfaces' addresses (see [`interfaces`]).
    pub fn facts(&self, hostname: Option<&str>) -> HostFacts {
        let trim = |s: String| s.trim().to_string();
        HostFacts {
            hostname: hostname
                .map(str::to_string)
                .or_else(|| self.read("proc/sys/kernel/hostname").map(trim))
                .unwrap_or_else(|| "localhost".into()),
            machine_id: self
                .read("etc/machine-id")
                .map(trim)
                .filter(|s| !s.is_empty()),
            os: self
                .read("etc/os-release")
                .or_else(|| self.read("usr/lib/os-release"))
                .and_then(|t| os_release_name(&t)),
            kernel: self.read("proc/sys/kernel/osrelease").map(trim),
            cpus: self
                .read("proc/cpuinfo")
                .map(|t| t.lines().filter(|l| l.starts_with("processor")).count() as u32)
                .filter(|n| *n > 0),
            memory_bytes: self.read("proc/meminfo").and_then(|t| mem_total(&t)),
            uptime_seconds: self
                .read("proc/uptime")
                .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
                .map(|s| s as u64),
            boot_time: self.read("proc/stat").and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse().ok())
            }),
            boot_id: self
                .read("proc/sys/kernel/random/boot_id")
                .map(trim)
                .filter(|s| !s.is_empty()),
            interfaces: Vec::new(),
            ec2: None,
        }
    }

    /// Sockets of the reading process's network namespace, by protocol.
    pub fn sockets(&self) -> Vec<(&'static str, ProcSocket)> {
        let mut out = Vec::new();
        for (proto, file) in [
            ("tcp", "proc/net/tcp"),
            ("tcp", "proc/net/tcp6"),
            ("udp", "proc/net/udp"),
            ("udp", "proc/net/udp6"),
        ] {
            if let Some(text) = self.read(file) {
                let (socks, bad) = parse_proc_net(&text);
                if bad > 0 {
                    tracing::debug!(file, bad, "unparsable socket lines skipped");
                }
                out.extend(socks.into_iter().map(|s| (proto, s)));
            }
        }
        out
    }

    /// Socket inode → process, over every `/proc/PID/fd` this user can
    /// read; also how many processes could not be inspected.
    pub fn socket_owners(&self) -> (HashMap<u64, Process>, usize) {
        let mut owners = HashMap::new();
        let mut hidden = 0;
        let Ok(dir) = std::fs::read_dir(self.root.join("proc")) else {
            return (owners, 0);
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let base = entry.path();
            let fds = match std::fs::read_dir(base.join("fd")) {
                Ok(fds) => fds,
                Err(_) => {
                    hidden += 1;
                    continue;
                }
            };
            let mut process: Option<Process> = None;
            for fd in fds.flatten() {
                let Some(inode) = std::fs::read_link(fd.path())
                    .ok()
                    .and_then(|l| socket_inode(&l.to_string_lossy()))
                else {
                    continue;
                };
                let p = process.get_or_insert_with(|| Process {
                    pid,
                    name: std::fs::read_to_string(base.join("comm"))
                        .map(|s| clean_name(s.trim()))
                        .unwrap_or_default(),
                    exe: std::fs::read_link(base.join("exe"))
                        .ok()
                        .map(|p| p.to_string_lossy().into_owned()),
                    unit: std::fs::read_to_string(base.join("cgroup"))
                        .ok()
                        .and_then(|c| systemd_unit(&c)),
                });
                owners.entry(inode).or_insert_with(|| p.clone());
            }
        }
        (owners, hidden)
    }
}

/// Reads this machine: facts, listeners and connections. `interfaces` come
/// from the caller (the agent lists them with `if-addrs`).
pub fn gather(root: &Path, hostname: Option<&str>, interfaces: Vec<Interface>) -> HostReport {
    let fs = ProcFs { root };
    let mut facts = fs.facts(hostname);
    facts.interfaces = interfaces;
    let (owners, hidden) = fs.socket_owners();
    let mut listeners = Vec::new();
    let mut connections = Vec::new();
    let mut unowned = 0;
    for (proto, s) in fs.sockets() {
        let process = owners.get(&s.inode).cloned();
        if process.is_none() && s.inode != 0 {
            unowned += 1;
        }
        let is_listener = match proto {
            "tcp" => s.state == TCP_LISTEN,
            // A bound UDP socket with no peer is a listener.
            _ => s.remote.1 == 0 && s.remote.0.is_unspecified(),
        };
        if is_listener {
            listeners.push(Listener {
                protocol: proto.to_string(),
                address: s.local.0,
                port: s.local.1,
                process,
            });
        } else if proto == "tcp" && s.state == TCP_ESTABLISHED {
            connections.push(Connection {
                local_address: s.local.0,
                local_port: s.local.1,
                remote_address: s.remote.0,
                remote_port: s.remote.1,
                process,
            });
        }
    }
    let mut limitations = Vec::new();
    if hidden > 0 {
        limitations.push(format!(
            "{hidden} processes could not be inspected (other users' processes need root); {unowned} sockets have no known process"
        ));
    }
    listeners
        .sort_by(|a, b| (a.port, a.address, &a.protocol).cmp(&(b.port, b.address, &b.protocol)));
    listeners.dedup();
    HostReport {
        version: REPORT_VERSION,
        host: facts,
        listeners,
        connections,
        limitations,
        sent_at: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        ),
    }
}

/// Names services: `port → name` rules first (`5432 = "postgresql"`), then
/// the systemd unit (without `.service`), then the process name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NamingRules {
    /// Port → service name.
    #[serde(default)]
    pub ports: BTreeMap<u16, String>,
}

impl NamingRules {
    fn name(&self, port: Option<u16>, process: Option<&Process>) -> String {
        if let Some(n) = port.and_then(|p| self.ports.get(&p)) {
            return n.clone();
        }
        match process {
            Some(p) => match &p.unit {
                Some(u) => u.trim_end_matches(".service").to_string(),
                None if !p.name.is_empty() => p.name.clone(),
                None => format!("pid-{}", p.pid),
            },
            None => match port {
                Some(port) => format!("port-{port}"),
                None => "unknown".to_string(),
            },
        }
    }
}

/// Listening endpoints agents published: `(address, port)` → the host and
/// service that listen there (built by the server from its graph).
#[derive(Debug, Clone, Default)]
pub struct ListenerIndex {
    by_endpoint: HashMap<(IpAddr, u16), Vec<(String, String)>>,
    /// Hosts that have each address (an agent's interfaces, an EC2
    /// instance's private IP), by hostname or, without one, resource id.
    owners: HashMap<IpAddr, Vec<String>>,
}

/// What a connection's remote end is, by the listener index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerMatch<'a> {
    /// No other host publishes it.
    Unknown,
    /// The service listening there.
    One(&'a str),
    /// Several hosts publish it (the same private address in two VPCs, a
    /// floating address between failover peers): no guess is made.
    Ambiguous(Vec<&'a str>),
}

impl ListenerIndex {
    /// An empty index.
    pub fn new() -> ListenerIndex {
        ListenerIndex::default()
    }

    /// Records that `service`, on `host`, listens at `endpoint`.
    pub fn insert(&mut self, endpoint: (IpAddr, u16), host: &str, service: String) {
        let v = self.by_endpoint.entry(endpoint).or_default();
        if !v.iter().any(|(h, s)| h == host && *s == service) {
            v.push((host.to_string(), service));
        }
    }

    /// Records that `owner` (a hostname, or the id of a host without one)
    /// has `addr`.
    pub fn claim(&mut self, addr: IpAddr, owner: &str) {
        let v = self.owners.entry(addr).or_default();
        if !v.iter().any(|o| o == owner) {
            v.push(owner.to_string());
        }
    }

    /// Who listens at `endpoint` on a host other than `except_host`. A
    /// listener counts only on an address no other host has: when another
    /// host also has the address (one private range in two VPCs, or a
    /// report claiming someone else's address), the match is ambiguous and
    /// names every candidate.
    pub fn lookup(&self, endpoint: &(IpAddr, u16), except_host: &str) -> ListenerMatch<'_> {
        let listeners: Vec<&(String, String)> = self
            .by_endpoint
            .get(endpoint)
            .into_iter()
            .flatten()
            .filter(|(h, _)| h != except_host)
            .collect();
        if listeners.is_empty() {
            return ListenerMatch::Unknown;
        }
        let mut found: Vec<&str> = listeners.iter().map(|(_, s)| s.as_str()).collect();
        // Other hosts with the address that are not the listener's.
        let rivals = self
            .owners
            .get(&endpoint.0)
            .into_iter()
            .flatten()
            .filter(|o| *o != except_host && !listeners.iter().any(|(h, _)| h == *o));
        found.extend(rivals.map(String::as_str));
        found.sort_unstable();
        found.dedup();
        match found.len() {
            1 => ListenerMatch::One(found[0]),
            _ => ListenerMatch::Ambiguous(found),
        }
    }

    /// How many endpoints it knows.
    pub fn len(&self) -> usize {
        self.by_endpoint.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.by_endpoint.is_empty()
    }
}

/// The id of the host a report describes: its EC2 instance ARN when the
/// agent runs on EC2 (the same resource the EC2 collector reports), else
/// `host:HOSTNAME` (the id an inventory would declare).
pub fn host_id(facts: &HostFacts) -> String {
    match &facts.ec2 {
        Some(e) => format!(
            "arn:{}:ec2:{}:{}:instance/{}",
            if e.region.starts_with("cn-") {
                "aws-cn"
            } else if e.region.starts_with("us-gov-") {
                "aws-us-gov"
            } else {
                "aws"
            },
            e.region,
            e.account_id,
            e.instance_id
        ),
        None => format!("host:{}", facts.hostname),
    }
}

/// Writes IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`) as IPv4 everywhere
/// in a posted report, as the agent does when it reads /proc: one address,
/// one key.
pub fn canonicalize(report: &mut HostReport) {
    for i in &mut report.host.interfaces {
        for a in &mut i.addresses {
            *a = a.to_canonical();
        }
    }
    for l in &mut report.listeners {
        l.address = l.address.to_canonical();
    }
    for c in &mut report.connections {
        c.local_address = c.local_address.to_canonical();
        c.remote_address = c.remote_address.to_canonical();
    }
}

/// Whether `name` can name a service in an id (`svc:NAME@HOST`): what a
/// report's process name may be, and a `service_ports` rule's name.
/// `Err` says why not.
pub fn valid_service_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        Err("must be 1 to 64 bytes long")
    } else if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '@')
    {
        Err("may not contain whitespace, control characters or '@'")
    } else {
        Ok(())
    }
}

/// Checks a report before anything is written; the error names the field.
pub fn validate(report: &HostReport) -> Result<(), String> {
    if report.version != REPORT_VERSION {
        return Err(format!(
            "version: {} is not supported (this server reads version {REPORT_VERSION})",
            report.version
        ));
    }
    let h = &report.host.hostname;
    if h.is_empty()
        || h.len() > 253
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "host.hostname: '{}' is not a host name (letters, digits, '.', '-', '_'; at most 253)",
            h.chars().take(80).collect::<String>()
        ));
    }
    if report.listeners.len() > MAX_SOCKETS || report.connections.len() > MAX_SOCKETS {
        return Err(format!(
            "listeners/connections: at most {MAX_SOCKETS} each (got {} and {})",
            report.listeners.len(),
            report.connections.len()
        ));
    }
    let text_ok = |s: &str, max: usize| s.len() <= max && !s.chars().any(char::is_control);
    let f = &report.host;
    for (field, v) in [
        ("host.machine_id", f.machine_id.as_deref()),
        ("host.os", f.os.as_deref()),
        ("host.kernel", f.kernel.as_deref()),
        ("host.boot_id", f.boot_id.as_deref()),
    ] {
        if let Some(v) = v
            && !text_ok(v, 256)
        {
            return Err(format!(
                "{field}: longer than 256 bytes or has control characters"
            ));
        }
    }
    if f.interfaces.len() > 256 {
        return Err(format!(
            "host.interfaces: at most 256 (got {})",
            f.interfaces.len()
        ));
    }
    for (i, itf) in f.interfaces.iter().enumerate() {
        if !text_ok(&itf.name, 64) || itf.addresses.len() > 256 {
            return Err(format!(
                "host.interfaces[{i}]: name longer than 64 bytes, control characters, or more than 256 addresses"
            ));
        }
        if let Some(m) = &itf.mac
            && !text_ok(m, 64)
        {
            return Err(format!("host.interfaces[{i}].mac: malformed"));
        }
    }
    if report.limitations.len() > 32 || report.limitations.iter().any(|l| !text_ok(l, 1024)) {
        return Err("limitations: at most 32 lines of at most 1024 bytes".into());
    }
    let process_ok = |p: &Option<Process>| -> bool {
        p.as_ref().is_none_or(|p| {
            // The name ends up in a service id: no whitespace or '@'.
            (p.name.is_empty() || valid_service_name(&p.name).is_ok())
                && p.exe.as_deref().is_none_or(|e| text_ok(e, 4096))
                && p.unit
                    .as_deref()
                    .is_none_or(|u| text_ok(u, 256) && !u.contains(char::is_whitespace))
        })
    };
    for (i, l) in report.listeners.iter().enumerate() {
        if !process_ok(&l.process) {
            return Err(format!(
                "listeners[{i}].process: name, exe or unit too long or with forbidden characters"
            ));
        }
    }
    for (i, c) in report.connections.iter().enumerate() {
        if !process_ok(&c.process) {
            return Err(format!(
                "connections[{i}].process: name, exe or unit too long or with forbidden characters"
            ));
        }
    }
    for (i, l) in report.listeners.iter().enumerate() {
        if l.protocol != "tcp" && l.protocol != "udp" {
            return Err(format!(
                "listeners[{i}].protocol: '{}' is not tcp or udp",
                l.protocol
            ));
        }
    }
    if let Some(e) = &report.host.ec2 {
        let ok = e.instance_id.starts_with("i-")
            && e.instance_id.len() <= 32
            && e.instance_id[2..].bytes().all(|b| b.is_ascii_hexdigit())
            && e.account_id.len() == 12
            && e.account_id.bytes().all(|b| b.is_ascii_digit())
            && e.region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err("host.ec2: instance_id, account_id or region is malformed".into());
        }
    }
    Ok(())
}

fn observed_resource(id: String, kind: &str, name: String, attributes: Value) -> ObservedResource {
    ObservedResource {
        id,
        kind: kind.to_string(),
        name: Some(name),
        labels: BTreeMap::new(),
        attributes,
        origin: None,
        placeholder: false,
    }
}

/// Turns a report into the observations of scope `HOSTNAME`: the host, a
/// service per process that listens or connects (`svc:NAME@HOSTNAME`,
/// runs_on the host), an observed depends_on from a client's service to the
/// service listening at the remote end — found in this report (loopback and
/// own addresses) or in `others` — and `external_endpoint` resources
/// (`ext:ADDRESS`) for remote ends nobody reports.
pub fn observations(
    report: &HostReport,
    others: &ListenerIndex,
    rules: &NamingRules,
) -> ScopeBatch {
    let facts = &report.host;
    let hostname = &facts.hostname;
    let host = host_id(facts);
    let mut resources: Vec<ObservedResource> = Vec::new();
    let mut relations: Vec<ObservedRelation> = Vec::new();
    let own_addrs: BTreeSet<IpAddr> = facts
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter().copied())
        .collect();
    resources.push(observed_resource(
        host.clone(),
        "host",
        hostname.clone(),
        json!({
            "hostname": hostname,
            "machine_id": facts.machine_id,
            "os": facts.os,
            "kernel": facts.kernel,
            "cpus": facts.cpus,
            "memory_bytes": facts.memory_bytes,
            "boot_time": facts.boot_time,
            "boot_id": facts.boot_id,
            "interfaces": facts.interfaces,
            "instance_id": facts.ec2.as_ref().map(|e| e.instance_id.clone()),
            "agent": true,
            // Stable across reports (the limitations' counts change every
            // time; they are the run's warnings).
            "limited_view": !report.limitations.is_empty(),
        }),
    ));

    // Services: one per name on this host, with their listening endpoints.
    struct Svc {
        ports: BTreeSet<String>,
        endpoints: BTreeSet<String>,
        processes: BTreeSet<Process>,
    }
    let mut services: BTreeMap<String, Svc> = BTreeMap::new();
    let mut local_index: HashMap<(IpAddr, u16), String> = HashMap::new();
    // A process that listens is one service: its outgoing connections are
    // that service's, whatever it is named by (port rules included).
    let mut pid_service: HashMap<u32, String> = HashMap::new();
    let mut wildcard_ports: std::collections::HashSet<u16> = Default::default();
    let svc_id = |name: &str| format!("svc:{name}@{hostname}");
    for l in &report.listeners {
        let name = rules.name(Some(l.port), l.process.as_ref());
        let id = svc_id(&name);
        let s = services.entry(name.clone()).or_insert_with(|| Svc {
            ports: BTreeSet::new(),
            endpoints: BTreeSet::new(),
            processes: BTreeSet::new(),
        });
        s.ports.insert(format!("{}/{}", l.protocol, l.port));
        if let Some(p) = &l.process {
            s.processes.insert(p.clone());
            pid_service.entry(p.pid).or_insert_with(|| name.clone());
        }
        if l.protocol != "tcp" {
            continue;
        }
        if l.address.is_unspecified() {
            wildcard_ports.insert(l.port);
        }
        // Where clients can reach it: the bound address, or for a wildcard
        // every address of the host.
        let addrs: Vec<IpAddr> = if l.address.is_unspecified() {
            own_addrs
                .iter()
                .copied()
                .chain([
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ])
                .collect()
        } else {
            vec![l.address]
        };
        for a in addrs {
            local_index.insert((a, l.port), id.clone());
            // Published for other hosts' connections only on an address of
            // this host's interfaces: a report cannot claim a listener on
            // an address it does not have (another host's).
            if !a.is_loopback() && own_addrs.contains(&a) {
                s.endpoints
                    .insert(std::net::SocketAddr::new(a, l.port).to_string());
            }
        }
    }

    // Connections: outbound ones (the local port is not one this process
    // listens on) become dependencies.
    let mut deps: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut externals: BTreeMap<IpAddr, BTreeSet<u16>> = BTreeMap::new();
    let mut ambiguous: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for c in &report.connections {
        // Inbound: its local end is a listening endpoint of this host —
        // whichever process holds it (postgres backends, sshd sessions and
        // pre-forked workers accept in other processes than the listener).
        let inbound = local_index.contains_key(&(c.local_address, c.local_port))
            || wildcard_ports.contains(&c.local_port);
        if inbound {
            continue;
        }
        let client_name = c
            .process
            .as_ref()
            .and_then(|p| pid_service.get(&p.pid).cloned())
            .unwrap_or_else(|| rules.name(None, c.process.as_ref()));
        let client = svc_id(&client_name);
        let s = services.entry(client_name).or_insert_with(|| Svc {
            ports: BTreeSet::new(),
            endpoints: BTreeSet::new(),
            processes: BTreeSet::new(),
        });
        if let Some(p) = &c.process {
            s.processes.insert(p.clone());
        }
        let remote = (c.remote_address, c.remote_port);
        let target = match local_index.get(&remote) {
            Some(t) => Some(t.clone()),
            None => match others.lookup(&remote, hostname) {
                ListenerMatch::One(t) => Some(t.to_string()),
                ListenerMatch::Unknown => None,
                ListenerMatch::Ambiguous(candidates) => {
                    ambiguous
                        .entry(c.remote_address)
                        .or_default()
                        .extend(candidates.into_iter().map(str::to_string));
                    None
                }
            },
        };
        let target = match target {
            Some(t) => t,
            None => {
                externals
                    .entry(c.remote_address)
                    .or_default()
                    .insert(c.remote_port);
                format!("ext:{}", c.remote_address)
            }
        };
        if target != client {
            deps.entry((client, target))
                .or_default()
                .insert(format!("tcp/{}", c.remote_port));
        }
    }

    for (name, s) in services {
        let id = svc_id(&name);
        let mut r = observed_resource(
            id.clone(),
            "service",
            name.clone(),
            json!({
                "host": hostname,
                "ports": s.ports,
                "endpoints": s.endpoints,
                "processes": s.processes,
                "evidence": "observed",
            }),
        );
        // An inventory may already call `svc:NAME@HOST` something else (a
        // service_instance): that kind stands.
        r.placeholder = true;
        resources.push(r);
        relations.push(ObservedRelation {
            from: id,
            to: host.clone(),
            kind: kinds::RUNS_ON.to_string(),
            attributes: json!({"evidence": "observed"}),
            origin: None,
        });
    }
    for (addr, ports) in externals {
        let mut attributes = json!({"address": addr, "ports": ports, "evidence": "observed"});
        if let Some(c) = ambiguous.get(&addr) {
            // Several hosts listen there: say so rather than guess.
            attributes["ambiguous_listeners"] = json!(c);
        }
        let mut r = observed_resource(
            format!("ext:{addr}"),
            "external_endpoint",
            addr.to_string(),
            attributes,
        );
        r.placeholder = true;
        resources.push(r);
    }
    for ((from, to), ports) in deps {
        relations.push(ObservedRelation {
            from,
            to,
            kind: kinds::DEPENDS_ON.to_string(),
            attributes: json!({"evidence": "observed", "ports": ports}),
            origin: None,
        });
    }
    ScopeBatch {
        scope: hostname.clone(),
        complete: true,
        resources,
        relations,
        gone: Vec::new(),
    }
}

/// The listening endpoints a batch's services publish (`attributes.endpoints`),
/// for the index other hosts' connections are matched against.
pub fn endpoints_of(attributes: &Value) -> Vec<(IpAddr, u16)> {
    attributes
        .get("endpoints")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.parse::<std::net::SocketAddr>().ok())
        .map(|s| (s.ip(), s.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Debian 12 machine (x86_64): sshd and postgres
    // listening, an outbound connection to 10.0.0.7:5432, a loopback one.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19871 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 22310 1 0000000000000000 100 0 0 10 0
   2: 0500000A:D2F0 0700000A:1538 01 00000000:00000000 02:000A7B4C 00000000  1000        0 40211 2 0000000000000000 20 4 30 10 -1
   3: 0100007F:B5A2 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 40300 1 0000000000000000 20 4 1 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19873 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 51000 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000500000A:1F90 0000000000000000FFFF00000900000A:C350 01 00000000:00000000 00:00000000 00000000  1000        0 51001 1 0000000000000000 20 4 1 10 -1
   3: B80D0120000000000000000001000000:01BB B80D0120000000000000000002000000:E2D4 01 00000000:00000000 00:00000000 00000000  1000        0 51002 1 0000000000000000 20 4 1 10 -1
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 18001 2 0000000000000000 0
";

    #[test]
    fn parses_ipv4_sockets() {
        let (s, bad) = parse_proc_net(TCP);
        assert_eq!(bad, 0);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].local, ("0.0.0.0".parse().unwrap(), 22));
        assert_eq!(s[0].state, TCP_LISTEN);
        assert_eq!(s[1].local, ("127.0.0.1".parse().unwrap(), 5432));
        assert_eq!(s[2].local, ("10.0.0.5".parse().unwrap(), 54000));
        assert_eq!(s[2].remote, ("10.0.0.7".parse().unwrap(), 5432));
        assert_eq!(s[2].state, TCP_ESTABLISHED);
        assert_eq!(s[2].inode, 40211);
    }

    #[test]
    fn parses_ipv6_and_ipv4_mapped_sockets() {
        let (s, bad) = parse_proc_net(TCP6);
        assert_eq!(bad, 0);
        assert_eq!(s[0].local, ("::".parse().unwrap(), 22));
        assert_eq!(s[1].local, ("::1".parse().unwrap(), 8080));
        // ::ffff:10.0.0.5 is reported as 10.0.0.5, so it matches IPv4 peers.
        assert_eq!(s[2].local, ("10.0.0.5".parse().unwrap(), 8080));
        assert_eq!(s[2].remote, ("10.0.0.9".parse().unwrap(), 50000));
        assert_eq!(s[3].local, ("2001:db8::1".parse().unwrap(), 443));
        assert_eq!(s[3].remote, ("2001:db8::2".parse().unwrap(), 58068));
    }

    #[test]
    fn parses_udp_and_skips_garbage() {
        let (s, bad) = parse_proc_net(UDP);
        assert_eq!(bad, 0);
        assert_eq!(s[0].local, ("127.0.0.53".parse().unwrap(), 53));
        assert_eq!(s[0].state, 7);
        let (s, bad) =
            parse_proc_net("header\n 0: zz:1 00000000:0000 0A a b c d e 1\nshort line\n");
        assert!(s.is_empty());
        assert_eq!(bad, 2);
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("0100007F:GGGG"), None);
    }

    #[test]
    fn maps_inodes_units_and_os_names() {
        assert_eq!(clean_name("Web Content"), "Web_Content");
        assert_eq!(clean_name("a@b\tc"), "a_b_c");
        assert_eq!(clean_name(&"é".repeat(64)).len(), 64);
        assert_eq!(socket_inode("socket:[40211]"), Some(40211));
        assert_eq!(socket_inode("pipe:[40211]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(
            systemd_unit("0::/system.slice/postgresql@15-main.service\n").as_deref(),
            Some("postgresql@15-main.service")
        );
        assert_eq!(
            systemd_unit("12:pids:/system.slice/ssh.service\n0::/system.slice/ssh.service\n")
                .as_deref(),
            Some("ssh.service")
        );
        assert_eq!(
            systemd_unit("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(
            os_release_name(
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
            )
            .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24576000 * 1024)
        );
    }

    /// A captured /proc tree: sockets owned through fd links, comm, cgroup.
    #[test]
    fn gathers_from_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let w = |p: &str, t: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        w("proc/net/tcp", TCP);
        w("proc/net/tcp6", "header\n");
        w("proc/sys/kernel/hostname", "db-1\n");
        w("proc/sys/kernel/osrelease", "6.1.0-13-amd64\n");
        w("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        w(
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        );
        w("proc/meminfo", "MemTotal: 1024 kB\n");
        w("proc/cpuinfo", "processor : 0\nprocessor : 1\n");
        w("proc/uptime", "3600.52 7000.1\n");
        w("proc/stat", "cpu  1 2 3 4\nbtime 1764400000\nprocesses 9\n");
        w(
            "proc/sys/kernel/random/boot_id",
            "2f0c53c4-6a5e-4c1a-9b6e-0d1f8a3c9e11\n",
        );
        for (pid, comm, unit, inodes) in [
            (
                200u32,
                "postgres",
                "postgresql@15-main.service",
                vec![22310u64],
            ),
            (300, "checkout", "checkout.service", vec![40211, 40300]),
        ] {
            w(&format!("proc/{pid}/comm"), &format!("{comm}\n"));
            w(
                &format!("proc/{pid}/cgroup"),
                &format!("0::/system.slice/{unit}\n"),
            );
            std::fs::create_dir_all(root.join(format!("proc/{pid}/fd"))).unwrap();
            for (i, inode) in inodes.iter().enumerate() {
                std::os::unix::fs::symlink(
                    format!("socket:[{inode}]"),
                    root.join(format!("proc/{pid}/fd/{}", i + 3)),
                )
                .unwrap();
            }
        }
        let report = gather(
            root,
            None,
            vec![Interface {
                name: "eth0".into(),
                mac: Some("02:00:00:00:00:05".into()),
                addresses: vec!["10.0.0.5".parse().unwrap()],
            }],
        );
        assert_eq!(report.host.hostname, "db-1");
        assert_eq!(report.host.cpus, Some(2));
        assert_eq!(report.host.memory_bytes, Some(1024 * 1024));
        assert_eq!(report.host.uptime_seconds, Some(3600));
        assert_eq!(report.host.boot_time, Some(1_764_400_000));
        assert_eq!(
            report.host.boot_id.as_deref(),
            Some("2f0c53c4-6a5e-4c1a-9b6e-0d1f8a3c9e11")
        );
        assert_eq!(report.listeners.len(), 2);
        let pg = report.listeners.iter().find(|l| l.port == 5432).unwrap();
        assert_eq!(pg.process.as_ref().unwrap().name, "postgres");
        assert_eq!(
            pg.process.as_ref().unwrap().unit.as_deref(),
            Some("postgresql@15-main.service")
        );
        assert_eq!(report.connections.len(), 2);
        assert!(
            report
                .connections
                .iter()
                .all(|c| c.process.as_ref().unwrap().pid == 300)
        );

        // Into observations: checkout depends on the local postgres over
        // loopback, and on 10.0.0.7:5432, which another host reported.
        let mut others = ListenerIndex::new();
        others.insert(
            ("10.0.0.7".parse().unwrap(), 5432),
            "db-2",
            "svc:postgresql@db-2".into(),
        );
        let rules = NamingRules::default();
        let b = observations(&report, &others, &rules);
        assert_eq!(b.scope, "db-1");
        let ids: Vec<&str> = b.resources.iter().map(|r| r.id.as_str()).collect();
        assert!(ids.contains(&"host:db-1"), "{ids:?}");
        assert!(ids.contains(&"svc:postgresql@15-main@db-1"), "{ids:?}");
        assert!(ids.contains(&"svc:checkout@db-1"), "{ids:?}");
        let dep = |to: &str| {
            b.relations
                .iter()
                .any(|r| r.kind == "depends_on" && r.from == "svc:checkout@db-1" && r.to == to)
        };
        assert!(dep("svc:postgresql@15-main@db-1"));
        assert!(dep("svc:postgresql@db-2"));
        assert!(
            b.relations
                .iter()
                .any(|r| r.kind == "runs_on" && r.to == "host:db-1")
        );
        crate::check_contract(&crate::Collection {
            notes: Vec::new(),
            batches: vec![b],
            warnings: vec![],
        })
        .unwrap();

        // A naming rule wins; an unknown remote becomes an external endpoint.
        let rules = NamingRules {
            ports: [(5432, "postgresql".to_string())].into(),
        };
        let b = observations(&report, &ListenerIndex::new(), &rules);
        assert!(b.resources.iter().any(|r| r.id == "svc:postgresql@db-1"));
        assert!(
            b.resources
                .iter()
                .any(|r| r.id == "ext:10.0.0.7" && r.kind == "external_endpoint")
        );
        assert!(
            b.relations
                .iter()
                .any(|r| r.from == "svc:checkout@db-1" && r.to == "ext:10.0.0.7")
        );

        // Two hosts publish 10.0.0.7:5432 (one address in two VPCs): no
        // guess; the endpoint stays external and names both candidates. A
        // host's own listener in the index is not a candidate for itself.
        let mut others = ListenerIndex::new();
        for h in ["db-2", "db-3"] {
            others.insert(
                ("10.0.0.7".parse().unwrap(), 5432),
                h,
                format!("svc:postgresql@{h}"),
            );
        }
        others.insert(
            ("10.0.0.7".parse().unwrap(), 5432),
            "db-2",
            "svc:postgresql@db-2".into(),
        );
        let ep = ("10.0.0.7".parse().unwrap(), 5432);
        assert_eq!(
            others.lookup(&ep, "db-3"),
            ListenerMatch::One("svc:postgresql@db-2")
        );
        // Another host that has the address (here one without an agent,
        // known by its id) makes a single listener there ambiguous.
        let mut claimed = others.clone();
        claimed.claim(ep.0, "db-2");
        assert_eq!(
            claimed.lookup(&ep, "db-3"),
            ListenerMatch::One("svc:postgresql@db-2")
        );
        claimed.claim(ep.0, "arn:aws:ec2:us-east-1:1:instance/i-1");
        assert_eq!(
            claimed.lookup(&ep, "db-3"),
            ListenerMatch::Ambiguous(vec![
                "arn:aws:ec2:us-east-1:1:instance/i-1",
                "svc:postgresql@db-2"
            ])
        );
        assert_eq!(
            others.lookup(&ep, "db-1"),
            ListenerMatch::Ambiguous(vec!["svc:postgresql@db-2", "svc:postgresql@db-3"])
        );
        let b = observations(&report, &others, &NamingRules::default());
        let ext = b.resources.iter().find(|r| r.id == "ext:10.0.0.7").unwrap();
        assert_eq!(
            ext.attributes["ambiguous_listeners"],
            json!(["svc:postgresql@db-2", "svc:postgresql@db-3"])
        );
        assert!(
            !b.relations
                .iter()
                .any(|r| r.to.starts_with("svc:postgresql@db-")),
            "no guessed dependency"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = HostReport {
            version: 1,
            host: HostFacts {
                hostname: "web-1".into(),
                ..Default::default()
            },
            listeners: vec![],
            connections: vec![],
            limitations: vec![],
            sent_at: None,
        };
        assert!(validate(&r).is_ok());
        r.host.hostname = "web 1; rm -rf".into();
        assert!(validate(&r).unwrap_err().starts_with("host.hostname:"));
        r.host.hostname = "web-1".into();
        r.version = 2;
        assert!(validate(&r).unwrap_err().starts_with("version: 2"));
        r.version = 1;
        r.listeners.push(Listener {
            protocol: "sctp".into(),
            address: "0.0.0.0".parse().unwrap(),
            port: 1,
            process: None,
        });
        assert!(
            validate(&r)
                .unwrap_err()
                .starts_with("listeners[0].protocol")
        );
        r.listeners[0].protocol = "tcp".into();
        r.listeners[0].process = Some(Process {
            pid: 1,
            name: "evil name@x".into(),
            exe: None,
            unit: None,
        });
        assert!(
            validate(&r)
                .unwrap_err()
                .starts_with("listeners[0].process")
        );
        r.listeners.clear();
        r.host.os = Some("x".repeat(300));
        assert!(validate(&r).unwrap_err().starts_with("host.os"));
        r.host.os = None;
        r.limitations = vec!["l".into(); 33];
        assert!(validate(&r).unwrap_err().starts_with("limitations"));
    }

    /// Connections accepted by another process than the listener (postgres
    /// backends, sshd sessions) are inbound; a listener's outgoing
    /// connections belong to its (port-rule-named) service.
    #[test]
    fn forked_servers_and_named_listeners() {
        let p = |pid: u32, name: &str| {
            Some(Process {
                pid,
                name: name.into(),
                exe: None,
                unit: None,
            })
        };
        let report = HostReport {
            version: 1,
            host: HostFacts {
                hostname: "db-1".into(),
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    mac: None,
                    addresses: vec!["10.0.0.7".parse().unwrap()],
                }],
                ..Default::default()
            },
            listeners: vec![
                Listener {
                    protocol: "tcp".into(),
                    address: "0.0.0.0".parse().unwrap(),
                    port: 5432,
                    process: p(200, "postgres"),
                },
                Listener {
                    protocol: "tcp".into(),
                    address: "10.0.0.7".parse().unwrap(),
                    port: 7777,
                    process: p(300, "python3"),
                },
                // Not an address of db-1: not published.
                Listener {
                    protocol: "tcp".into(),
                    address: "10.0.0.9".parse().unwrap(),
                    port: 8443,
                    process: p(400, "stray"),
                },
            ],
            connections: vec![
                Connection {
                    local_address: "10.0.0.7".parse().unwrap(),
                    local_port: 5432,
                    remote_address: "10.0.0.5".parse().unwrap(),
                    remote_port: 40000,
                    process: p(201, "postgres"),
                },
                Connection {
                    local_address: "10.0.0.7".parse().unwrap(),
                    local_port: 50000,
                    remote_address: "10.0.0.9".parse().unwrap(),
                    remote_port: 443,
                    process: p(300, "python3"),
                },
            ],
            limitations: vec![],
            sent_at: None,
        };
        let rules = NamingRules {
            ports: [(7777, "ledger-api".to_string())].into(),
        };
        let b = observations(&report, &ListenerIndex::new(), &rules);
        let deps: Vec<(&str, &str)> = b
            .relations
            .iter()
            .filter(|r| r.kind == "depends_on")
            .map(|r| (r.from.as_str(), r.to.as_str()))
            .collect();
        assert_eq!(deps, [("svc:ledger-api@db-1", "ext:10.0.0.9")]);
        assert!(!b.resources.iter().any(|r| r.id == "ext:10.0.0.5"));
        assert!(!b.resources.iter().any(|r| r.id == "svc:python3@db-1"));
        let endpoints = |id: &str| {
            b.resources.iter().find(|r| r.id == id).unwrap().attributes["endpoints"].clone()
        };
        assert_eq!(endpoints("svc:ledger-api@db-1"), json!(["10.0.0.7:7777"]));
        assert_eq!(endpoints("svc:postgres@db-1"), json!(["10.0.0.7:5432"]));
        assert_eq!(endpoints("svc:stray@db-1"), json!([]));
    }
}
