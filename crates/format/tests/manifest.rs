//! Manifest and checkpoint JSON: the example of docs/format.md parses and round-trips, other
//! documents and newer versions are refused with clear errors.

use kafka_backup_format::{
    Checkpoint, CheckpointState, Codec, CodecName, CompressionInfo, FormatError, Gap, GapReason,
    Manifest, PartitionEntry, SegmentEntry, TopicEntry, parse_rfc3339, parse_segment_path,
};

/// Copied verbatim from docs/format.md §4.
const DOC_EXAMPLE: &str = r#"{
  "format": "kafka-backup-manifest",
  "formatVersion": 1,
  "backupId": "orders-backup-20241201-120000",
  "backupName": "orders-backup",
  "previousBackupId": "orders-backup-20241201-110000",
  "sourceClusterId": "production-us-west-2",
  "kafkaClusterId": "MkU3OEVBNTcwNTJENDM2Qk",
  "startTime": "2024-12-01T12:00:00Z",
  "completionTime": "2024-12-01T12:05:00Z",
  "tool": "kafka-backup 0.1.0",
  "compression": {"codec": "zstd", "level": 3},
  "includeOffsetHeaders": true,
  "topics": [
    {
      "name": "orders",
      "topicId": "o3V6fCrzQWa0rJQ1X7a8Kw",
      "partitionCount": 3,
      "replicationFactor": 3,
      "configs": {"cleanup.policy": "delete", "retention.ms": "604800000"},
      "partitions": [
        {
          "partition": 0,
          "startOffset": 0,
          "endOffset": 1000,
          "records": 988,
          "minTimestamp": 1733050800000,
          "maxTimestamp": 1733054400000,
          "gaps": [{"from": 0, "to": 10, "reason": "logStart"}],
          "segments": [
            {
              "path": "orders-backup/segments/orders/0/00000000000000000010-3f2a9c0d1e4b5a67.kbseg",
              "size": 123456,
              "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
              "firstOffset": 10,
              "lastOffset": 999,
              "records": 988,
              "minTimestamp": 1733050800000,
              "maxTimestamp": 1733054400000,
              "rawBytes": 1048000,
              "blocks": 2
            }
          ]
        }
      ]
    }
  ],
  "consumerGroups": [
    {"groupId": "order-processor", "offsets": [{"topic": "orders", "partition": 0, "offset": 500, "metadata": ""}]}
  ],
  "totals": {"topics": 1, "partitions": 3, "records": 2994, "segments": 3, "storedBytes": 370368, "rawBytes": 3144000, "uploadedBytes": 123456}
}
"#;

