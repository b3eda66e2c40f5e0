//! Status conditions in the standard Kubernetes shape (`type`, `status`, `reason`,
//! `message`, `lastTransitionTime`, `observedGeneration`), and how a reconcile updates them.
//!
//! Invariant: `lastTransitionTime` changes only when a condition's `status` changes, so it
//! says since when a state holds, not when the operator last looked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The summary condition: the object is as its spec says.
pub const READY: &str = "Ready";
/// The last sync with the Strata cluster succeeded.
pub const SYNCED: &str = "Synced";
/// The live object differed from the spec at the last resync.
pub const DRIFTED: &str = "Drifted";
/// Deletion of the custom resource waits for a condition to clear.
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// `True`, `False` or `Unknown`.
pub fn status_str(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// Sets condition `type_` in `list`: a new entry, or the existing one updated (its
/// transition time kept unless the status changes).
pub fn set(
    list: &mut Vec<Condition>,
    type_: &str,
    status: Option<bool>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let status = status_str(status).to_string();
    let message = message.into();
    // The API server limits messages to 32 KiB; keep them far shorter.
    let message = truncate(&message, 1024);
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(Timestamp::now());
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => list.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            last_transition_time: Time(Timestamp::now()),
            observed_generation: generation,
        }),
    }
}

/// Sets `Ready` and `Synced` alike: the usual outcome of a sync that failed (or was
/// refused) for one reason.
pub fn set_ready_and_synced(
    list: &mut Vec<Condition>,
    status: Option<bool>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let message = message.into();
    set(list, READY, status, reason, message.clone(), generation);
    set(list, SYNCED, status, reason, message, generation);
}

/// Removes condition `type_` (a concern that no longer applies).
pub fn remove(list: &mut Vec<Condition>, type_: &str) {
    list.retain(|c| c.type_ != type_);
}

/// The condition `type_`, if present.
pub fn get<'a>(list: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    list.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is present with status `True`.
pub fn is_true(list: &[Condition], type_: &str) -> bool {
    get(list, type_).is_some_and(|c| c.status == "True")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut list = Vec::new();
        set(&mut list, READY, Some(false), "Creating", "creating", Some(1));
        let first = list[0].last_transition_time.clone();
        set(&mut list, READY, Some(false), "Unreachable", "down", Some(2));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, first);
        assert_eq!(
            (list[0].reason.as_str(), list[0].observed_generation),
            ("Unreachable", Some(2))
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        set(&mut list, READY, Some(true), "Synced", "ok", Some(2));
        assert_ne!(list[0].last_transition_time, first);
        assert!(is_true(&list, READY));
        remove(&mut list, READY);
        assert!(list.is_empty());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut list = Vec::new();
        set(&mut list, READY, None, "X", "é".repeat(2000), None);
        assert!(list[0].message.len() <= 1024 + "…".len());
        assert_eq!(list[0].status, "Unknown");
    }
}
