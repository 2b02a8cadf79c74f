//! The Kubernetes side of kafka-backup: controllers that turn KafkaBackup, KafkaRestore,
//! KafkaOffsetReset and KafkaOffsetRollback resources into Jobs running the `kafka-backup` binary,
//! and report their outcome in status. Long work never runs inside a reconcile: it runs in the Job.
