//! Topic selection: `spec.topics` and `spec.excludeTopics` are names or wildcard patterns, where `*`
//! matches any run of characters (also none) and `?` exactly one. Kafka topic names use only
//! `[a-zA-Z0-9._-]`, so no escaping is needed.

/// Topics Kafka itself uses for bookkeeping; never backed up as data whatever the patterns say.
pub const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// Whether `name` matches the wildcard `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    // Iterative matcher with backtracking to the last `*`: O(len(p) * len(n)) worst case.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The topics of `available` selected by `include` minus `exclude`, never internal topics, sorted.
pub fn select<'a>(
    available: impl IntoIterator<Item = &'a str>,
    include: &[String],
    exclude: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = available
        .into_iter()
        .filter(|t| !INTERNAL_TOPICS.contains(t))
        .filter(|t| include.iter().any(|p| matches(p, t)))
        .filter(|t| !exclude.iter().any(|p| matches(p, t)))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", "orders"));
        assert!(matches("*", ""));
        assert!(matches("events-*", "events-"));
        assert!(matches("events-*", "events-clicks"));
        assert!(!matches("events-*", "event-clicks"));
        assert!(matches("*-dlq", "orders-dlq"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("orders-?", "orders-1"));
        assert!(!matches("orders-?", "orders-12"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders2"));
        assert!(matches("__*", "__consumer_offsets"));
        assert!(matches("**x", "x"));
    }

    #[test]
    fn selection_excludes_and_never_includes_internal_topics() {
        let topics = [
            "orders",
            "payments",
            "events-a",
            "events-b",
            "_schemas",
            "__consumer_offsets",
            "__transaction_state",
        ];
        let s = |inc: &[&str], exc: &[&str]| {
            select(
                topics,
                &inc.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &exc.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            s(&["*"], &["_schemas"]),
            vec!["events-a", "events-b", "orders", "payments"]
        );
        assert_eq!(
            s(&["events-*", "orders"], &["events-b"]),
            vec!["events-a", "orders"]
        );
        assert_eq!(s(&["__consumer_offsets"], &[]), Vec::<String>::new());
        assert_eq!(s(&["nothing-*"], &[]), Vec::<String>::new());
    }
}
