//! What can make a reconcile pass fail. Each variant names the API call that failed, so the log
//! line and the `kafka_backup_reconcile_errors_total{error="..."}` label say where to look
//! without reading the message.

/// A reconcile pass that failed on the API server; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list the resource's Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("cannot read service account {name} in namespace {namespace}: {source}")]
    ReadServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create service account {name} in namespace {namespace}: {source}")]
    CreateServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create Job {job}: {source}")]
    CreateJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot set annotation {key}: {source}")]
    Annotate {
        key: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("cannot patch status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("cannot mark Job {job} as recorded: {source}")]
    MarkRecorded {
        job: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The variant's name: the `error` label of the error metric. A closed set, so the metric's
    /// cardinality stays bounded whatever the messages say.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ListJobs(_) => "ListJobs",
            Error::ReadServiceAccount { .. } => "ReadServiceAccount",
            Error::CreateServiceAccount { .. } => "CreateServiceAccount",
            Error::CreateJob { .. } => "CreateJob",
            Error::Annotate { .. } => "Annotate",
            Error::PatchStatus(_) => "PatchStatus",
            Error::MarkRecorded { .. } => "MarkRecorded",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_label_is_the_variant_name() {
        let e = Error::PatchStatus(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(e.metric_label(), "PatchStatus");
        assert!(format!("{e:?}").starts_with("PatchStatus"));
    }
}
