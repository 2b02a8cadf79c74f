//! `kb-sample`: writes the sample data set of the quickstart and checks a topic holds it exactly.
//!
//!   kb-sample produce BOOTSTRAP TOPIC RECORDS PARTITIONS
//!   kb-sample check   BOOTSTRAP TOPIC RECORDS PARTITIONS
//!
//! `check` reads the topic back and compares every record (partition, order, key, value, headers
//! including null values, timestamp) with the sample set, and checks the topic holds nothing more;
//! it exits non-zero on the first difference.

use std::process::ExitCode;
use std::time::Duration;

use kafka_backup_testkit::kafka::{config_for, consume_all, create_topic, produce, sample_records};

fn usage() -> ExitCode {
    eprintln!("usage: kb-sample produce|check BOOTSTRAP TOPIC RECORDS PARTITIONS");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, bootstrap, topic, records, partitions] = args.as_slice() else {
        return usage();
    };
    let (Ok(records), Ok(partitions)) = (records.parse::<usize>(), partitions.parse::<i32>())
    else {
        return usage();
    };
    let config = config_for(bootstrap);
    let expected = sample_records(records, partitions);
    match cmd.as_str() {
        "produce" => {
            create_topic(&config, topic, partitions, 1, &[]).await;
            produce(&config, topic, &expected);
            println!("produced {records} records to {topic} ({partitions} partitions)");
            ExitCode::SUCCESS
        }
        "check" => {
            let got = consume_all(&config, topic, records, Duration::from_secs(60));
            let mut want = expected;
            want.sort_by_key(|r| r.partition);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if &g.record != w {
                    eprintln!("record {i} differs:\n  got  {:?}\n  want {w:?}", g.record);
                    return ExitCode::FAILURE;
                }
            }
            println!(
                "{topic}: all {records} records match (partition, order, key, value, headers, timestamp)"
            );
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
