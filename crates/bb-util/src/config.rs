//! Configuration files: TOML, parsed into structs that deny unknown fields,
//! with errors that name the file, the key and the line. Durations and sizes
//! are written the way people say them: `"30s"`, `"2h"`, `"10GiB"`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read { path: String, source: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
}

/// Reads and parses a config file.
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    parse(&text, &path.display().to_string())
}

/// Parses config text; `origin` names it in errors (a path, or "embedded default").
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    // toml's error text carries "at line L, column C", the offending line
    // and, for unknown or mistyped keys, the key's name.
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Loads `path` if given, else the program's embedded default config.
pub fn load_or_default<T: DeserializeOwned>(path: Option<&Path>, default: &str) -> Result<T, ConfigError> {
    match path {
        Some(path) => load_file(path),
        None => parse(default, "embedded default"),
    }
}

/// A size in bytes, written as an integer or as `"512KiB"`, `"10GiB"`, `"1.5GB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = (&text[..split], text[split..].trim());
        let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like \"10GiB\""))?;
        let multiplier: u64 = match unit {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "MB" => 1000_u64.pow(2),
            "GB" => 1000_u64.pow(3),
            "TB" => 1000_u64.pow(4),
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        let bytes = number * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] =
            [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// A duration written as `"30s"`, `"5m"`, `"2h 30m"`, `"100ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(std::time::Duration::from_secs(secs))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| format!("{text:?} is not a duration like \"30s\" or \"2h\": {e}"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        size: ByteSize,
        timeout: HumanDuration,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[allow(dead_code)]
        count: u32,
    }

    #[test]
    fn sizes() {
        assert_eq!("10GiB".parse::<ByteSize>().unwrap(), ByteSize(10 << 30));
        assert_eq!("1.5 KiB".parse::<ByteSize>().unwrap(), ByteSize(1536));
        assert_eq!("1MB".parse::<ByteSize>().unwrap(), ByteSize(1_000_000));
        assert_eq!("42".parse::<ByteSize>().unwrap(), ByteSize(42));
        assert!("10 parsecs".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(10 << 30).to_string(), "10GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn parses_human_values() {
        let s: Sample = parse("size = \"4MiB\"\ntimeout = \"1m 30s\"\n", "test").unwrap();
        assert_eq!(s.size, ByteSize(4 << 20));
        assert_eq!(s.timeout.get(), std::time::Duration::from_secs(90));
        let s: Sample = parse("size = 7\ntimeout = \"5ms\"\n[nested]\ncount = 1\n", "test").unwrap();
        assert_eq!(s.size, ByteSize(7));
        assert!(s.nested.is_some());
    }

    #[test]
    fn errors_name_key_and_line() {
        let err = parse::<Sample>("size = \"1GiB\"\ntimeout = \"1s\"\nbogus = 3\n", "my.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("my.toml") && text.contains("bogus") && text.contains("line 3"), "{text}");

        let err = parse::<Sample>("size = \"1GiB\"\ntimeout = \"soon\"\n", "my.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("timeout") && text.contains("line 2") && text.contains("soon"), "{text}");

        let err =
            parse::<Sample>("size = \"1GiB\"\ntimeout = \"1s\"\n[nested]\ncount = \"x\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");
    }
}
