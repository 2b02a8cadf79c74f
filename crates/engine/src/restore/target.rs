//! The target cluster as a restore sees it: checks before anything is written, the topics it
//! creates, the records it purges, and partition offsets, which restore asks for in one place
//! ([`Target::offsets`]) before writing (where to start), after (that nothing else was written)
//! and for its dry run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_backup_format::TopicEntry;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};
use crate::groups;
use crate::kafka::{self, KafkaContext};
use crate::util::blocking;

/// Partition offsets: `(topic, partition)` to `(log start, end)`.
pub type Marks = BTreeMap<(String, i32), (i64, i64)>;

/// The cluster restored into.
pub(super) struct Target {
    pub kafka: ClientConfig,
    pub timeout: Duration,
}

impl Target {
    /// Fails early when the cluster cannot be reached or a group to move has active members.
    pub async fn check(&self, groups: &[String]) -> Result<()> {
        let (cfg, timeout) = (self.kafka.clone(), self.timeout);
        tokio::task::spawn_blocking(move || kafka::probe(&cfg, timeout))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.refuse_active(groups).await
    }

    /// Refuses to move groups that have active members.
    pub async fn refuse_active(&self, groups: &[String]) -> Result<()> {
        let (cfg, g, timeout) = (self.kafka.clone(), groups.to_vec(), self.timeout);
        blocking(move || {
            groups::refuse_active(&cfg, &g, "spec.offsetReset.consumerGroups", timeout)
        })
        .await
    }

    /// The target topics among `names` that exist, with their partition counts.
    pub async fn existing_topics(&self, names: Vec<String>) -> Result<BTreeMap<String, usize>> {
        let (cfg, timeout) = (self.kafka.clone(), self.timeout);
        let found = blocking(move || {
            let c: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
            kafka::named_topics(&c, &names, timeout)
        })
        .await?;
        Ok(found
            .into_iter()
            .map(|t| (t.name, t.partitions.len()))
            .collect())
    }

    /// The offsets of `partitions`. Those of topics in `empty` (created by this run) are
    /// `(0, 0)` without asking: asking would only wait out the moments before their partitions'
    /// leaders start answering (about a second), which the producer rides out by itself. A
    /// record written there meanwhile by someone else is caught by the end-offset check after
    /// the restore.
    pub async fn offsets(
        &self,
        partitions: &[(String, i32)],
        empty: &BTreeSet<String>,
    ) -> Result<Marks> {
        let ask = partitions
            .iter()
            .filter(|(t, _)| !empty.contains(t))
            .cloned()
            .collect();
        let mut marks = kafka::watermarks_of(&self.kafka, ask, self.timeout).await?;
        for (t, p) in partitions.iter().filter(|(t, _)| empty.contains(t)) {
            marks.insert((t.clone(), *p), (0, 0));
        }
        Ok(marks)
    }

    /// The first offset of each partition at or after time `ts` (ms).
    pub async fn offsets_for_time(
        &self,
        partitions: Vec<(String, i32)>,
        ts: i64,
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let (cfg, timeout) = (self.kafka.clone(), self.timeout);
        blocking(move || groups::offsets_for_time(&cfg, &partitions, ts, timeout)).await
    }

    /// Creates `topics` (target name, source topic) with the backup's partition count and
    /// configs; returns those this call created (one created meanwhile by someone else is not).
    pub async fn create_topics(
        &self,
        topics: &[(String, TopicEntry)],
        replication: Option<i32>,
    ) -> Result<BTreeSet<String>> {
        let mut created = BTreeSet::new();
        if topics.is_empty() {
            return Ok(created);
        }
        let admin: AdminClient<KafkaContext> = kafka::create(&self.kafka, "admin")?;
        let news: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(target, t)| {
                let mut n = NewTopic::new(
                    target,
                    t.partition_count,
                    TopicReplication::Fixed(replication.unwrap_or(-1)),
                );
                for (k, v) in &t.configs {
                    n = n.set(k, v);
                }
                n
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = admin
            .create_topics(news.iter(), &options)
            .await
            .map_err(|source| Error::Kafka {
                operation: "creating topics".into(),
                source,
            })?;
        for r in results {
            match r {
                Ok(topic) => {
                    created.insert(topic);
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Kafka {
                        operation: format!("creating topic {topic}"),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        let counts: Vec<(String, i32)> = topics
            .iter()
            .map(|(t, e)| (t.clone(), e.partition_count))
            .collect();
        wait_for_topics(&self.kafka, &counts, self.timeout).await?;
        tracing::info!(topics = ?topics.iter().map(|(t, _)| t).collect::<Vec<_>>(), "created target topics");
        Ok(created)
    }

    /// Deletes the records below the given offset of each partition.
    pub async fn purge(&self, parts: &[(String, i32, i64)]) -> Result<()> {
        purge(&self.kafka, parts, self.timeout).await
    }
}

async fn wait_for_topics(
    cfg: &ClientConfig,
    topics: &[(String, i32)],
    timeout: Duration,
) -> Result<()> {
    let cfg = cfg.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
        let deadline = Instant::now() + timeout;
        loop {
            let ready = topics.iter().all(|(t, n)| {
                c.fetch_metadata(Some(t), Duration::from_secs(5))
                    .ok()
                    .and_then(|md| {
                        md.topics().first().map(|mt| {
                            mt.error().is_none()
                                && mt.partitions().len() == *n as usize
                                && mt.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                    .unwrap_or(false)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Internal(format!(
                    "created topics not ready within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

async fn purge(cfg: &ClientConfig, parts: &[(String, i32, i64)], timeout: Duration) -> Result<()> {
    let admin: AdminClient<KafkaContext> = kafka::create(cfg, "admin")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, p, end) in parts {
        tpl.add_partition_offset(t, *p, rdkafka::Offset::Offset(*end))
            .map_err(|source| Error::Kafka {
                operation: "planning the purge".into(),
                source,
            })?;
    }
    admin
        .delete_records(&tpl, &AdminOptions::new().operation_timeout(Some(timeout)))
        .await
        .map_err(|source| Error::Kafka {
            operation: "purging existing records".into(),
            source,
        })?;
    Ok(())
}
