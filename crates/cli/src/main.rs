//! `kafka-backup`: backs up Apache Kafka topics to object storage and restores them.

mod commands;
mod manifest;
mod output;
mod progress;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc serves Rust and the bundled librdkafka alike (its symbols replace malloc and free):
/// glibc's allocator spent most of a small-record restore consolidating free lists.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. Two arenas: the busy threads are few whatever the node's
/// core count (by default jemalloc keeps four per core, each holding freed memory), and
/// measurements showed no throughput lost against the default on the small-record benchmarks.
/// Freed pages go back to the system after about a second instead of ten: a small-record backup
/// frees millions of client allocations, and the default kept 20–40 MiB of them resident (peak
/// RSS of a 1 GiB, 100-byte-record backup: 184–207 MiB before, 159–177 MiB after, same speed).
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code)]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &[u8; 47] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Backs up Apache Kafka topics to object storage and restores them exactly.
#[derive(Debug, Parser)]
#[command(name = "kafka-backup", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    /// Log line format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KAFKA_BACKUP_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How results are printed on standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    Text,
    /// One JSON document, for programs.
    Json,
}

/// Options shared by every command that reads a manifest.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// The manifest (YAML, apiVersion kafka.oso.sh/v1alpha1), as applied to Kubernetes.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Where the Secrets the manifest names are found: DIR/<secret-name>/<key>, the layout
    /// Kubernetes uses when it mounts a Secret.
    #[arg(
        long,
        value_name = "DIR",
        env = "KAFKA_BACKUP_SECRETS_DIR",
        default_value = "/var/run/kafka-backup/secrets"
    )]
    pub secrets_dir: PathBuf,
    /// Where `storageType: pvc` volumes are mounted: DIR/<claimName>/<subPath>.
    #[arg(long, value_name = "DIR", env = "KAFKA_BACKUP_PVC_ROOT", default_value = kafka_backup_engine::storage::DEFAULT_PVC_ROOT)]
    pub pvc_root: PathBuf,
    /// Output format of the result.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Back up the topics a KafkaBackup manifest selects; resumes an unfinished run of the same name.
    Backup {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Keep backing up: after reaching the captured end offsets, commit a new incremental
        /// backup every checkpointIntervalSecs until interrupted (SIGINT/SIGTERM).
        #[arg(long)]
        continuous: bool,
        /// Partitions read at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
    },
    /// Restore the backup a KafkaRestore manifest names; resumes an interrupted restore of the same name.
    Restore {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Print the plan (topics, partitions, records within the point-in-time bound, topics to
        /// create) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Partitions restored at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
    },
    /// Prove a backup restorable: every segment present with its recorded size and SHA-256; with
    /// --deep also every block decoded and checked (CRCs, index, record counts, offsets).
    Verify {
        /// The backup id.
        backup_id: String,
        /// Decode every block too.
        #[arg(long)]
        deep: bool,
        #[command(flatten)]
        manifest: ManifestArgs,
    },
    /// Print the CustomResourceDefinitions of every kind (YAML), as deploy/crds holds them.
    Crd,
    /// Run the Kubernetes operator: reconciles KafkaBackup, KafkaRestore, KafkaOffsetReset and
    /// KafkaOffsetRollback resources by running each run as a Job.
    Operator(Box<OperatorArgs>),
    /// Do the one run of the resource in KAFKA_BACKUP_MANIFEST and write the result to the
    /// termination message file: what the operator's Jobs run.
    Worker(worker::WorkerArgs),
    /// Consumer group offsets: snapshots, resets, rollbacks.
    Offsets {
        #[command(subcommand)]
        command: OffsetsCommand,
    },
    /// List the backups at the storage location of a manifest (any kind with spec.storage).
    List {
        #[command(flatten)]
        manifest: ManifestArgs,
        /// Only backups of this KafkaBackup name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Describe one backup: topics, partitions, offset and time ranges, sizes, consumer groups.
    Describe {
        /// The backup id, e.g. orders-backup-20241201-120000.
        backup_id: String,
        #[command(flatten)]
        manifest: ManifestArgs,
    },
}

/// Options of the offsets commands.
#[derive(Debug, clap::Args)]
pub struct OffsetArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// A YAML file holding a `storage` spec (as in spec.storage), used when the manifest has none.
    #[arg(long, value_name = "FILE", env = "KAFKA_BACKUP_DEFAULT_STORAGE")]
    pub default_storage: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Store a snapshot of groups' committed offsets (KafkaOffsetRollback, operation: snapshot).
    Snapshot(OffsetArgs),
    /// List the snapshots at a storage location.
    List(OffsetArgs),
    /// Show one snapshot.
    Show {
        snapshot_id: String,
        #[command(flatten)]
        args: OffsetArgs,
    },
    /// Move groups to new offsets (KafkaOffsetReset).
    Reset(OffsetArgs),
    /// Set groups exactly to a snapshot's offsets, then verify (KafkaOffsetRollback, operation: rollback).
    Rollback(OffsetArgs),
    /// Check groups still have a snapshot's offsets (KafkaOffsetRollback, operation: verify).
    Verify(OffsetArgs),
}

