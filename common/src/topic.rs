//! Topic and subscription names, and message ids.
//!
//! A topic is `tenant/namespace/name`, written `persistent://tenant/namespace/name` on the
//! wire and in the CLI (the short form is accepted too). Partition `i` of a partitioned
//! topic is the topic `name-partition-i`.

use crate::ids::{EntryId, LedgerId};
use std::fmt;

/// Why a name was rejected; the message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

/// Longest tenant, namespace, topic or subscription name part.
pub const MAX_NAME_LEN: usize = 255;
const PARTITION_SUFFIX: &str = "-partition-";

fn check_part(what: &'static str, full: &str, part: &str) -> Result<(), NameError> {
    let err = |reason: String| NameError {
        what,
        value: full.to_string(),
        reason,
    };
    if part.is_empty() {
        return Err(err("a part is empty".into()));
    }
    if part.len() > MAX_NAME_LEN {
        return Err(err(format!("a part is longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | ':')))
    {
        return Err(err(format!(
            "character {c:?} is not allowed (use letters, digits, '-', '_', '.', '=', ':')"
        )));
    }
    Ok(())
}

/// A validated topic name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName {
    tenant: String,
    namespace: String,
    name: String,
}

impl TopicName {
    /// Parses `persistent://tenant/namespace/name` or `tenant/namespace/name`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let rest = match s.split_once("://") {
            Some(("persistent", rest)) => rest,
            Some((scheme, _)) => {
                return Err(NameError {
                    what: "topic",
                    value: s.to_string(),
                    reason: format!("unknown domain {scheme:?}; topics are persistent://tenant/namespace/topic"),
                });
            }
            None => s,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != 3 {
            return Err(NameError {
                what: "topic",
                value: s.to_string(),
                reason: "expected persistent://tenant/namespace/topic".into(),
            });
        }
        for p in &parts {
            check_part("topic", s, p)?;
        }
        Ok(Self {
            tenant: parts[0].into(),
            namespace: parts[1].into(),
            name: parts[2].into(),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The local name (last part).
    pub fn local_name(&self) -> &str {
        &self.name
    }

    /// `tenant/namespace/name`, as used in metadata keys.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.namespace, self.name)
    }

    /// Partition `i` of this (partitioned) topic.
    pub fn partition(&self, i: u32) -> Self {
        Self {
            tenant: self.tenant.clone(),
            namespace: self.namespace.clone(),
            name: format!("{}{PARTITION_SUFFIX}{i}", self.name),
        }
    }

    /// If this is a partition, its parent topic and index.
    pub fn partition_of(&self) -> Option<(Self, u32)> {
        let (base, idx) = self.name.rsplit_once(PARTITION_SUFFIX)?;
        let idx = idx.parse().ok()?;
        Some((
            Self {
                tenant: self.tenant.clone(),
                namespace: self.namespace.clone(),
                name: base.to_string(),
            },
            idx,
        ))
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "persistent://{}/{}/{}", self.tenant, self.namespace, self.name)
    }
}

/// A validated subscription name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionName(String);

impl SubscriptionName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        check_part("subscription", s, s)?;
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in a managed ledger: an entry of one of its ledgers. Totally ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub ledger: LedgerId,
    pub entry: EntryId,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ledger, self.entry)
    }
}

/// A message: the entry holding it, its index in the entry's batch, and the partition
/// (`-1` when the topic is not partitioned). Ordered like the messages of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub position: Position,
    pub batch_index: u32,
    pub partition: i32,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.position, self.batch_index, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_parse_and_print() {
        let t = TopicName::parse("persistent://acme/orders/new-orders").unwrap();
        assert_eq!(t.to_string(), "persistent://acme/orders/new-orders");
        assert_eq!(t.path(), "acme/orders/new-orders");
        assert_eq!(TopicName::parse("acme/orders/new-orders").unwrap(), t);
        let p = t.partition(3);
        assert_eq!(p.local_name(), "new-orders-partition-3");
        assert_eq!(p.partition_of(), Some((t.clone(), 3)));
        assert_eq!(t.partition_of(), None);
    }

    #[test]
    fn bad_topic_names_say_why() {
        for (bad, why) in [
            ("persistent://a/b", "expected"),
            ("a/b/c/d", "expected"),
            ("non-persistent://a/b/c", "unknown domain"),
            ("a//c", "empty"),
            ("a/b/c d", "not allowed"),
            ("a/b/c/", "expected"),
        ] {
            let e = TopicName::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(TopicName::parse(&format!("a/b/{}", "x".repeat(256))).is_err());
        assert!(SubscriptionName::new("sub/1").is_err());
        assert!(SubscriptionName::new("my-sub").is_ok());
    }
}
