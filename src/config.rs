//! Configuration: TOML file, then `VOXGATE_<SECTION>_<KEY>` environment overrides, then
//! command-line flags; validated once at start. Every error names the offending key.
//!
//! The set of keys lives in one place, [`KEYS`], which drives unknown-key detection in the
//! file, the environment mapping and the type of each environment value. A unit test checks
//! that it matches the structs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default config file, read when it exists and no other file is named.
pub const DEFAULT_CONFIG_FILE: &str = "voxgate.toml";

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "VOXGATE_CONFIG";

/// Fully resolved configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Recordings, prompts, spool and (by default) the SQLite database.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub sip: SipConfig,
    pub rtp: RtpConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
    pub webhooks: WebhooksConfig,
    pub tts: TtsConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`. Empty in the file means
    /// `sqlite://<data_dir>/voxgate.db`; after [`Config::load`] it is always set.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    #[serde(with = "opt_addr")]
    pub listen_udp: Option<SocketAddr>,
    #[serde(with = "opt_addr")]
    pub listen_tcp: Option<SocketAddr>,
    /// SIP over TLS (RFC 3261 §26.3.1); needs `tls_cert` and `tls_key`.
    #[serde(with = "opt_addr")]
    pub listen_tls: Option<SocketAddr>,
    /// Accepted in the file so configs can be written ahead; "not yet supported" if set.
    #[serde(with = "opt_addr")]
    pub listen_ws: Option<SocketAddr>,
    #[serde(with = "opt_addr")]
    pub listen_wss: Option<SocketAddr>,
    /// Address written into Via/Contact/SDP. Detected when absent; after
    /// [`Config::load`] it is always `Some`, see [`SipConfig::public_addr`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_addr: Option<IpAddr>,
    pub realm: String,
    /// Digest algorithms offered in 401 challenges, strongest first (RFC 8760 §2.4),
    /// comma-separated: `MD5` (default, what Asterisk, FreeSWITCH and Kamailio offer and
    /// every phone answers), `SHA-256,MD5` (RFC 8760 order), `SHA-256`.
    pub auth_algorithms: String,
    pub nonce_ttl_seconds: u64,
    pub min_expires: u32,
    pub default_expires: u32,
    pub max_expires: u32,
    pub auth_ban_after: u32,
    pub auth_ban_window_seconds: u64,
    pub auth_ban_seconds: u64,
    pub max_message_bytes: usize,
    /// Messages per second per source IP; 0 = unlimited.
    pub source_rate_limit: u32,
    pub source_rate_burst: u32,
    /// New calls (out-of-dialog INVITEs with a new Call-ID) admitted per second; beyond it
    /// they get 503 + Retry-After (`src/sip/overload.rs`). 0 = no limit.
    pub max_cps: u32,
    /// New calls that waited longer than this (ms) in the socket before the core handled
    /// them get 503 + Retry-After (`src/sip/overload.rs`). 0 = off.
    pub overload_queue_delay_ms: u64,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout_seconds: u64,
    /// After SIGTERM, live calls may go on this long before they are hung up (SPEC §1).
    pub shutdown_grace_seconds: u64,
    /// How long voxgate rings the phones of a dial before it gives up (480, `no-answer`).
    pub ring_timeout_seconds: u64,
    /// PEM certificate chain the TLS listener presents (leaf first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that outbound TLS trusts instead of the built-in web roots
    /// (a carrier with a private CA, a self-signed test peer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Verify the certificates of the peers voxgate connects to over TLS (default true).
    pub tls_verify: bool,
    /// DNS servers (`ip:port`) for RFC 3263 resolution of trunk hosts; empty: the system's
    /// (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    pub ports: PortRange,
    /// Forward steady RTP flows in the kernel (eBPF, Linux 6.6+, CAP_BPF and
    /// CAP_NET_ADMIN): `auto` falls back to userspace when that is not available.
    pub kernel_forwarding: KernelForwardingMode,
}

/// `rtp.kernel_forwarding`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KernelForwardingMode {
    Off,
    #[default]
    Auto,
    On,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Bootstrap admin key, stored hashed at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub metrics_public: bool,
    pub max_body_bytes: usize,
}

