//! The work itself: talking to Kafka and to storage. The CLI and the Job pods the operator starts
//! both run this code; nothing here knows whether it runs under Kubernetes.
//!
//! Two layers. The operations — [`backup`], [`restore`], [`offsets`], [`verify`] — are siblings:
//! none imports another. They stand on the shared layers: [`repo`] and [`storage`] (objects in a
//! repository), [`kafka`] and [`groups`] (the cluster and its consumer groups), [`snapshots`]
//! (offset snapshots, which both restore and the offsets operations take), [`names`] (the names
//! a spec gives), and the `kafka-backup-format` crate (what every stored object is).

pub mod backup;
mod dirstore;
pub mod encryption;
pub mod error;
pub mod groups;
pub mod kafka;
pub mod limits;
pub mod names;
pub mod offsets;
pub mod patterns;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod secrets;
pub mod snapshots;
pub mod storage;
mod util;
pub mod verify;

pub use error::{Error, Result};
pub use util::shutdown_signal;

/// The `n` candidates closest to `target` by edit distance (ties keep the candidates' order), for
/// "did you mean" messages.
pub fn nearest(target: &str, candidates: &[String], n: usize) -> Vec<String> {
    let mut scored: Vec<(usize, usize, &String)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (edit_distance(target, c), i, c))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(n)
        .map(|(_, _, c)| c.clone())
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_ids_come_first() {
        let ids: Vec<String> = [
            "orders-20241201-120000",
            "orders-20241201-130000",
            "payments-20241201-120000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            super::nearest("orders-20241201-120001", &ids, 2),
            vec!["orders-20241201-120000", "orders-20241201-130000"]
        );
        assert_eq!(super::edit_distance("kitten", "sitting"), 3);
    }
}