#[test]
fn the_documented_example_parses() {
    let m = Manifest::from_json(DOC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(m.backup_id, "orders-backup-20241201-120000");
    assert_eq!(m.backup_name, "orders-backup");
    assert_eq!(
        m.previous_backup_id.as_deref(),
        Some("orders-backup-20241201-110000")
    );
    assert_eq!(m.source_cluster_id.as_deref(), Some("production-us-west-2"));
    assert_eq!(
        m.kafka_cluster_id.as_deref(),
        Some("MkU3OEVBNTcwNTJENDM2Qk")
    );
    assert_eq!(parse_rfc3339(&m.start_time), Some(1_733_054_400));
    assert_eq!(m.tool, "kafka-backup 0.1.0");
    assert_eq!(
        m.compression,
        CompressionInfo {
            codec: CodecName::Zstd,
            level: Some(3)
        }
    );
    assert_eq!(m.compression.to_codec().unwrap(), Codec::Zstd { level: 3 });
    assert!(m.include_offset_headers);
    assert!(m.encryption.is_none());
    let t = &m.topics[0];
    assert_eq!(
        (t.name.as_str(), t.partition_count, t.replication_factor),
        ("orders", 3, 3)
    );
    assert_eq!(t.topic_id.as_deref(), Some("o3V6fCrzQWa0rJQ1X7a8Kw"));
    assert_eq!(t.configs["retention.ms"], "604800000");
    let p = &t.partitions[0];
    assert_eq!(
        (p.partition, p.start_offset, p.end_offset, p.records),
        (0, 0, 1000, 988)
    );
    assert_eq!(
        (p.min_timestamp, p.max_timestamp),
        (Some(1_733_050_800_000), Some(1_733_054_400_000))
    );
    assert_eq!(
        p.gaps,
        vec![Gap {
            from: 0,
            to: 10,
            reason: GapReason::LogStart
        }]
    );
    assert_eq!(p.target_offset, None);
    let s = &p.segments[0];
    assert_eq!(
        (
            s.size,
            s.first_offset,
            s.last_offset,
            s.records,
            s.raw_bytes,
            s.blocks
        ),
        (123_456, 10, 999, 988, 1_048_000, 2)
    );
    assert_eq!(s.sha256.len(), 64);
    let parsed = parse_segment_path(&s.path).unwrap();
    assert_eq!((parsed.first_offset, parsed.partition), (10, 0));
    let g = &m.consumer_groups[0];
    assert_eq!(g.group_id, "order-processor");
    assert_eq!(
        (g.offsets[0].offset, g.offsets[0].metadata.as_deref()),
        (500, Some(""))
    );
    assert_eq!(m.totals.records, 2994);
    assert_eq!(m.totals.uploaded_bytes, 123_456);
}

#[test]
fn manifests_round_trip_and_keep_the_documented_field_names() {
    let m = Manifest::from_json(DOC_EXAMPLE.as_bytes()).unwrap();
    let json = m.to_json();
    assert_eq!(Manifest::from_json(&json).unwrap(), m);
    // Same JSON value as the example: every documented field is written under its name.
    let ours: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let doc: serde_json::Value = serde_json::from_str(DOC_EXAMPLE).unwrap();
    assert_eq!(ours, doc);
    let text = String::from_utf8(json).unwrap();
    assert!(
        text.starts_with("{\n  \"format\": \"kafka-backup-manifest\",\n  \"formatVersion\": 1,"),
        "{text}"
    );
}

#[test]
fn optional_fields_are_omitted_and_unknown_fields_ignored() {
    let mut m = Manifest::from_json(DOC_EXAMPLE.as_bytes()).unwrap();
    m.previous_backup_id = None;
    m.source_cluster_id = None;
    m.kafka_cluster_id = None;
    m.topics[0].topic_id = None;
    m.topics[0].partitions[0].min_timestamp = None;
    m.topics[0].partitions[0].max_timestamp = None;
    m.consumer_groups[0].offsets[0].metadata = None;
    let text = String::from_utf8(m.to_json()).unwrap();
    for absent in [
        "previousBackupId",
        "sourceClusterId",
        "kafkaClusterId",
        "topicId",
        "metadata",
        "encryption",
        "targetOffset",
        "null",
    ] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    // Segment entries keep their timestamps; the partition's are gone.
    assert_eq!(
        text.matches("minTimestamp").count(),
        1,
        "only the segment's remains"
    );
    // Unknown fields, even nested, and an unknown gap reason from a newer writer of version 1.
    let mut v: serde_json::Value = serde_json::from_str(DOC_EXAMPLE).unwrap();
    v["someFutureField"] = serde_json::json!({"x": 1});
    v["topics"][0]["partitions"][0]["futureField"] = serde_json::json!([1, 2]);
    v["topics"][0]["partitions"][0]["gaps"][0]["reason"] = serde_json::json!("someNewReason");
    let m = Manifest::from_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(m.topics[0].partitions[0].gaps[0].reason, GapReason::Unknown);
}

#[test]
fn newer_versions_and_other_documents_are_refused() {
    let v2 = DOC_EXAMPLE.replace("\"formatVersion\": 1", "\"formatVersion\": 2");
    let err = Manifest::from_json(v2.as_bytes()).unwrap_err();
    assert!(
        matches!(err, FormatError::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("manifest formatVersion 2 is not supported"),
        "{msg}"
    );
    // A v2 document whose shape changed still reports the version, not a field error.
    let err = Manifest::from_json(
        br#"{"format": "kafka-backup-manifest", "formatVersion": 2, "topics": "changed"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, FormatError::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );

    let other = DOC_EXAMPLE.replace("kafka-backup-manifest", "something-else");
    let msg = Manifest::from_json(other.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not a kafka-backup manifest") && msg.contains("something-else"),
        "{msg}"
    );
    let msg = Manifest::from_json(br#"{"formatVersion": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing"), "{msg}");
    let msg = Manifest::from_json(br#"{"format": "kafka-backup-manifest", "formatVersion": "1"}"#)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("formatVersion"), "{msg}");
    let msg = Manifest::from_json(br#"{"format": "kafka-backup-manifest", "formatVersion": 0}"#)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("formatVersion is 0"), "{msg}");
    let msg = Manifest::from_json(b"{not json").unwrap_err().to_string();
    assert!(msg.starts_with("invalid manifest JSON"), "{msg}");
    let msg = Manifest::from_json(br#"{"format": "kafka-backup-manifest", "formatVersion": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing field"), "{msg}");
    // A checkpoint is not a manifest, and the other way round.
    let cp = checkpoint().to_json();
    let msg = Manifest::from_json(&cp).unwrap_err().to_string();
    assert!(msg.contains("kafka-backup-checkpoint"), "{msg}");
    assert!(Checkpoint::from_json(DOC_EXAMPLE.as_bytes()).is_err());
}

fn checkpoint() -> Checkpoint {
    Checkpoint {
        backup_id: "orders-backup-20241201-120000".into(),
        backup_name: "orders-backup".into(),
        state: CheckpointState::Running,
        start_time: "2024-12-01T12:00:00Z".into(),
        checkpoint_time: Some("2024-12-01T12:01:00Z".into()),
        previous_backup_id: None,
        source_cluster_id: None,
        kafka_cluster_id: None,
        tool: Some("kafka-backup 0.1.0".into()),
        compression: Some(Codec::Lz4 { level: 9 }.into()),
        include_offset_headers: Some(true),
        encryption: None,
        topics: vec![TopicEntry {
            name: "orders".into(),
            topic_id: None,
            partition_count: 1,
            replication_factor: 3,
            configs: Default::default(),
            partitions: vec![PartitionEntry {
                partition: 0,
                start_offset: 0,
                end_offset: 1000,
                records: 10,
                min_timestamp: Some(1),
                max_timestamp: Some(2),
                gaps: vec![],
                segments: vec![SegmentEntry {
                    path: "p".into(),
                    size: 1,
                    sha256: "00".repeat(32),
                    first_offset: 0,
                    last_offset: 9,
                    records: 10,
                    min_timestamp: 1,
                    max_timestamp: 2,
                    raw_bytes: 100,
                    blocks: 1,
                }],
                target_offset: Some(1000),
                next_offset: Some(1000),
            }],
        }],
    }
}

#[test]
fn checkpoints_round_trip() {
    let cp = checkpoint();
    let json = cp.to_json();
    let text = std::str::from_utf8(&json).unwrap();
    assert!(text.contains("\"state\": \"running\""), "{text}");
    assert!(text.contains("\"targetOffset\": 1000"), "{text}");
    assert!(
        text.contains("\"format\": \"kafka-backup-checkpoint\""),
        "{text}"
    );
    assert!(text.contains("\"codec\": \"lz4\""), "{text}");
    assert_eq!(Checkpoint::from_json(&json).unwrap(), cp);
    let bad = text.replace("running", "done");
    assert!(Checkpoint::from_json(bad.as_bytes()).is_err());
}

#[test]
fn compression_info_converts() {
    for codec in [
        Codec::None,
        Codec::Zstd { level: 22 },
        Codec::Lz4 { level: 12 },
    ] {
        assert_eq!(CompressionInfo::from(codec).to_codec().unwrap(), codec);
    }
    let bad = CompressionInfo {
        codec: CodecName::Zstd,
        level: Some(99),
    };
    assert!(bad.to_codec().unwrap_err().to_string().contains("99"));
    let bad = CompressionInfo {
        codec: CodecName::Lz4,
        level: Some(-1),
    };
    assert!(bad.to_codec().is_err());
    let default = CompressionInfo {
        codec: CodecName::Zstd,
        level: None,
    };
    assert_eq!(default.to_codec().unwrap(), Codec::Zstd { level: 3 });
}