/// `[webhooks]`: delivery of signed webhooks (SPEC §5, docs/webhooks.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Key of the signatures of status_callback deliveries (webhooks have their own). When
    /// absent, one is generated at first start and kept in the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// One delivery attempt may take this long.
    pub timeout_seconds: u64,
    /// The first retry waits this long; each further one twice as long (±25 % jitter),
    /// at most an hour.
    pub retry_base_ms: u64,
    /// An event not delivered this long after it was created is given up (`failed`).
    pub retry_for_seconds: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            secret: None,
            timeout_seconds: 10,
            retry_base_ms: 5000,
            retry_for_seconds: 86_400,
        }
    }
}

/// `[tts]`: the speech service call programs' `say` uses, any OpenAI-compatible
/// `POST /v1/audio/speech` (OpenAI, a local Piper or Kokoro server…).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    /// The service's base URL (`/v1/audio/speech` is appended); absent: `say` is
    /// skipped, logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub model: String,
    /// The voice when a `say` names none.
    pub voice: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            url: None,
            model: "tts-1".to_owned(),
            voice: "alloy".to_owned(),
            api_key: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive string.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// An inclusive UDP port range `lo-hi` for RTP; `lo` is even (RTP on even, RTCP on odd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./voxgate-data"),
            database: DatabaseConfig::default(),
            sip: SipConfig::default(),
            rtp: RtpConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            webhooks: WebhooksConfig::default(),
            tts: TtsConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 10,
        }
    }
}

const DEFAULT_SIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060);

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen_udp: Some(DEFAULT_SIP),
            listen_tcp: Some(DEFAULT_SIP),
            listen_tls: None,
            listen_ws: None,
            listen_wss: None,
            public_addr: None,
            realm: "voxgate".to_owned(),
            auth_algorithms: "MD5".to_owned(),
            nonce_ttl_seconds: 300,
            min_expires: 60,
            default_expires: 3600,
            max_expires: 86400,
            auth_ban_after: 5,
            auth_ban_window_seconds: 600,
            auth_ban_seconds: 600,
            max_message_bytes: 65535,
            source_rate_limit: 2000,
            source_rate_burst: 4000,
            max_cps: 0,
            overload_queue_delay_ms: 200,
            tcp_max_connections: 4096,
            tcp_idle_timeout_seconds: 300,
            shutdown_grace_seconds: 30,
            ring_timeout_seconds: 60,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_verify: true,
            dns_servers: Vec::new(),
        }
    }
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ports: PortRange {
                lo: 20000,
                hi: 20999,
            },
            kernel_forwarding: KernelForwardingMode::Auto,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            key: None,
            metrics_public: false,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl SipConfig {
    /// The address written into Via/Contact/SDP (detected at load when not configured).
    pub fn public_addr(&self) -> IpAddr {
        self.public_addr.unwrap_or_else(detect_public_addr)
    }
}

impl PortRange {
    pub fn len(&self) -> usize {
        usize::from(self.hi - self.lo) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (lo, hi) = s
            .split_once('-')
            .ok_or_else(|| format!("expected \"lo-hi\", got {s:?}"))?;
        let lo: u16 = lo
            .trim()
            .parse()
            .map_err(|_| format!("bad low port {lo:?} in {s:?}"))?;
        let hi: u16 = hi
            .trim()
            .parse()
            .map_err(|_| format!("bad high port {hi:?} in {s:?}"))?;
        if lo == 0 {
            return Err("the low port must be at least 1".to_owned());
        }
        if lo >= hi {
            return Err(format!("the low port must be below the high port in {s:?}"));
        }
        if !lo.is_multiple_of(2) {
            return Err(format!(
                "the low port must be even (RTP even, RTCP odd), got {lo}"
            ));
        }
        Ok(PortRange { lo, hi })
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A listener address where an empty string (or absence) means "off".
mod opt_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("invalid socket address {s:?}, expected ip:port"))
        })
    }
}

/// First non-loopback IPv4 address of the host, else 127.0.0.1.
///
/// Connecting a UDP socket only selects a route and a local address; no packet is sent.
/// 192.0.2.1 is TEST-NET-1 (RFC 5737), so nothing is ever contacted.
pub fn detect_public_addr() -> IpAddr {
    let detected = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip());
    match detected {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// The type of a key's value, used to read environment variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// A list of strings; in the environment, comma-separated.
    List,
}

