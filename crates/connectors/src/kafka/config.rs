//! Kafka settings: the connection (bootstrap servers, TLS, SASL, extra librdkafka properties), the source
//! and the sink. They come from the pipeline config's `[kafka]` table, then from `FRETFLOW_KAFKA_*`
//! environment variables (which win), then from CLI flags (which win over both).
//!
//! Secrets (the SASL password, the TLS key password, and any extra property whose name contains
//! `password` or `secret`) are held in [`Secret`], whose `Debug` prints `***`: a config can be logged.
//! Never log an `rdkafka::ClientConfig`: its `Debug` prints every value.
use super::KafkaError;
use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A secret string: `Debug` and `Display` print `***`; the value is reachable only through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to librdkafka. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How clients reach the brokers (`security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (the local broker of `deploy/kafka`).
    Plaintext,
    /// TLS, no SASL.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS (hosted Kafka services).
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "plaintext" => Some(Self::Plaintext),
            "ssl" => Some(Self::Ssl),
            "sasl_plaintext" => Some(Self::SaslPlaintext),
            "sasl_ssl" => Some(Self::SaslSsl),
            _ => None,
        }
    }
}

/// TLS files (PEM), for `ssl` and `sasl_ssl`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) that sign the brokers' certificates (`ssl.ca.location`); the system store when unset.
    pub ca_location: Option<String>,
    /// Client certificate for mutual TLS (`ssl.certificate.location`).
    pub certificate_location: Option<String>,
    /// Client private key for mutual TLS (`ssl.key.location`).
    pub key_location: Option<String>,
    /// Password of the client key (`ssl.key.password`).
    pub key_password: Option<Secret>,
}

/// SASL authentication, for `sasl_plaintext` and `sasl_ssl`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (`sasl.mechanism`).
    pub mechanism: Option<String>,
    /// User name (`sasl.username`).
    pub username: Option<String>,
    /// Password (`sasl.password`); prefer the `FRETFLOW_KAFKA_SASL_PASSWORD` environment variable.
    pub password: Option<Secret>,
}

/// How to reach the cluster: the `[kafka]` table of a pipeline config. Its `Debug` redacts secrets.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Comma-separated `host:port` list (`bootstrap.servers`).
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    /// TLS files.
    #[serde(default)]
    pub tls: TlsConfig,
    /// SASL credentials.
    #[serde(default)]
    pub sasl: SaslConfig,
    /// Client id reported to the brokers (`client.id`).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Any other librdkafka property, passed as is (values of names with `password`/`secret` are redacted).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_key(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("ConnectionConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security_protocol", &self.security_protocol)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("client_id", &self.client_id)
            .field("properties", &properties)
            .finish()
    }
}

fn default_bootstrap() -> String {
    "127.0.0.1:9092".to_owned()
}

fn default_client_id() -> String {
    format!("fretflow/{}", env!("CARGO_PKG_VERSION"))
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            security_protocol: None,
            tls: TlsConfig::default(),
            sasl: SaslConfig::default(),
            client_id: default_client_id(),
            properties: BTreeMap::new(),
        }
    }
}

/// The environment variables read by [`ConnectionConfig::apply_env`], each with the field it sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("FRETFLOW_KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
    ("FRETFLOW_KAFKA_SECURITY_PROTOCOL", "security_protocol"),
    ("FRETFLOW_KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    ("FRETFLOW_KAFKA_SASL_USERNAME", "sasl.username"),
    ("FRETFLOW_KAFKA_SASL_PASSWORD", "sasl.password"),
    ("FRETFLOW_KAFKA_SSL_CA_LOCATION", "tls.ca_location"),
    ("FRETFLOW_KAFKA_SSL_CERTIFICATE_LOCATION", "tls.certificate_location"),
    ("FRETFLOW_KAFKA_SSL_KEY_LOCATION", "tls.key_location"),
    ("FRETFLOW_KAFKA_SSL_KEY_PASSWORD", "tls.key_password"),
];

impl ConnectionConfig {
    /// Reads the `[kafka]` table of a pipeline config file (TOML); other tables are ignored. A file without
    /// one gives the defaults.
    pub fn from_pipeline_file(path: &Path) -> Result<Self, KafkaError> {
        let config_error = |message: String| KafkaError::Config { field: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| config_error(e.to_string()))?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        match table.remove("kafka") {
            None => Ok(Self::default()),
            Some(value) => {
                let mut kafka = value.try_into::<toml::Table>().map_err(|e| config_error(format!("[kafka]: {e}")))?;
                // The source and sink tables live under [kafka] too; the connection ignores them.
                kafka.remove("source");
                kafka.remove("sink");
                toml::Value::Table(kafka).try_into().map_err(|e| config_error(format!("[kafka]: {e}")))
            }
        }
    }

    /// Overrides fields from the `FRETFLOW_KAFKA_*` variables ([`ENV_VARS`]) found by `lookup`
    /// (`std::env::var` in practice; a map in tests).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), KafkaError> {
        if let Some(v) = lookup("FRETFLOW_KAFKA_BOOTSTRAP_SERVERS") {
            self.bootstrap_servers = v;
        }
        if let Some(v) = lookup("FRETFLOW_KAFKA_SECURITY_PROTOCOL") {
            self.security_protocol = Some(SecurityProtocol::parse(&v).ok_or_else(|| KafkaError::Config {
                field: "FRETFLOW_KAFKA_SECURITY_PROTOCOL".into(),
                message: format!("'{v}' is not one of plaintext, ssl, sasl_plaintext, sasl_ssl"),
            })?);
        }
        let set = |slot: &mut Option<String>, var: &str| {
            if let Some(v) = lookup(var) {
                *slot = Some(v);
            }
        };
        set(&mut self.sasl.mechanism, "FRETFLOW_KAFKA_SASL_MECHANISM");
        set(&mut self.sasl.username, "FRETFLOW_KAFKA_SASL_USERNAME");
        set(&mut self.tls.ca_location, "FRETFLOW_KAFKA_SSL_CA_LOCATION");
        set(&mut self.tls.certificate_location, "FRETFLOW_KAFKA_SSL_CERTIFICATE_LOCATION");
        set(&mut self.tls.key_location, "FRETFLOW_KAFKA_SSL_KEY_LOCATION");
        if let Some(v) = lookup("FRETFLOW_KAFKA_SASL_PASSWORD") {
            self.sasl.password = Some(Secret::new(v));
        }
        if let Some(v) = lookup("FRETFLOW_KAFKA_SSL_KEY_PASSWORD") {
            self.tls.key_password = Some(Secret::new(v));
        }
        Ok(())
    }

    /// Checks combinations a broker would reject with a less helpful message.
    pub fn validate(&self) -> Result<(), KafkaError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(KafkaError::Config { field: "bootstrap_servers".into(), message: "is empty".into() });
        }
        let sasl = matches!(self.security_protocol, Some(SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl));
        if sasl && (self.sasl.username.is_none() || self.sasl.password.is_none()) {
            let mechanism = self.sasl.mechanism.as_deref().unwrap_or("PLAIN");
            if mechanism != "GSSAPI" && mechanism != "OAUTHBEARER" {
                return Err(KafkaError::Config {
                    field: "sasl".into(),
                    message: "a SASL security_protocol needs sasl.username and sasl.password \
                              (or FRETFLOW_KAFKA_SASL_USERNAME / FRETFLOW_KAFKA_SASL_PASSWORD)"
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// The librdkafka client settings shared by consumers, producers and admin clients.
    /// The result holds secrets: never log it.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers).set("client.id", &self.client_id);
        if let Some(protocol) = self.security_protocol {
            config.set("security.protocol", protocol.as_librdkafka());
        }
        let optional = [
            ("ssl.ca.location", self.tls.ca_location.as_deref()),
            ("ssl.certificate.location", self.tls.certificate_location.as_deref()),
            ("ssl.key.location", self.tls.key_location.as_deref()),
            ("ssl.key.password", self.tls.key_password.as_ref().map(Secret::expose)),
            ("sasl.mechanism", self.sasl.mechanism.as_deref()),
            ("sasl.username", self.sasl.username.as_deref()),
            ("sasl.password", self.sasl.password.as_ref().map(Secret::expose)),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The settings as `key = value` lines with every secret replaced by `***`, for logs and error messages.
    pub fn redacted(&self) -> String {
        let config = self.client_config();
        let mut lines: Vec<String> = config
            .config_map()
            .iter()
            .map(|(k, v)| if is_secret_key(k) { format!("{k} = ***") } else { format!("{k} = {v}") })
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// Whether a librdkafka property holds a secret (passwords, OAuth client secrets, key material).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.ends_with(".pem") || key.contains("sasl.jaas")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn debug_and_redacted_never_show_secrets() {
        let mut config = ConnectionConfig::default();
        let env: HashMap<&str, &str> = [
            ("FRETFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("FRETFLOW_KAFKA_SASL_USERNAME", "alice"),
            ("FRETFLOW_KAFKA_SASL_PASSWORD", "hunter2-sasl"),
            ("FRETFLOW_KAFKA_SSL_KEY_PASSWORD", "hunter2-key"),
        ]
        .into();
        config.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        config.properties.insert("sasl.oauthbearer.client.secret".into(), "hunter2-oauth".into());
        config.properties.insert("linger.ms".into(), "7".into());
        for shown in [format!("{config:?}"), config.redacted()] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("alice") && shown.contains('7'), "{shown}");
        }
        let client = config.client_config();
        assert_eq!(client.get("sasl.password"), Some("hunter2-sasl"));
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        config.validate().unwrap();
    }

    #[test]
    fn pipeline_file_kafka_table_then_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(
            &path,
            "[llm]\nmodel = \"x\"\n[kafka]\nbootstrap_servers = \"a:1\"\nclient_id = \"me\"\n\
             [kafka.sasl]\nusername = \"u\"\n[kafka.source]\ntopic = \"p\"\n",
        )
        .unwrap();
        let mut config = ConnectionConfig::from_pipeline_file(&path).unwrap();
        assert_eq!((config.bootstrap_servers.as_str(), config.client_id.as_str()), ("a:1", "me"));
        config.apply_env(|k| (k == "FRETFLOW_KAFKA_BOOTSTRAP_SERVERS").then(|| "b:2".to_string())).unwrap();
        assert_eq!(config.bootstrap_servers, "b:2");
        assert_eq!(config.sasl.username.as_deref(), Some("u"));
    }

    #[test]
    fn unknown_field_and_bad_protocol_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[kafka]\nbootstrap = \"a:1\"\n").unwrap();
        let err = ConnectionConfig::from_pipeline_file(&path).unwrap_err().to_string();
        assert!(err.contains("bootstrap") && err.contains("p.toml"), "{err}");
        let err = ConnectionConfig::default()
            .apply_env(|k| (k == "FRETFLOW_KAFKA_SECURITY_PROTOCOL").then(|| "tls".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FRETFLOW_KAFKA_SECURITY_PROTOCOL") && err.contains("tls"), "{err}");
    }

    #[test]
    fn sasl_without_password_is_rejected() {
        let config =
            ConnectionConfig { security_protocol: Some(SecurityProtocol::SaslSsl), ..ConnectionConfig::default() };
        assert!(config.validate().unwrap_err().to_string().contains("sasl"));
    }
}
