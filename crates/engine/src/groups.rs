//! Consumer groups in Kafka: who is active, what they committed, and moving them. The Kafka side
//! of every operation that reads or changes group offsets (restore's offset reset, the offsets
//! operations, snapshots), kept apart from any one of them.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_backup_format::PartitionOffset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::kafka::{self, KafkaContext};

/// Groups among `groups` that have active members, for refusing to move them.
pub fn active_groups(
    config: &ClientConfig,
    groups: &[String],
    timeout: Duration,
) -> Result<Vec<String>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "group reader")?;
    let mut active = Vec::new();
    for g in groups {
        let list = consumer
            .fetch_group_list(Some(g), Timeout::After(timeout))
            .map_err(|source| Error::Kafka {
                operation: format!("describing consumer group {g}"),
                source,
            })?;
        if list
            .groups()
            .iter()
            .any(|d| d.name() == g && !d.members().is_empty())
        {
            active.push(g.clone());
        }
    }
    Ok(active)
}

/// Commits `offsets` (topic, partition) -> offset for `group`, without joining it.
pub fn commit_offsets(
    config: &ClientConfig,
    group: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<()> {
    let mut cfg = config.clone();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<KafkaContext> = kafka::create(&cfg, "offset writer")?;
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|source| Error::Kafka {
                operation: format!("committing offsets of group {group}"),
                source,
            })?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|source| Error::Kafka {
            operation: format!("committing offsets of group {group}"),
            source,
        })
}

/// The first offset of each partition whose record timestamp is >= `ts` (ms), or the end offset
/// when every record is older.
pub fn offsets_for_time(
    config: &ClientConfig,
    partitions: &[(String, i32)],
    ts: i64,
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "offset lookup")?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition_offset(t, *p, Offset::Offset(ts))
            .map_err(|source| Error::Kafka {
                operation: "looking up offsets by time".into(),
                source,
            })?;
    }
    let found = consumer
        .offsets_for_times(tpl, Timeout::After(timeout))
        .map_err(|source| Error::Kafka {
            operation: "looking up offsets by time".into(),
            source,
        })?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) if o >= 0 => o,
            // No record at or after the time: the end of the partition.
            _ => kafka::watermarks(&consumer, e.topic(), e.partition(), timeout)?.1,
        };
        out.insert((e.topic().to_string(), e.partition()), offset);
    }
    Ok(out)
}

/// The groups `patterns` name: a plain name must exist in the cluster, a pattern must match at
/// least one group.
pub fn resolve_groups(
    config: &ClientConfig,
    patterns: &[String],
    field: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "group reader")?;
    let known = kafka::consumer_groups(&consumer, timeout)?;
    let mut out = Vec::new();
    for p in patterns {
        let is_pattern = p.contains('*') || p.contains('?');
        let matched: Vec<&String> = known
            .iter()
            .filter(|g| crate::patterns::matches(p, g))
            .collect();
        if matched.is_empty() {
            return Err(Error::InvalidSpec {
                field: field.to_string(),
                message: if is_pattern {
                    format!("pattern '{p}' matches no consumer group")
                } else {
                    format!(
                        "unknown consumer group '{p}' (the cluster knows {} groups)",
                        known.len()
                    )
                },
            });
        }
        out.extend(matched.into_iter().cloned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Refuses to move groups that have active members, naming them.
pub fn refuse_active(
    config: &ClientConfig,
    groups: &[String],
    field: &str,
    timeout: Duration,
) -> Result<()> {
    let active = active_groups(config, groups, timeout)?;
    if active.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidSpec {
        field: field.to_string(),
        message: format!(
            "consumer group{} {} {} active members; stop {} consumers first",
            if active.len() > 1 { "s" } else { "" },
            active.join(", "),
            if active.len() > 1 { "have" } else { "has" },
            if active.len() > 1 { "their" } else { "its" }
        ),
    })
}

/// Every partition of the topics matching `topics` (all non-internal topics when empty).
pub fn partitions_of(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, i32)>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "metadata")?;
    let all = kafka::list_topics(&consumer, timeout)?;
    let include: Vec<String> = if topics.is_empty() {
        vec!["*".into()]
    } else {
        topics.to_vec()
    };
    let names = crate::patterns::select(all.iter().map(|t| t.name.as_str()), &include, &[]);
    Ok(all
        .into_iter()
        .filter(|t| names.contains(&t.name))
        .flat_map(|t| t.partitions.into_iter().map(move |p| (t.name.clone(), p)))
        .collect())
}

/// The committed offsets of `group` as a map.
pub fn committed_map(
    config: &ClientConfig,
    group: &str,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>> {
    Ok(
        kafka::committed_offsets(config, group, partitions, timeout)?
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect(),
    )
}

/// One group's difference from a snapshot: `(topic, partition, snapshot offset, current offset)`.
pub type Difference = (String, i32, Option<i64>, Option<i64>);

/// How `group`'s committed offsets differ from `wanted` (empty when they match exactly).
pub fn differences(
    config: &ClientConfig,
    group: &str,
    wanted: &[PartitionOffset],
    timeout: Duration,
) -> Result<Vec<Difference>> {
    let parts: Vec<(String, i32)> = wanted
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    let now = committed_map(config, group, &parts, timeout)?;
    Ok(wanted
        .iter()
        .filter_map(|o| {
            let cur = now.get(&(o.topic.clone(), o.partition)).copied();
            (cur != Some(o.offset)).then(|| (o.topic.clone(), o.partition, Some(o.offset), cur))
        })
        .collect())
}