/// Every config key as `(section, key, kind)`; section "" is the top level.
pub const KEYS: &[(&str, &str, Kind)] = &[
    ("", "data_dir", Kind::Str),
    ("database", "url", Kind::Str),
    ("database", "max_connections", Kind::Int),
    ("sip", "listen_udp", Kind::Str),
    ("sip", "listen_tcp", Kind::Str),
    ("sip", "listen_tls", Kind::Str),
    ("sip", "listen_ws", Kind::Str),
    ("sip", "listen_wss", Kind::Str),
    ("sip", "public_addr", Kind::Str),
    ("sip", "realm", Kind::Str),
    ("sip", "auth_algorithms", Kind::Str),
    ("sip", "nonce_ttl_seconds", Kind::Int),
    ("sip", "min_expires", Kind::Int),
    ("sip", "default_expires", Kind::Int),
    ("sip", "max_expires", Kind::Int),
    ("sip", "auth_ban_after", Kind::Int),
    ("sip", "auth_ban_window_seconds", Kind::Int),
    ("sip", "auth_ban_seconds", Kind::Int),
    ("sip", "max_message_bytes", Kind::Int),
    ("sip", "source_rate_limit", Kind::Int),
    ("sip", "source_rate_burst", Kind::Int),
    ("sip", "max_cps", Kind::Int),
    ("sip", "overload_queue_delay_ms", Kind::Int),
    ("sip", "tcp_max_connections", Kind::Int),
    ("sip", "tcp_idle_timeout_seconds", Kind::Int),
    ("sip", "shutdown_grace_seconds", Kind::Int),
    ("sip", "ring_timeout_seconds", Kind::Int),
    ("sip", "tls_cert", Kind::Str),
    ("sip", "tls_key", Kind::Str),
    ("sip", "tls_ca", Kind::Str),
    ("sip", "tls_verify", Kind::Bool),
    ("sip", "dns_servers", Kind::List),
    ("rtp", "ports", Kind::Str),
    ("rtp", "kernel_forwarding", Kind::Str),
    ("api", "listen", Kind::Str),
    ("api", "key", Kind::Str),
    ("api", "metrics_public", Kind::Bool),
    ("api", "max_body_bytes", Kind::Int),
    ("log", "level", Kind::Str),
    ("log", "format", Kind::Str),
    ("webhooks", "secret", Kind::Str),
    ("webhooks", "timeout_seconds", Kind::Int),
    ("webhooks", "retry_base_ms", Kind::Int),
    ("webhooks", "retry_for_seconds", Kind::Int),
    ("tts", "url", Kind::Str),
    ("tts", "model", Kind::Str),
    ("tts", "voice", Kind::Str),
    ("tts", "api_key", Kind::Str),
];

/// A configuration error. `key` is always the dotted config key (`sip.min_expires`) or the
/// environment variable / file that is wrong, so the operator knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown config key `{key}`{}", origin_suffix(.origin))]
    UnknownKey { key: String, origin: String },
    #[error("unknown environment variable {var}: no config key `{}` (known: VOXGATE_CONFIG, VOXGATE_LOG, and VOXGATE_<SECTION>_<KEY> for the keys in the config file)", .key)]
    UnknownEnv { var: String, key: String },
    #[error("invalid value for `{key}`{}: {reason}", origin_suffix(.origin))]
    Invalid {
        key: String,
        origin: String,
        reason: String,
    },
    #[error("`{key}` is not yet supported; leave it empty")]
    Unsupported { key: String },
}

fn origin_suffix(origin: &str) -> String {
    if origin.is_empty() {
        String::new()
    } else {
        format!(" (from {origin})")
    }
}

impl ConfigError {
    /// The dotted key (or variable) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Unsupported { key } => Some(key),
            ConfigError::UnknownEnv { var, .. } => Some(var),
        }
    }
}

/// Overrides from the command line, applied last.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `(dotted key, value)` pairs, e.g. `("api.listen", "127.0.0.1:9000")`.
    pub values: Vec<(String, String)>,
}

