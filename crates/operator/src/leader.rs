//! Leader election through a coordination.k8s.io/v1 Lease: only the holder reconciles, so two
//! replicas never both act. The holder renews every [`RENEW_EVERY`]; another replica takes over
//! once a Lease has not been renewed for its `leaseDurationSeconds`. Updates carry the Lease's
//! resourceVersion, so two replicas racing for an expired Lease cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and how often a standby tries to acquire.
pub const RENEW_EVERY: Duration = Duration::from_secs(4);

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Acquires or renews the Lease; `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = now_micro();
        let duration = LEASE_DURATION.as_secs() as i32;
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.name},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0
                }
            }))
            .map_err(kube::Error::SerdeError)?;
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        let expired = holder.is_empty()
            || spec.renew_time.as_ref().is_none_or(|t| {
                let valid_ms = i64::from(spec.lease_duration_seconds.unwrap_or(duration)) * 1000;
                t.0.as_millisecond() + valid_ms < chrono::Utc::now().timestamp_millis()
            });
        if !mine && !expired {
            return Ok(false);
        }
        let mut value = serde_json::to_value(&current).map_err(kube::Error::SerdeError)?;
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        value["spec"]["holderIdentity"] = json!(self.identity);
        value["spec"]["leaseDurationSeconds"] = json!(duration);
        value["spec"]["renewTime"] = json!(now);
        value["spec"]["leaseTransitions"] = json!(transitions);
        if !mine {
            value["spec"]["acquireTime"] = json!(now);
        }
        let lease: Lease = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (at shutdown) so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone());
        if holder.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let Ok(mut value) = serde_json::to_value(&current) else {
            return;
        };
        value["spec"]["holderIdentity"] = serde_json::Value::Null;
        value["spec"]["renewTime"] = serde_json::Value::Null;
        if let Ok(lease) = serde_json::from_value::<Lease>(value)
            && let Err(e) = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        {
            tracing::warn!(error = %e, "could not release the leader Lease");
        }
    }
}
