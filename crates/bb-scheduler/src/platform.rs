//! Platforms: what an action asks of the machine that runs it, and what a
//! worker offers. An action's platform is validated as REv2 requires; a
//! worker's is normalized. Matching is by subset (a worker may offer more
//! than an action asks) or, in `exact` mode, by equality as in Buildbarn.

use bb_proto::reapi;
use serde::{Deserialize, Serialize};
use std::fmt;
use tonic::Status;

/// Sorted (name, value) pairs without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform(Vec<(String, String)>);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Every property the action asks for is offered with the same value.
    #[default]
    Subset,
    /// The worker offers exactly the action's properties.
    Exact,
}

impl Platform {
    /// An action's platform. REv2 requires properties sorted by name, then
    /// value; out-of-order or repeated properties are INVALID_ARGUMENT.
    pub fn from_action(platform: Option<&reapi::Platform>) -> Result<Self, Status> {
        let properties: Vec<(String, String)> = platform
            .map(|p| p.properties.iter().map(|p| (p.name.clone(), p.value.clone())).collect())
            .unwrap_or_default();
        for pair in properties.windows(2) {
            if pair[0] == pair[1] {
                return Err(Status::invalid_argument(format!(
                    "platform property {}={} appears twice",
                    pair[0].0, pair[0].1
                )));
            }
            if pair[0] > pair[1] {
                return Err(Status::invalid_argument(format!(
                    "platform properties are not sorted by name and value: {}={} comes before {}={}",
                    pair[0].0, pair[0].1, pair[1].0, pair[1].1
                )));
            }
        }
        Ok(Platform(properties))
    }

    /// Without the properties named in `names`.
    pub fn without(self, names: &[String]) -> Self {
        Platform(self.0.into_iter().filter(|(name, _)| !names.contains(name)).collect())
    }

    /// A worker's offer, in any order.
    pub fn from_worker(platform: Option<&reapi::Platform>) -> Self {
        let mut properties: Vec<(String, String)> = platform
            .map(|p| p.properties.iter().map(|p| (p.name.clone(), p.value.clone())).collect())
            .unwrap_or_default();
        properties.sort();
        properties.dedup();
        Platform(properties)
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let properties = pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>();
        Self::from_worker(Some(&reapi::Platform {
            properties: properties
                .into_iter()
                .map(|(name, value)| reapi::platform::Property { name, value })
                .collect(),
        }))
    }

    /// Whether a worker offering `offer` may run an action asking for `self`.
    pub fn is_satisfied_by(&self, offer: &Platform, mode: MatchMode) -> bool {
        match mode {
            MatchMode::Exact => self == offer,
            // Both sides are sorted: one merge pass.
            MatchMode::Subset => {
                let mut offered = offer.0.iter();
                self.0.iter().all(|wanted| offered.any(|o| o == wanted))
            }
        }
    }

    pub fn to_proto(&self) -> reapi::Platform {
        reapi::Platform {
            properties: self
                .0
                .iter()
                .map(|(name, value)| reapi::platform::Property { name: name.clone(), value: value.clone() })
                .collect(),
        }
    }

    pub fn properties(&self) -> &[(String, String)] {
        &self.0
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("{}");
        }
        let text: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        write!(f, "{{{}}}", text.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(pairs: &[(&str, &str)]) -> reapi::Platform {
        reapi::Platform {
            properties: pairs
                .iter()
                .map(|(n, v)| reapi::platform::Property { name: n.to_string(), value: v.to_string() })
                .collect(),
        }
    }

    #[test]
    fn validates_action_platforms() {
        assert!(Platform::from_action(Some(&proto(&[("OSFamily", "linux"), ("arch", "x86_64")]))).is_ok());
        assert!(
            Platform::from_action(Some(&proto(&[("a", "1"), ("a", "2")]))).is_ok(),
            "repeated names are fine"
        );
        let err = Platform::from_action(Some(&proto(&[("b", "1"), ("a", "1")]))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("not sorted"));
        let err = Platform::from_action(Some(&proto(&[("a", "1"), ("a", "1")]))).unwrap_err();
        assert!(err.message().contains("twice"));
        assert_eq!(Platform::from_action(None).unwrap(), Platform::default());
        let sandboxed =
            Platform::from_action(Some(&proto(&[("OSFamily", "linux"), ("dockerNetwork", "bridge")])));
        let names = vec!["dockerNetwork".to_string()];
        assert_eq!(sandboxed.unwrap().without(&names), Platform::from_pairs(&[("OSFamily", "linux")]));
    }

    #[test]
    fn matches_subsets_or_exactly() {
        let linux = Platform::from_pairs(&[("OSFamily", "linux")]);
        let worker = Platform::from_pairs(&[("arch", "x86_64"), ("OSFamily", "linux")]);
        let empty = Platform::default();
        assert!(linux.is_satisfied_by(&worker, MatchMode::Subset));
        assert!(empty.is_satisfied_by(&worker, MatchMode::Subset));
        assert!(!worker.is_satisfied_by(&linux, MatchMode::Subset));
        assert!(
            !Platform::from_pairs(&[("OSFamily", "windows")]).is_satisfied_by(&worker, MatchMode::Subset)
        );
        assert!(!linux.is_satisfied_by(&worker, MatchMode::Exact));
        assert!(worker.is_satisfied_by(&worker.clone(), MatchMode::Exact));
        assert_eq!(linux.to_string(), "{OSFamily=linux}");
    }
}