/// Where the config file comes from: an explicit path (must exist) or the default
/// (`$VOXGATE_CONFIG`, else `./voxgate.toml` if it exists, else built-in defaults).
pub fn config_path(explicit: Option<&Path>, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.get(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
    default.exists().then_some(default)
}

impl Config {
    /// Load from the process environment: file (see [`config_path`]), env, overrides.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("VOXGATE_"))
            .collect();
        let path = config_path(explicit, &env);
        let (text, path) = match path {
            Some(p) => (
                std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?,
                p,
            ),
            None => (String::new(), PathBuf::from("<defaults>")),
        };
        Config::from_parts(&text, &path, &env, overrides)
    }

    /// Build from file text, a `VOXGATE_*` environment map and overrides. Pure, for tests.
    pub fn from_parts(
        toml_text: &str,
        path: &Path,
        env: &BTreeMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml_text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string().trim().replace('\n', " "),
                })?;
        let file_origin = path.display().to_string();
        check_known_keys(&table, &file_origin)?;

        for (var, value) in env {
            let Some((section, key)) = env_key(var)? else {
                continue;
            };
            set_key(&mut table, section, key, value, var)?;
        }
        for (dotted, value) in &overrides.values {
            let (section, key) = match dotted.split_once('.') {
                Some((s, k)) => (s, k),
                None => ("", dotted.as_str()),
            };
            let origin = format!("command line --{}", dotted.replace(['.', '_'], "-"));
            let (section, key) = lookup(section, key).ok_or_else(|| ConfigError::UnknownKey {
                key: dotted.clone(),
                origin: origin.clone(),
            })?;
            set_key(&mut table, section, key, value, &origin)?;
        }

        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Invalid {
                    key,
                    origin: String::new(),
                    reason: e.into_inner().message().to_owned(),
                }
            })?;
        config.finish()?;
        Ok(config)
    }

    /// Fill derived defaults and validate cross-field rules.
    fn finish(&mut self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            origin: String::new(),
            reason,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        if self.database.url.trim().is_empty() {
            self.database.url = format!("sqlite://{}/voxgate.db", self.data_dir.display());
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                format!("expected sqlite://… or postgres://…, got {url:?}"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "must be at least 1".into(),
            ));
        }
        self.check_tls_files()?;
        for (key, v) in [
            ("sip.listen_ws", self.sip.listen_ws),
            ("sip.listen_wss", self.sip.listen_wss),
        ] {
            if v.is_some() {
                return Err(ConfigError::Unsupported { key: key.into() });
            }
        }
        if self.sip.public_addr.is_none() {
            self.sip.public_addr = Some(detect_public_addr());
        }
        if self.sip.realm.trim().is_empty() || self.sip.realm.contains('"') {
            return Err(invalid(
                "sip.realm",
                "must be non-empty and contain no double quote".into(),
            ));
        }
        let algorithms: Vec<&str> = self
            .sip
            .auth_algorithms
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if algorithms.is_empty() || algorithms.iter().any(|a| !matches!(*a, "MD5" | "SHA-256")) {
            return Err(invalid(
                "sip.auth_algorithms",
                "must list MD5 and/or SHA-256, comma-separated".into(),
            ));
        }
        let s = &self.sip;
        if s.min_expires == 0 {
            return Err(invalid("sip.min_expires", "must be at least 1".into()));
        }
        if s.default_expires < s.min_expires {
            return Err(invalid(
                "sip.default_expires",
                format!("must be at least sip.min_expires ({})", s.min_expires),
            ));
        }
        if s.max_expires < s.default_expires {
            return Err(invalid(
                "sip.max_expires",
                format!(
                    "must be at least sip.default_expires ({})",
                    s.default_expires
                ),
            ));
        }
        if s.ring_timeout_seconds == 0 || s.ring_timeout_seconds > 86_400 {
            return Err(invalid(
                "sip.ring_timeout_seconds",
                "must be between 1 and 86400".into(),
            ));
        }
        if s.nonce_ttl_seconds == 0 {
            return Err(invalid(
                "sip.nonce_ttl_seconds",
                "must be at least 1".into(),
            ));
        }
        if s.max_message_bytes < 1024 {
            return Err(invalid(
                "sip.max_message_bytes",
                "must be at least 1024".into(),
            ));
        }
        if s.source_rate_limit > 0 && s.source_rate_burst < s.source_rate_limit {
            return Err(invalid(
                "sip.source_rate_burst",
                format!(
                    "must be at least sip.source_rate_limit ({})",
                    s.source_rate_limit
                ),
            ));
        }
        // The core caps a measured delay at 5 s (a wall-clock step must not stall calls).
        if s.overload_queue_delay_ms > 5000 {
            return Err(invalid(
                "sip.overload_queue_delay_ms",
                "must be at most 5000 (0 turns it off)".into(),
            ));
        }
        if s.tcp_max_connections == 0 {
            return Err(invalid(
                "sip.tcp_max_connections",
                "must be at least 1".into(),
            ));
        }
        if let Some(k) = &self.api.key {
            if k.len() < 16 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "api.key",
                    "must be at least 16 characters with no whitespace".into(),
                ));
            }
        }
        if self.api.max_body_bytes < 1024 {
            return Err(invalid(
                "api.max_body_bytes",
                "must be at least 1024".into(),
            ));
        }
        let w = &self.webhooks;
        if let Some(k) = &w.secret {
            if k.len() < 16 || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "webhooks.secret",
                    "must be at least 16 characters with no whitespace".into(),
                ));
            }
        }
        if !(1..=300).contains(&w.timeout_seconds) {
            return Err(invalid(
                "webhooks.timeout_seconds",
                "must be between 1 and 300".into(),
            ));
        }
        if !(1..=3_600_000).contains(&w.retry_base_ms) {
            return Err(invalid(
                "webhooks.retry_base_ms",
                "must be between 1 and 3600000".into(),
            ));
        }
        if !(1..=30 * 86_400).contains(&w.retry_for_seconds) {
            return Err(invalid(
                "webhooks.retry_for_seconds",
                "must be between 1 and 2592000 (30 days)".into(),
            ));
        }
        if let Some(url) = &self.tts.url {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(invalid("tts.url", "must be an http(s) URL".into()));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", e.to_string()));
        }
        Ok(())
    }

    /// The TLS listener needs a certificate and a key, and every TLS file named must be
    /// readable (its contents are checked when the listener starts).
    fn check_tls_files(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            origin: String::new(),
            reason,
        };
        let s = &self.sip;
        if s.listen_tls.is_some() {
            if s.tls_cert.is_none() {
                return Err(invalid(
                    "sip.tls_cert",
                    "sip.listen_tls is set: a PEM certificate file is required".into(),
                ));
            }
            if s.tls_key.is_none() {
                return Err(invalid(
                    "sip.tls_key",
                    "sip.listen_tls is set: a PEM private key file is required".into(),
                ));
            }
        }
        for (key, path) in [
            ("sip.tls_cert", &s.tls_cert),
            ("sip.tls_key", &s.tls_key),
            ("sip.tls_ca", &s.tls_ca),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::File::open(path) {
                    return Err(invalid(key, format!("cannot read {}: {e}", path.display())));
                }
            }
        }
        Ok(())
    }

    /// Is the database PostgreSQL (else SQLite)?
    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres")
    }
}