/// Options of `kafka-backup operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Only reconcile resources in this namespace (default: every namespace).
    #[arg(long, value_name = "NS", env = "KAFKA_BACKUP_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Image of the Job pods (default: the operator's own image,
    /// ghcr.io/kafka-backup/kafka-backup:<version>).
    #[arg(long, value_name = "IMAGE", env = "KAFKA_BACKUP_WORKER_IMAGE")]
    worker_image: Option<String>,
    /// Service account of the Job pods; the operator creates it in each namespace it runs Jobs
    /// in, without API access (automountServiceAccountToken: false, no role bindings).
    #[arg(
        long,
        value_name = "NAME",
        env = "KAFKA_BACKUP_WORKER_SERVICE_ACCOUNT",
        default_value = "kafka-backup-worker"
    )]
    worker_service_account: String,
    /// An environment variable of every Job pod, NAME=VALUE (repeatable), e.g. a proxy or
    /// AWS_ENDPOINT_URL; the variables the operator sets itself are refused.
    #[arg(long = "worker-env", value_name = "NAME=VALUE", value_parser = kafka_backup_operator::job::parse_worker_env)]
    worker_env: Vec<(String, String)>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(
        long,
        value_name = "ADDR",
        env = "KAFKA_BACKUP_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: std::net::SocketAddr,
    /// Namespace of the leader election Lease (the operator's own namespace).
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, value_name = "NAME", default_value = "kafka-backup-operator")]
    lease_name: String,
    /// This replica's name in the Lease (default: host name and process id).
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    identity: Option<String>,
    /// A YAML file holding a `storage` spec, used by KafkaOffsetRollback resources without
    /// spec.storage.
    #[arg(long, value_name = "FILE", env = "KAFKA_BACKUP_DEFAULT_STORAGE")]
    default_storage: Option<PathBuf>,
    /// Private scratch directory: Secret values are written here (mode 0600) only while a spec is
    /// checked, then removed. Mount an emptyDir with medium Memory.
    #[arg(
        long,
        value_name = "DIR",
        env = "KAFKA_BACKUP_OPERATOR_WORK_DIR",
        default_value = "/var/run/kafka-backup-operator"
    )]
    work_dir: PathBuf,
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let default_storage = match &args.default_storage {
        None => None,
        Some(p) => Some(commands::read_default_storage(p)?),
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "kafka-backup".into());
        format!("{host}-{}", std::process::id())
    });
    kafka_backup_operator::run(kafka_backup_operator::Config {
        namespace: args.namespace,
        worker_image: args.worker_image.unwrap_or_else(|| {
            format!(
                "ghcr.io/kafka-backup/kafka-backup:{}",
                env!("CARGO_PKG_VERSION")
            )
        }),
        worker_service_account: args.worker_service_account,
        worker_env: args.worker_env,
        http_addr: args.http_addr,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        default_storage,
        work_dir: args.work_dir,
    })
    .await
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAFKA_BACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Backup {
                manifest,
                continuous,
                workers,
            } => commands::backup(&manifest, continuous, workers as usize).await,
            Command::Restore {
                manifest,
                dry_run,
                workers,
            } => commands::restore(&manifest, dry_run, workers as usize).await,
            Command::Crd => commands::crd(),
            Command::Operator(args) => operator(*args).await,
            Command::Worker(args) => worker::run(&args).await,
            Command::Verify {
                backup_id,
                deep,
                manifest,
            } => commands::verify(&manifest, &backup_id, deep).await,
            Command::Offsets { command } => commands::offsets(command).await,
            Command::List { manifest, name } => commands::list(&manifest, name.as_deref()).await,
            Command::Describe {
                backup_id,
                manifest,
            } => commands::describe(&manifest, &backup_id).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = commands::exit_code(&e);
            eprintln!("error: {}", commands::render_error(&e));
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