fn lookup(section: &str, key: &str) -> Option<(&'static str, &'static str)> {
    KEYS.iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(s, k, _)| (*s, *k))
}

fn kind_of(section: &str, key: &str) -> Kind {
    KEYS.iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map_or(Kind::Str, |(_, _, kind)| *kind)
}

fn dotted(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

fn check_known_keys(table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
    for (name, value) in table {
        let is_section = KEYS.iter().any(|(s, _, _)| *s == name);
        if is_section {
            let toml::Value::Table(inner) = value else {
                return Err(ConfigError::Invalid {
                    key: name.clone(),
                    origin: origin.to_owned(),
                    reason: format!("expected a [{name}] table"),
                });
            };
            for key in inner.keys() {
                if lookup(name, key).is_none() {
                    return Err(ConfigError::UnknownKey {
                        key: format!("{name}.{key}"),
                        origin: origin.to_owned(),
                    });
                }
            }
        } else if lookup("", name).is_none() {
            return Err(ConfigError::UnknownKey {
                key: name.clone(),
                origin: origin.to_owned(),
            });
        }
    }
    Ok(())
}

/// Map a `VOXGATE_*` variable to its `(section, key)`; `Ok(None)` for variables that are
/// not config keys but are known (`VOXGATE_CONFIG`, test-only ones).
pub fn env_key(var: &str) -> Result<Option<(&'static str, &'static str)>, ConfigError> {
    let Some(rest) = var.strip_prefix("VOXGATE_") else {
        return Ok(None);
    };
    match rest {
        "CONFIG" => return Ok(None),
        "LOG" => return Ok(Some(("log", "level"))),
        _ => {}
    }
    // Variables the test-suite and tooling use; not configuration.
    if rest.starts_with("TEST_") {
        return Ok(None);
    }
    let lower = rest.to_ascii_lowercase();
    if let Some(found) = lookup("", &lower) {
        return Ok(Some(found));
    }
    if let Some((section, key)) = lower.split_once('_') {
        if let Some(found) = lookup(section, key) {
            return Ok(Some(found));
        }
    }
    Err(ConfigError::UnknownEnv {
        var: var.to_owned(),
        key: lower.replacen('_', ".", 1),
    })
}

fn set_key(
    table: &mut toml::Table,
    section: &str,
    key: &str,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: dotted(section, key),
        origin: origin.to_owned(),
        reason,
    };
    let value = match kind_of(section, key) {
        Kind::Str => toml::Value::String(raw.to_owned()),
        Kind::Int => toml::Value::Integer(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| invalid(format!("expected an integer, got {raw:?}")))?,
        ),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(invalid(format!("expected true or false, got {raw:?}"))),
        },
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        ),
    };
    if section.is_empty() {
        table.insert(key.to_owned(), value);
        return Ok(());
    }
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(key.to_owned(), value);
            Ok(())
        }
        _ => Err(invalid(format!("[{section}] is not a table"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(
            text,
            Path::new("t.toml"),
            &env(pairs),
            &Overrides::default(),
        )
    }

    #[test]
    fn defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.database.url, "sqlite://./voxgate-data/voxgate.db");
        assert_eq!(c.sip.listen_udp, Some("0.0.0.0:5060".parse().unwrap()));
        assert_eq!(c.sip.listen_tls, None);
        assert_eq!(
            c.rtp.ports,
            PortRange {
                lo: 20000,
                hi: 20999
            }
        );
        assert_eq!(c.api.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.api.max_body_bytes, 1 << 20);
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.sip.public_addr.is_some());
    }

    #[test]
    fn keys_table_matches_structs() {
        // Every field the structs serialise is in KEYS, and every key in KEYS can be set.
        let mut c = Config::default();
        c.sip.public_addr = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        c.api.key = Some("k".repeat(20));
        c.sip.tls_cert = Some("c.pem".into());
        c.sip.tls_key = Some("k.pem".into());
        c.sip.tls_ca = Some("ca.pem".into());
        c.webhooks.secret = Some("s".repeat(20));
        c.tts.url = Some("http://127.0.0.1:1".into());
        c.tts.api_key = Some("k".into());
        let v = toml::Value::try_from(&c).unwrap();
        let toml::Value::Table(t) = v else { panic!() };
        let mut seen = 0;
        for (name, value) in &t {
            if let toml::Value::Table(inner) = value {
                for k in inner.keys() {
                    assert!(lookup(name, k).is_some(), "{name}.{k} missing from KEYS");
                    seen += 1;
                }
            } else {
                assert!(lookup("", name).is_some(), "{name} missing from KEYS");
                seen += 1;
            }
        }
        assert_eq!(seen, KEYS.len(), "KEYS lists a key the structs do not have");
    }

    #[test]
    fn env_mapping() {
        assert_eq!(env_key("VOXGATE_DATA_DIR").unwrap(), Some(("", "data_dir")));
        assert_eq!(
            env_key("VOXGATE_DATABASE_URL").unwrap(),
            Some(("database", "url"))
        );
        assert_eq!(
            env_key("VOXGATE_SIP_LISTEN_UDP").unwrap(),
            Some(("sip", "listen_udp"))
        );
        assert_eq!(
            env_key("VOXGATE_RTP_PORTS").unwrap(),
            Some(("rtp", "ports"))
        );
        assert_eq!(
            env_key("VOXGATE_API_LISTEN").unwrap(),
            Some(("api", "listen"))
        );
        assert_eq!(env_key("VOXGATE_API_KEY").unwrap(), Some(("api", "key")));
        assert_eq!(env_key("VOXGATE_LOG").unwrap(), Some(("log", "level")));
        assert_eq!(
            env_key("VOXGATE_LOG_FORMAT").unwrap(),
            Some(("log", "format"))
        );
        assert_eq!(
            env_key("VOXGATE_SIP_TCP_IDLE_TIMEOUT_SECONDS").unwrap(),
            Some(("sip", "tcp_idle_timeout_seconds"))
        );
        assert_eq!(env_key("VOXGATE_CONFIG").unwrap(), None);
        assert_eq!(env_key("PATH").unwrap(), None);
        let e = env_key("VOXGATE_SIP_LISTEN_UPD").unwrap_err();
        assert_eq!(e.key(), Some("VOXGATE_SIP_LISTEN_UPD"));
        assert!(e.to_string().contains("VOXGATE_SIP_LISTEN_UPD"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "data_dir = \"/d\"\n[sip]\nlisten_udp = \"127.0.0.1:5070\"\nmin_expires = 30\n",
            &[
                ("VOXGATE_SIP_LISTEN_UDP", "127.0.0.1:5080"),
                ("VOXGATE_SIP_MAX_EXPIRES", "7200"),
                ("VOXGATE_API_METRICS_PUBLIC", "true"),
                ("VOXGATE_LOG", "debug,sqlx=warn"),
                ("VOXGATE_LOG_FORMAT", "json"),
                ("VOXGATE_API_KEY", "0123456789abcdef0"),
                ("VOXGATE_RTP_PORTS", "30000-30099"),
                ("VOXGATE_SIP_PUBLIC_ADDR", "127.0.0.1"),
            ],
        )
        .unwrap();
        assert_eq!(c.sip.listen_udp, Some("127.0.0.1:5080".parse().unwrap()));
        assert_eq!(c.sip.min_expires, 30);
        assert_eq!(c.sip.max_expires, 7200);
        assert!(c.api.metrics_public);
        assert_eq!(c.log.level, "debug,sqlx=warn");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.api.key.as_deref(), Some("0123456789abcdef0"));
        assert_eq!(
            c.rtp.ports,
            PortRange {
                lo: 30000,
                hi: 30099
            }
        );
        assert_eq!(c.database.url, "sqlite:///d/voxgate.db");
        assert_eq!(c.sip.public_addr(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            values: vec![("api.listen".into(), "127.0.0.1:9999".into())],
        };
        let c = Config::from_parts(
            "",
            Path::new("t"),
            &env(&[("VOXGATE_API_LISTEN", "127.0.0.1:1")]),
            &o,
        )
        .unwrap();
        assert_eq!(c.api.listen.port(), 9999);
    }

    fn err_key(text: &str, pairs: &[(&str, &str)]) -> String {
        let e = load(text, pairs).unwrap_err();
        let msg = e.to_string();
        let key = e.key().map(str::to_owned).unwrap_or_default();
        assert!(msg.contains(&key), "{msg} should name {key}");
        key
    }

    #[test]
    fn webhooks_section() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.webhooks, WebhooksConfig::default());
        assert_eq!(c.webhooks.timeout_seconds, 10);
        assert_eq!(c.webhooks.retry_for_seconds, 86_400);
        let c = load(
            "[webhooks]\ntimeout_seconds = 3\n",
            &[
                ("VOXGATE_WEBHOOKS_RETRY_BASE_MS", "50"),
                ("VOXGATE_WEBHOOKS_SECRET", "whsec_0123456789abcdef"),
                ("VOXGATE_WEBHOOKS_RETRY_FOR_SECONDS", "600"),
            ],
        )
        .unwrap();
        assert_eq!(c.webhooks.timeout_seconds, 3);
        assert_eq!(c.webhooks.retry_base_ms, 50);
        assert_eq!(c.webhooks.retry_for_seconds, 600);
        assert_eq!(c.webhooks.secret.as_deref(), Some("whsec_0123456789abcdef"));
        for (var, value, key) in [
            (
                "VOXGATE_WEBHOOKS_TIMEOUT_SECONDS",
                "0",
                "webhooks.timeout_seconds",
            ),
            (
                "VOXGATE_WEBHOOKS_RETRY_BASE_MS",
                "0",
                "webhooks.retry_base_ms",
            ),
            (
                "VOXGATE_WEBHOOKS_RETRY_FOR_SECONDS",
                "0",
                "webhooks.retry_for_seconds",
            ),
            ("VOXGATE_WEBHOOKS_SECRET", "short", "webhooks.secret"),
        ] {
            assert_eq!(err_key("", &[(var, value)]), key);
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err_key("[sip]\nlisten_upd = \"x\"\n", &[]),
            "sip.listen_upd"
        );
        assert_eq!(err_key("colour = 1\n", &[]), "colour");
        assert_eq!(err_key("[nope]\na = 1\n", &[]), "nope");
        assert_eq!(
            err_key("[sip]\nmin_expires = \"x\"\n", &[]),
            "sip.min_expires"
        );
        assert_eq!(
            err_key("[sip]\nlisten_udp = \"nohost\"\n", &[]),
            "sip.listen_udp"
        );
        assert_eq!(
            err_key("[rtp]\nports = \"20001-20999\"\n", &[]),
            "rtp.ports"
        );
        assert_eq!(err_key("[rtp]\nports = \"2000-1000\"\n", &[]), "rtp.ports");
        assert_eq!(err_key("[log]\nformat = \"xml\"\n", &[]), "log.format");
        assert_eq!(
            err_key("[sip]\nlisten_tls = \"0.0.0.0:5061\"\n", &[]),
            "sip.tls_cert"
        );
        assert_eq!(
            err_key(
                "[sip]\nlisten_tls = \"0.0.0.0:5061\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
                &[]
            ),
            "sip.tls_cert"
        );
        assert_eq!(
            err_key("", &[("VOXGATE_SIP_TLS_CA", "/nonexistent/ca.pem")]),
            "sip.tls_ca"
        );
        assert_eq!(
            err_key("", &[("VOXGATE_SIP_DNS_SERVERS", "127.0.0.1:53,nohost")]),
            "sip.dns_servers[1]"
        );
        assert_eq!(err_key("[sip]\nmax_expires = 10\n", &[]), "sip.max_expires");
        assert_eq!(
            err_key("[database]\nurl = \"mysql://x\"\n", &[]),
            "database.url"
        );
        assert_eq!(
            err_key("", &[("VOXGATE_SIP_MIN_EXPIRES", "soon")]),
            "sip.min_expires"
        );
        assert_eq!(err_key("", &[("VOXGATE_API_KEY", "short")]), "api.key");
        assert_eq!(err_key("", &[("VOXGATE_BOGUS", "1")]), "VOXGATE_BOGUS");
        assert_eq!(
            err_key("", &[("VOXGATE_API_METRICS_PUBLIC", "maybe")]),
            "api.metrics_public"
        );
        let e = load("[sip\n", &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    }

    #[test]
    fn example_file_is_valid_and_matches_defaults() {
        let text = include_str!("../voxgate.example.toml");
        let c = load(text, &[("VOXGATE_SIP_PUBLIC_ADDR", "127.0.0.1")]).unwrap();
        let d = load("", &[("VOXGATE_SIP_PUBLIC_ADDR", "127.0.0.1")]).unwrap();
        assert_eq!(c, d);
    }

    #[test]
    fn dns_servers_from_file_and_env() {
        let c = load("[sip]\ndns_servers = [\"127.0.0.1:5353\"]\n", &[]).unwrap();
        assert_eq!(c.sip.dns_servers, vec!["127.0.0.1:5353".parse().unwrap()]);
        let c = load(
            "",
            &[("VOXGATE_SIP_DNS_SERVERS", "127.0.0.1:53, [::1]:5353")],
        )
        .unwrap();
        assert_eq!(
            c.sip.dns_servers,
            vec![
                "127.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[::1]:5353".parse().unwrap()
            ]
        );
        assert!(load("", &[]).unwrap().sip.dns_servers.is_empty());
    }

    #[test]
    fn tls_listener_with_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        let c = load(
            "",
            &[
                ("VOXGATE_SIP_LISTEN_TLS", "127.0.0.1:5061"),
                ("VOXGATE_SIP_TLS_CERT", cert.to_str().unwrap()),
                ("VOXGATE_SIP_TLS_KEY", key.to_str().unwrap()),
                ("VOXGATE_SIP_TLS_VERIFY", "false"),
            ],
        )
        .unwrap();
        assert_eq!(c.sip.listen_tls, Some("127.0.0.1:5061".parse().unwrap()));
        assert_eq!(c.sip.tls_cert.as_deref(), Some(cert.as_path()));
        assert!(!c.sip.tls_verify);
    }

    #[test]
    fn empty_listener_is_off() {
        let c = load("[sip]\nlisten_tcp = \"\"\n", &[]).unwrap();
        assert_eq!(c.sip.listen_tcp, None);
    }
}
