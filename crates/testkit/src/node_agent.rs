//! A node agent for the test cluster: it plays the kubelet for the Pods of one namespace so the
//! operator's Jobs really run.
//!
//! The test cluster has an API server and a controller manager but no scheduler and no kubelet, so
//! Pods would stay Pending forever. [`NodeAgent`] watches the Pods of a namespace and runs the first
//! container of each new Pod as a local process (the configured binary in place of the image's
//! command), with the container's environment and its mounted Secrets, ConfigMaps and
//! PersistentVolumeClaims mapped to local directories. It writes the Pod status the way a kubelet
//! does (Running, then Succeeded or Failed with the container's exit code and termination message),
//! so the Job controller counts the Pod, and it stops the process when the Pod is deleted.
//!
//! Layout on disk (under `std::env::temp_dir()/kb-node-agent-<pid>-...`):
//! - `pods/<pod>/`: the process's working directory, with `log` (stdout and stderr),
//!   `termination-log` (the container's `terminationMessagePath`) and `volumes/<volume>/`;
//! - `pvcs/<claim>/`: the directory backing a PersistentVolumeClaim, shared by all Pods.
//!
//! Path mapping: a process cannot see container paths such as `/var/run/secrets/...`, so every
//! environment value and argument that equals a volume mount's `mountPath` or starts with
//! `mountPath/` (also the value part of a `--flag=value` argument) has that prefix replaced by the
//! local directory (longest prefix wins); the same holds for the `terminationMessagePath`.
//!
//! Not supported (the Pod fails with a message saying so): Secrets in the environment
//! (`valueFrom.secretKeyRef`, `envFrom.secretRef`; mount the Secret instead), `resourceFieldRef`,
//! `fileKeyRef`, volume types other than secret, configMap, persistentVolumeClaim, emptyDir,
//! ephemeral (a fresh directory), hostPath (the host path itself), downwardAPI and projected
//! (secret, configMap, downwardAPI and serviceAccountToken sources). Init containers, sidecars,
//! probes, resource limits, restarts (`restartPolicy` is treated as `Never`), images and Events are
//! ignored. A PersistentVolumeClaim object need not exist: only its name matters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, PodCondition,
    Secret, ServiceAccount, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the agent runs the Pods' processes.
#[derive(Debug, Clone)]
pub struct NodeAgentOptions {
    /// Executable run in place of the container's command[0] (e.g. the built `kafka-backup` binary).
    pub binary: PathBuf,
    /// Extra environment for every process (e.g. KAFKA_BACKUP_LOG=debug), after the container's env.
    pub extra_env: Vec<(String, String)>,
}

/// Plays the kubelet for the Pods of one namespace (see the module documentation). Dropping it
/// kills the remaining processes; [`NodeAgent::stop`] does the same and waits for the Pods' tasks.
pub struct NodeAgent {
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<()>>,
}

/// Longest time the agent waits between SIGTERM and SIGKILL, whatever the Pod asks for.
const MAX_GRACE: Duration = Duration::from_secs(10);
/// How often a Pod waiting for a Secret or ConfigMap is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Kubelet's limit on a termination message.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Kubelet's fallback-to-logs limits.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;
/// Environment of the test process passed on to every Pod process.
const INHERITED_ENV: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];

struct Shared {
    client: kube::Client,
    namespace: String,
    options: NodeAgentOptions,
    root: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// Names of the Pods whose process was started, in start order.
    started: Vec<String>,
    /// Process groups of the running processes, by Pod uid.
    running: HashMap<String, i32>,
    /// Pods handled by a task, by uid.
    pods: HashMap<String, PodHandle>,
}

struct PodHandle {
    stop: watch::Sender<Option<StopReason>>,
    task: JoinHandle<()>,
}

/// Why a Pod's process must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// The Pod has a deletionTimestamp: stop the process and record its end if the Pod remains.
    Deleting,
    /// The Pod is gone.
    Gone,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pvc_dir(&self, claim: &str) -> PathBuf {
        self.root.join("pvcs").join(claim)
    }

    fn pod_dir(&self, pod: &str) -> PathBuf {
        self.root.join("pods").join(pod)
    }
}

impl NodeAgent {
    /// Plays the kubelet for every Pod in `namespace`.
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        options: NodeAgentOptions,
    ) -> NodeAgent {
        let root = std::env::temp_dir().join(crate::unique_name("kb-node-agent"));
        fs::create_dir_all(root.join("pods"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        fs::create_dir_all(root.join("pvcs"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        eprintln!(
            "[node-agent] namespace {namespace}: running pods with {} in {}",
            options.binary.display(),
            root.display()
        );
        let shared = Arc::new(Shared {
            client,
            namespace: namespace.to_string(),
            options,
            root,
            state: Mutex::new(State::default()),
        });
        let watcher = tokio::spawn(watch_pods(shared.clone()));
        NodeAgent {
            shared,
            watcher: Some(watcher),
        }
    }

    /// The local directory backing PersistentVolumeClaim `claim` (shared by all pods of this agent,
    /// created on demand) so a test can look at what a worker wrote.
    pub fn pvc_dir(&self, claim: &str) -> PathBuf {
        let dir = self.shared.pvc_dir(claim);
        if let Err(e) = fs::create_dir_all(&dir) {
            eprintln!("[node-agent] creating {}: {e}", dir.display());
        }
        dir
    }

    /// Pods started so far (names), in start order.
    pub fn started_pods(&self) -> Vec<String> {
        self.shared.state().started.clone()
    }

    /// For a pod: its process's combined stdout+stderr log file.
    pub fn log_path(&self, pod: &str) -> PathBuf {
        self.shared.pod_dir(pod).join("log")
    }

    /// Kill every process and stop watching.
    pub async fn stop(mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
            let _ = w.await;
        }
        let tasks = self.kill_all();
        for task in tasks {
            let _ = task.await;
        }
        eprintln!("[node-agent] namespace {}: stopped", self.shared.namespace);
    }

    /// Marks the agent stopping, kills every process group (SIGKILL) and aborts the Pods' tasks,
    /// returning them.
    fn kill_all(&self) -> Vec<JoinHandle<()>> {
        let mut state = self.shared.state();
        state.stopping = true;
        for (_, pgid) in state.running.drain() {
            signal_group(pgid, Signal::SIGKILL);
        }
        state
            .pods
            .drain()
            .map(|(_, handle)| {
                handle.task.abort();
                handle.task
            })
            .collect()
    }
}

impl Drop for NodeAgent {
    /// Kills the remaining processes (SIGKILL), best effort, and removes the agent's directory
    /// unless the thread is panicking (a failing test keeps the logs to look at).
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        drop(self.kill_all());
        if std::thread::panicking() {
            eprintln!(
                "[node-agent] keeping {} (pod logs and volumes)",
                self.shared.root.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.shared.root) {
            eprintln!("[node-agent] removing {}: {e}", self.shared.root.display());
        }
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => eprintln!("[node-agent] kill -{signal} -{pgid}: {e}"),
    }
}

async fn watch_pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relisted: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relisted = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(seen), Some(uid)) = (relisted.as_mut(), pod.metadata.uid.as_ref()) {
                    seen.insert(uid.clone());
                }
                on_pod(&shared, pod);
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch was down come back as missing from the list.
                if let Some(seen) = relisted.take() {
                    let state = shared.state();
                    for (uid, handle) in &state.pods {
                        if !seen.contains(uid) {
                            send_stop(handle, StopReason::Gone);
                        }
                    }
                }
            }
            Ok(Event::Apply(pod)) => on_pod(&shared, pod),
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_ref()
                    && let Some(handle) = shared.state().pods.get(uid)
                {
                    send_stop(handle, StopReason::Gone);
                }
            }
            Err(e) => eprintln!("[node-agent] namespace {}: watch: {e}", shared.namespace),
        }
    }
}

fn send_stop(handle: &PodHandle, reason: StopReason) {
    handle.stop.send_if_modified(|current| {
        // Gone supersedes Deleting; nothing supersedes Gone.
        if *current == Some(reason) || *current == Some(StopReason::Gone) {
            false
        } else {
            *current = Some(reason);
            true
        }
    });
}

/// A Pod was added or changed: start it if it is new, signal its task if it is being deleted.
fn on_pod(shared: &Arc<Shared>, pod: Pod) {
    let (Some(uid), Some(name)) = (pod.metadata.uid.clone(), pod.metadata.name.clone()) else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let mut state = shared.state();
    if state.stopping {
        return;
    }
    if let Some(handle) = state.pods.get(&uid) {
        if deleting {
            send_stop(handle, StopReason::Deleting);
        }
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if deleting || !matches!(phase, None | Some("Pending")) {
        // Being deleted before it started, or run by someone else.
        return;
    }
    let (stop_tx, stop_rx) = watch::channel(None);
    let task = tokio::spawn(PodRun::new(shared.clone(), pod, name, uid.clone()).run(stop_rx));
    state.pods.insert(
        uid,
        PodHandle {
            stop: stop_tx,
            task,
        },
    );
}

/// What keeps a Pod from running.
#[derive(Debug)]
enum Blocked {
    /// Wait and retry, like kubelet does for a missing Secret or ConfigMap.
    Wait(String),
    /// The Pod cannot run here: it fails with this message.
    Fail(String),
}

/// The process's end.
struct Ended {
    exit_code: i32,
    finished_at: Timestamp,
    /// Set when the process was stopped because the Pod exceeded activeDeadlineSeconds.
    deadline_exceeded: bool,
    stop: Option<StopReason>,
}

/// One Pod handled by the agent.
struct PodRun {
    shared: Arc<Shared>,
    api: Api<Pod>,
    name: String,
    uid: String,
    /// The Pod as last seen (from the watch, then from status patches).
    pod: Pod,
    dir: PathBuf,
    start_time: Timestamp,
}

impl PodRun {
    fn new(shared: Arc<Shared>, pod: Pod, name: String, uid: String) -> PodRun {
        let api = Api::namespaced(shared.client.clone(), &shared.namespace);
        let dir = shared.pod_dir(&name);
        PodRun {
            shared,
            api,
            name,
            uid,
            pod,
            dir,
            start_time: Timestamp::now(),
        }
    }

    fn log(&self, msg: &str) {
        eprintln!(
            "[node-agent] pod {}/{}: {msg}",
            self.shared.namespace, self.name
        );
    }

    async fn run(mut self, mut stop: watch::Receiver<Option<StopReason>>) {
        let Some(container) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
        else {
            self.fail_pod("the pod has no container").await;
            return;
        };
        if let Err(e) = fs::remove_dir_all(&self.dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .and_then(|()| fs::create_dir_all(&self.dir))
        {
            self.fail_pod(&format!("cannot create {}: {e}", self.dir.display()))
                .await;
            return;
        }

        // Resolve the environment and the volumes; retry while something is missing.
        let mut last_wait: Option<String> = None;
        let prepared = loop {
            if stop.borrow().is_some() {
                self.log("deleted before it started");
                return;
            }
            match self.prepare(&container).await {
                Ok(prepared) => break prepared,
                Err(Blocked::Fail(msg)) => {
                    self.log(&format!("cannot run: {msg}"));
                    self.fail_pod(&msg).await;
                    return;
                }
                Err(Blocked::Wait(msg)) => {
                    if last_wait.as_deref() != Some(msg.as_str()) {
                        self.log(&format!("waiting: {msg}"));
                        if !self.patch_waiting(&container, &msg).await {
                            return;
                        }
                        last_wait = Some(msg);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_EVERY) => {}
                        _ = changed(&mut stop) => {}
                    }
                }
            }
        };

        let Some((mut child, pgid, started_at)) = self.spawn(&container, prepared).await else {
            return;
        };
        if !self.patch_running(&container, started_at).await {
            // The pod is gone: stop its process.
            self.terminate(&mut child, pgid).await;
            self.forget(pgid);
            return;
        }

        let ended = self.wait(&mut child, pgid, &mut stop).await;
        self.forget(pgid);
        self.log(&format!(
            "process exited with code {}{}",
            ended.exit_code,
            if ended.deadline_exceeded {
                " (active deadline exceeded)"
            } else {
                ""
            }
        ));
        if ended.stop == Some(StopReason::Gone) || self.shared.state().stopping {
            return;
        }
        self.patch_terminated(&container, started_at, &ended).await;
    }

    /// Resolves the environment, prepares the volumes and builds the command line.
    async fn prepare(&self, container: &Container) -> Result<Prepared, Blocked> {
        let env = self.resolve_env(container).await?;
        let termination_file = self.dir.join("termination-log");
        let volumes_dir = self.dir.join("volumes");
        if volumes_dir.exists() {
            fs::remove_dir_all(&volumes_dir)
                .map_err(|e| Blocked::Fail(format!("removing {}: {e}", volumes_dir.display())))?;
        }
        let mut mounts = self.prepare_mounts(container, &env, &volumes_dir).await?;
        // The container's view of its file system: a directory holding each mount point as a
        // symbolic link, so a parent of several mounts (e.g. one directory holding every mounted
        // Secret) is a real directory, as inside a container.
        let rootfs = volumes_dir.join("rootfs");
        for (mount_path, local) in mounts.clone() {
            let link = rootfs.join(mount_path.trim_start_matches('/'));
            if let Some(parent) = link.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Blocked::Fail(format!("creating {}: {e}", parent.display())))?;
            }
            std::os::unix::fs::symlink(&local, &link)
                .map_err(|e| Blocked::Fail(format!("linking {}: {e}", link.display())))?;
        }
        mounts.extend(mount_parents(&mounts, &rootfs));
        let termination_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".to_string());
        mounts.push((termination_path, termination_file.clone()));

        let lookup = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let command = container.command.clone().unwrap_or_default();
        let mut argv: Vec<String> = command.iter().skip(1).cloned().collect();
        argv.extend(container.args.clone().unwrap_or_default());
        let args = argv
            .iter()
            .map(|a| map_arg(&expand(a, &lookup), &mounts))
            .collect();
        let env = env
            .into_iter()
            .map(|(k, v)| {
                let v = map_path(&v, &mounts).unwrap_or(v);
                (k, v)
            })
            .collect();
        Ok(Prepared {
            args,
            env,
            termination_file,
        })
    }

    /// The container's environment, in order (later entries win), with `$(VAR)` references
    /// expanded; container paths are not mapped yet.
    async fn resolve_env(&self, container: &Container) -> Result<Vec<(String, String)>, Blocked> {
        let mut env: Vec<(String, String)> = Vec::new();
        for from in container.env_from.iter().flatten() {
            if from.secret_ref.is_some() {
                return Err(secrets_in_env());
            }
            if let Some(cm_ref) = &from.config_map_ref {
                let optional = cm_ref.optional.unwrap_or(false);
                let Some(cm) = self.get_config_map(&cm_ref.name, optional).await? else {
                    continue;
                };
                let prefix = from.prefix.clone().unwrap_or_default();
                for (k, v) in cm.data.unwrap_or_default() {
                    env.push((format!("{prefix}{k}"), v));
                }
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (_, Some(from)) => {
                    if from.secret_key_ref.is_some() {
                        return Err(secrets_in_env());
                    }
                    if let Some(field) = &from.field_ref {
                        self.field_value(field)?
                    } else if let Some(key_ref) = &from.config_map_key_ref {
                        let optional = key_ref.optional.unwrap_or(false);
                        let value = self
                            .get_config_map(&key_ref.name, optional)
                            .await?
                            .and_then(|cm| cm.data.unwrap_or_default().remove(&key_ref.key));
                        match value {
                            Some(v) => v,
                            None if optional => continue,
                            None => {
                                return Err(Blocked::Wait(format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    key_ref.key, self.shared.namespace, key_ref.name
                                )));
                            }
                        }
                    } else {
                        return Err(Blocked::Fail(format!(
                            "env {}: only value, valueFrom.fieldRef and valueFrom.configMapKeyRef \
                             are supported by the node agent",
                            var.name
                        )));
                    }
                }
                (Some(value), None) => {
                    let lookup = |name: &str| {
                        env.iter()
                            .rev()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                    };
                    expand(value, &lookup)
                }
                (None, None) => String::new(),
            };
            env.push((var.name.clone(), value));
        }
        Ok(env)
    }

    /// A downward-API field of the Pod.
    fn field_value(&self, field: &ObjectFieldSelector) -> Result<String, Blocked> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let path = field.field_path.as_str();
        let value = match path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta
                .namespace
                .clone()
                .or_else(|| Some(self.shared.namespace.clone())),
            "metadata.uid" => meta.uid.clone(),
            "spec.serviceAccountName" => Some(
                spec.and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_string()),
            ),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
            "status.podIP" | "status.hostIP" => Some("127.0.0.1".to_string()),
            _ => {
                let (map, key) = if let Some(key) = bracketed(path, "metadata.labels") {
                    (meta.labels.as_ref(), key)
                } else if let Some(key) = bracketed(path, "metadata.annotations") {
                    (meta.annotations.as_ref(), key)
                } else {
                    return Err(Blocked::Fail(format!(
                        "fieldRef {path} is not supported by the node agent"
                    )));
                };
                map.and_then(|m| m.get(key).cloned())
            }
        };
        Ok(value.unwrap_or_default())
    }

    async fn get_config_map(
        &self,
        name: &str,
        optional: bool,
    ) -> Result<Option<ConfigMap>, Blocked> {
        let api: Api<ConfigMap> =
            Api::namespaced(self.shared.client.clone(), &self.shared.namespace);
        match api.get_opt(name).await {
            Ok(Some(cm)) => Ok(Some(cm)),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(Blocked::Wait(format!("configmap \"{name}\" not found"))),
            Err(e) => Err(Blocked::Wait(format!("getting configmap \"{name}\": {e}"))),
        }
    }

    async fn get_secret(&self, name: &str, optional: bool) -> Result<Option<Secret>, Blocked> {
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.shared.namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => Ok(Some(s)),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(Blocked::Wait(format!("secret \"{name}\" not found"))),
            Err(e) => Err(Blocked::Wait(format!("getting secret \"{name}\": {e}"))),
        }
    }

    /// Prepares the local directory of every volume the container mounts; returns the mapping
    /// from mount path to local path.
    async fn prepare_mounts(
        &self,
        container: &Container,
        env: &[(String, String)],
        volumes_dir: &Path,
    ) -> Result<Vec<(String, PathBuf)>, Blocked> {
        let volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let mut prepared: HashMap<String, PathBuf> = HashMap::new();
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let base = match prepared.get(&mount.name) {
                Some(base) => base.clone(),
                None => {
                    let volume =
                        volumes
                            .iter()
                            .find(|v| v.name == mount.name)
                            .ok_or_else(|| {
                                Blocked::Fail(format!("volumeMount {}: no such volume", mount.name))
                            })?;
                    let base =
                        self.prepare_volume(volume, volumes_dir)
                            .await
                            .map_err(|b| match b {
                                Blocked::Wait(m) => Blocked::Wait(format!(
                                    "MountVolume.SetUp failed for volume \"{}\" : {m}",
                                    mount.name
                                )),
                                fail => fail,
                            })?;
                    prepared.insert(mount.name.clone(), base.clone());
                    base
                }
            };
            let local = mount_local_path(&base, mount, env)?;
            mounts.push((mount.mount_path.clone(), local));
        }
        Ok(mounts)
    }

    async fn prepare_volume(
        &self,
        volume: &k8s_openapi::api::core::v1::Volume,
        volumes_dir: &Path,
    ) -> Result<PathBuf, Blocked> {
        let dir = volumes_dir.join(&volume.name);
        let io = |e: std::io::Error| Blocked::Fail(format!("volume {}: {e}", volume.name));
        if let Some(claim) = &volume.persistent_volume_claim {
            let dir = self.shared.pvc_dir(&claim.claim_name);
            fs::create_dir_all(&dir).map_err(io)?;
            return Ok(dir);
        }
        if let Some(host) = &volume.host_path {
            return Ok(PathBuf::from(&host.path));
        }
        fs::create_dir_all(&dir).map_err(io)?;
        if volume.empty_dir.is_some() || volume.ephemeral.is_some() {
            return Ok(dir);
        }
        if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            self.project_secret(&dir, &name, source.items.as_deref(), source.optional)
                .await?;
            return Ok(dir);
        }
        if let Some(source) = &volume.config_map {
            self.project_config_map(&dir, &source.name, source.items.as_deref(), source.optional)
                .await?;
            return Ok(dir);
        }
        if let Some(source) = &volume.downward_api {
            self.project_downward_api(&dir, source.items.as_deref().unwrap_or_default())?;
            return Ok(dir);
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(s) = &source.secret {
                    self.project_secret(&dir, &s.name, s.items.as_deref(), s.optional)
                        .await?;
                } else if let Some(c) = &source.config_map {
                    self.project_config_map(&dir, &c.name, c.items.as_deref(), c.optional)
                        .await?;
                } else if let Some(d) = &source.downward_api {
                    self.project_downward_api(&dir, d.items.as_deref().unwrap_or_default())?;
                } else if let Some(t) = &source.service_account_token {
                    let token = self
                        .service_account_token(t.audience.clone(), t.expiration_seconds)
                        .await?;
                    write_file(&dir.join(&t.path), token.as_bytes()).map_err(io)?;
                } else {
                    return Err(Blocked::Fail(format!(
                        "volume {}: only secret, configMap, downwardAPI and serviceAccountToken \
                         projections are supported by the node agent",
                        volume.name
                    )));
                }
            }
            return Ok(dir);
        }
        Err(Blocked::Fail(format!(
            "volume {}: only secret, configMap, persistentVolumeClaim, emptyDir, ephemeral, \
             hostPath, downwardAPI and projected volumes are supported by the node agent",
            volume.name
        )))
    }

    async fn project_secret(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
    ) -> Result<(), Blocked> {
        let optional = optional.unwrap_or(false);
        let Some(secret) = self.get_secret(name, optional).await? else {
            return Ok(());
        };
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        write_keys(dir, &data, items, optional, "secret", name)
    }

    async fn project_config_map(
        &self,
        dir: &Path,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
    ) -> Result<(), Blocked> {
        let optional = optional.unwrap_or(false);
        let Some(cm) = self.get_config_map(name, optional).await? else {
            return Ok(());
        };
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        write_keys(dir, &data, items, optional, "configmap", name)
    }

    fn project_downward_api(
        &self,
        dir: &Path,
        items: &[DownwardAPIVolumeFile],
    ) -> Result<(), Blocked> {
        for item in items {
            let Some(field) = &item.field_ref else {
                return Err(Blocked::Fail(format!(
                    "downwardAPI {}: only fieldRef is supported by the node agent",
                    item.path
                )));
            };
            let value = self.field_value(field)?;
            write_file(&dir.join(&item.path), value.as_bytes())
                .map_err(|e| Blocked::Fail(format!("downwardAPI {}: {e}", item.path)))?;
        }
        Ok(())
    }

    /// A token of the Pod's ServiceAccount bound to the Pod, as kubelet projects it.
    async fn service_account_token(
        &self,
        audience: Option<String>,
        expiration_seconds: Option<i64>,
    ) -> Result<String, Blocked> {
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        let api: Api<ServiceAccount> =
            Api::namespaced(self.shared.client.clone(), &self.shared.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.into_iter().collect(),
                expiration_seconds: Some(expiration_seconds.unwrap_or(3600)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: Some(self.name.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let response: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &request)
            .await
            .map_err(|e| Blocked::Wait(format!("token for serviceaccount \"{sa}\": {e}")))?;
        response
            .status
            .map(|s| s.token)
            .ok_or_else(|| Blocked::Wait(format!("no token for serviceaccount \"{sa}\"")))
    }

    /// Starts the process; fails the Pod when it cannot be started.
    async fn spawn(
        &mut self,
        container: &Container,
        prepared: Prepared,
    ) -> Option<(tokio::process::Child, i32, Timestamp)> {
        let Prepared {
            args,
            env,
            termination_file,
        } = prepared;
        let log_path = self.dir.join("log");
        let files = File::create(&termination_file)
            .and_then(|_| OpenOptions::new().create(true).append(true).open(&log_path))
            .and_then(|log| Ok((log.try_clone()?, log)));
        let (stdout, stderr) = match files {
            Ok(f) => f,
            Err(e) => {
                self.fail_pod(&format!("cannot create {}: {e}", self.dir.display()))
                    .await;
                return None;
            }
        };
        let binary = &self.shared.options.binary;
        let mut cmd = tokio::process::Command::new(binary);
        cmd.args(&args)
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (std::ffi::OsString::from(k), v))),
            )
            .envs(env)
            .envs(self.shared.options.extra_env.iter().cloned())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let started_at = Timestamp::now();
        let spawned = {
            let mut state = self.shared.state();
            if state.stopping {
                return None;
            }
            cmd.spawn().map(|child| {
                let pgid = child.id().map(|id| id as i32).unwrap_or(0);
                state.running.insert(self.uid.clone(), pgid);
                state.started.push(self.name.clone());
                (child, pgid)
            })
        };
        match spawned {
            Ok((child, pgid)) => {
                self.log(&format!(
                    "started pid {pgid}: {} {args:?}",
                    binary.display()
                ));
                Some((child, pgid, started_at))
            }
            Err(e) => {
                let message = format!("starting {}: {e}", binary.display());
                self.log(&message);
                let ended = Ended {
                    exit_code: 128,
                    finished_at: Timestamp::now(),
                    deadline_exceeded: false,
                    stop: None,
                };
                let status = terminated_status(
                    &self.pod,
                    container,
                    started_at,
                    &ended,
                    "StartError",
                    &message,
                    self.start_time,
                );
                self.patch_status(status).await;
                None
            }
        }
    }

    /// Waits for the process to exit, stopping it when the Pod is deleted or exceeds its active
    /// deadline.
    async fn wait(
        &self,
        child: &mut tokio::process::Child,
        pgid: i32,
        stop: &mut watch::Receiver<Option<StopReason>>,
    ) -> Ended {
        let deadline = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map(|s| Duration::from_secs(s.max(0) as u64));
        let started = tokio::time::Instant::now();
        let deadline_sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(started + d).await,
                None => std::future::pending().await,
            }
        };
        let mut deadline_exceeded = false;
        let mut stop_reason = *stop.borrow();
        let status = if stop_reason.is_some() {
            self.log("pod is being deleted: stopping the process");
            self.terminate(child, pgid).await
        } else {
            tokio::select! {
                status = child.wait() => {
                    // Whatever the main process left behind goes with it, like a container.
                    signal_group(pgid, Signal::SIGKILL);
                    status.ok()
                }
                _ = changed(stop) => {
                    stop_reason = *stop.borrow();
                    self.log("pod is being deleted: stopping the process");
                    self.terminate(child, pgid).await
                }
                _ = deadline_sleep => {
                    deadline_exceeded = true;
                    self.log("active deadline exceeded: stopping the process");
                    self.terminate(child, pgid).await
                }
            }
        };
        Ended {
            exit_code: status.map(exit_code).unwrap_or(137),
            finished_at: Timestamp::now(),
            deadline_exceeded,
            stop: stop_reason.or(*stop.borrow()),
        }
    }

    /// SIGTERM to the process group, then SIGKILL after the Pod's grace period (at most
    /// [`MAX_GRACE`]).
    async fn terminate(&self, child: &mut tokio::process::Child, pgid: i32) -> Option<ExitStatus> {
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(MAX_GRACE)
            .min(MAX_GRACE);
        signal_group(pgid, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                self.log(&format!(
                    "still running {}s after SIGTERM: SIGKILL",
                    grace.as_secs()
                ));
                signal_group(pgid, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        signal_group(pgid, Signal::SIGKILL);
        status
    }

    fn forget(&self, pgid: i32) {
        let mut state = self.shared.state();
        if state.running.get(&self.uid) == Some(&pgid) {
            state.running.remove(&self.uid);
        }
    }

    /// Patches the Pod's status; false when the Pod is gone.
    async fn patch_status(&mut self, status: Value) -> bool {
        let patch = Patch::Merge(json!({ "status": status }));
        let mut attempt = 0;
        loop {
            match self
                .api
                .patch_status(&self.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(pod) => {
                    if pod.metadata.uid.as_deref() != Some(self.uid.as_str()) {
                        return false;
                    }
                    self.pod = pod;
                    return true;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return false,
                Err(e) => {
                    attempt += 1;
                    if attempt >= 5 {
                        self.log(&format!("patching status: {e}"));
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Records why the Pod cannot start yet (it stays Pending); false when the Pod is gone.
    async fn patch_waiting(&mut self, container: &Container, message: &str) -> bool {
        let conditions = merge_conditions(
            &self.pod,
            &[
                ("PodReadyToStartContainers", false, "FailedMount", message),
                ("Initialized", true, "", ""),
                ("Ready", false, "ContainersNotReady", &unready(container)),
                (
                    "ContainersReady",
                    false,
                    "ContainersNotReady",
                    &unready(container),
                ),
            ],
        );
        self.patch_status(json!({
            "phase": "Pending",
            "startTime": Time(self.start_time),
            "conditions": conditions,
            "containerStatuses": [{
                "name": container.name,
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": false,
                "started": false,
                "restartCount": 0,
                "state": { "waiting": { "reason": "ContainerCreating", "message": message } },
            }],
        }))
        .await
    }

    async fn patch_running(&mut self, container: &Container, started_at: Timestamp) -> bool {
        let conditions = merge_conditions(
            &self.pod,
            &[
                ("PodReadyToStartContainers", true, "", ""),
                ("Initialized", true, "", ""),
                ("Ready", true, "", ""),
                ("ContainersReady", true, "", ""),
            ],
        );
        self.patch_status(json!({
            "phase": "Running",
            "startTime": Time(self.start_time),
            "hostIP": "127.0.0.1",
            "hostIPs": [{ "ip": "127.0.0.1" }],
            "conditions": conditions,
            "containerStatuses": [{
                "name": container.name,
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": Time(started_at) } },
            }],
        }))
        .await
    }

    async fn patch_terminated(
        &mut self,
        container: &Container,
        started_at: Timestamp,
        ended: &Ended,
    ) {
        let message = termination_message(container, ended.exit_code, &self.dir);
        let reason = if ended.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let mut status = terminated_status(
            &self.pod,
            container,
            started_at,
            ended,
            reason,
            &message,
            self.start_time,
        );
        if ended.deadline_exceeded {
            status["phase"] = json!("Failed");
            status["reason"] = json!("DeadlineExceeded");
            status["message"] = json!(format!(
                "Pod was active on the node longer than the specified deadline"
            ));
        }
        self.patch_status(status).await;
    }

    /// Fails the Pod before its process started.
    async fn fail_pod(&mut self, message: &str) {
        let conditions = merge_conditions(
            &self.pod,
            &[
                ("Ready", false, "PodFailed", ""),
                ("ContainersReady", false, "PodFailed", ""),
            ],
        );
        self.patch_status(json!({
            "phase": "Failed",
            "reason": "NodeAgentUnsupported",
            "message": message,
            "startTime": Time(self.start_time),
            "conditions": conditions,
        }))
        .await;
    }
}

/// What [`PodRun::prepare`] resolved.
struct Prepared {
    args: Vec<String>,
    env: Vec<(String, String)>,
    termination_file: PathBuf,
}

fn secrets_in_env() -> Blocked {
    Blocked::Fail(
        "secrets in env are not supported by the node agent (valueFrom.secretKeyRef, \
         envFrom.secretRef): mount the Secret as a volume"
            .to_string(),
    )
}

/// Resolves when the stop signal changes; never when the agent is gone.
async fn changed(stop: &mut watch::Receiver<Option<StopReason>>) {
    if stop.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn unready(container: &Container) -> String {
    format!("containers with unready status: [{}]", container.name)
}

/// `prefix['key']` or `prefix["key"]` -> key.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

/// The Pod's conditions with `updates` (type, status, reason, message) applied; a transition time
/// changes only when the status does.
fn merge_conditions(pod: &Pod, updates: &[(&str, bool, &str, &str)]) -> Vec<Value> {
    let now = Time(Timestamp::now());
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for (type_, status, reason, message) in updates {
        let status = if *status { "True" } else { "False" };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match conditions.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now.clone());
                }
                c.status = status.to_string();
                c.reason = non_empty(reason);
                c.message = non_empty(message);
            }
            None => conditions.push(PodCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: non_empty(reason),
                message: non_empty(message),
                last_transition_time: Some(now.clone()),
                ..PodCondition::default()
            }),
        }
    }
    conditions
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect()
}

/// The status of a Pod whose only container ended.
fn terminated_status(
    pod: &Pod,
    container: &Container,
    started_at: Timestamp,
    ended: &Ended,
    reason: &str,
    message: &str,
    start_time: Timestamp,
) -> Value {
    let conditions = merge_conditions(
        pod,
        &[
            ("PodReadyToStartContainers", false, "", ""),
            ("Ready", false, "PodCompleted", ""),
            ("ContainersReady", false, "PodCompleted", ""),
        ],
    );
    let mut terminated = json!({
        "exitCode": ended.exit_code,
        "reason": reason,
        "startedAt": Time(started_at),
        "finishedAt": Time(ended.finished_at),
    });
    if !message.is_empty() {
        terminated["message"] = json!(message);
    }
    json!({
        "phase": if ended.exit_code == 0 { "Succeeded" } else { "Failed" },
        "startTime": Time(start_time),
        "conditions": conditions,
        "containerStatuses": [{
            "name": container.name,
            "image": container.image.clone().unwrap_or_default(),
            "imageID": "",
            "ready": false,
            "started": false,
            "restartCount": 0,
            "state": { "terminated": terminated },
        }],
    })
}

/// Kubelet's termination message: the termination file (at most 4096 bytes) or, with
/// `FallbackToLogsOnError` after a failure and an empty file, the end of the log.
fn termination_message(container: &Container, exit_code: i32, dir: &Path) -> String {
    let from_file = read_head(&dir.join("termination-log"), MAX_MESSAGE_BYTES);
    if !from_file.is_empty() {
        return from_file;
    }
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if fallback && exit_code != 0 {
        return log_tail(&dir.join("log"), FALLBACK_LINES, FALLBACK_BYTES);
    }
    String::new()
}

fn read_head(path: &Path, max: usize) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = File::open(path) {
        let _ = f.take(max as u64).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last `lines` lines of a file, at most `max` bytes.
fn log_tail(path: &Path, lines: usize, max: usize) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max as u64)));
        let _ = f.read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(137)
}

/// Writes the keys of a Secret or ConfigMap as files (all keys, or only `items` at their paths).
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    kind: &str,
    name: &str,
) -> Result<(), Blocked> {
    let io = |e: std::io::Error| Blocked::Fail(format!("{kind} {name}: writing files: {e}"));
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(&dir.join(&item.path), value).map_err(io)?,
                    None if optional => {}
                    None => {
                        return Err(Blocked::Wait(format!(
                            "{kind} \"{name}\" references non-existent key: {}",
                            item.key
                        )));
                    }
                }
            }
        }
        _ => {
            for (key, value) in data {
                write_file(&dir.join(key), value).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}

/// The local path of a volume mount: the volume's directory joined with the subPath.
fn mount_local_path(
    base: &Path,
    mount: &VolumeMount,
    env: &[(String, String)],
) -> Result<PathBuf, Blocked> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
        (Some(p), _) if !p.is_empty() => p.clone(),
        (_, Some(e)) if !e.is_empty() => expand(e, &lookup),
        _ => return Ok(base.to_path_buf()),
    };
    if Path::new(&sub_path).is_absolute() || sub_path.split('/').any(|c| c == "..") {
        return Err(Blocked::Fail(format!(
            "volumeMount {}: subPath {sub_path} must be a relative path without '..'",
            mount.name
        )));
    }
    let local = base.join(&sub_path);
    if !local.exists() {
        // Kubelet creates a missing subPath as a directory.
        fs::create_dir_all(&local)
            .map_err(|e| Blocked::Fail(format!("volumeMount {}: {e}", mount.name)))?;
    }
    Ok(local)
}

/// Kubernetes `$(VAR)` expansion: known variables are replaced, unknown references are kept, and
/// `$$` is an escaped `$`.
fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Maps a container path to the local path of the longest matching mount.
fn map_path(value: &str, mounts: &[(String, PathBuf)]) -> Option<String> {
    mounts
        .iter()
        .filter_map(|(mount_path, local)| {
            let m = mount_path.trim_end_matches('/');
            if m.is_empty() {
                return None;
            }
            let rest = value.strip_prefix(m)?;
            if rest.is_empty() || rest.starts_with('/') {
                Some((m.len(), format!("{}{rest}", local.display())))
            } else {
                None
            }
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, mapped)| mapped)
}

/// Directories above mount points, at least three levels deep (`/var/run/app`, not `/var`), mapped
/// into `rootfs`, unless they are mount points themselves.
fn mount_parents(mounts: &[(String, PathBuf)], rootfs: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (mount_path, _) in mounts {
        let parts: Vec<&str> = mount_path.split('/').filter(|p| !p.is_empty()).collect();
        for depth in 3..parts.len() {
            let parent = format!("/{}", parts[..depth].join("/"));
            if mounts
                .iter()
                .any(|(m, _)| m.trim_end_matches('/') == parent)
                || out.iter().any(|(m, _)| *m == parent)
            {
                continue;
            }
            out.push((parent.clone(), rootfs.join(parent.trim_start_matches('/'))));
        }
    }
    out
}

/// Maps an argument: the whole argument, or the value of a `--flag=value` argument.
fn map_arg(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    if let Some(mapped) = map_path(arg, mounts) {
        return mapped;
    }
    if arg.starts_with('-')
        && let Some((flag, value)) = arg.split_once('=')
        && let Some(mapped) = map_path(value, mounts)
    {
        return format!("{flag}={mapped}");
    }
    arg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_like_kubernetes() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)/b", &lookup), "x/b");
        assert_eq!(expand("$(B)/b", &lookup), "$(B)/b");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("a$b$(A", &lookup), "a$b$(A");
    }

    #[test]
    fn parents_of_mounts_map_into_the_container_view() {
        let mounts = vec![
            ("/var/run/kb/secrets/a".to_string(), PathBuf::from("/tmp/a")),
            ("/var/run/kb/secrets/b".to_string(), PathBuf::from("/tmp/b")),
        ];
        let parents = mount_parents(&mounts, Path::new("/r"));
        assert_eq!(
            parents,
            vec![
                ("/var/run/kb".to_string(), PathBuf::from("/r/var/run/kb")),
                (
                    "/var/run/kb/secrets".to_string(),
                    PathBuf::from("/r/var/run/kb/secrets")
                ),
            ]
        );
        let mut all = mounts.clone();
        all.extend(parents);
        assert_eq!(
            map_path("/var/run/kb/secrets", &all).unwrap(),
            "/r/var/run/kb/secrets"
        );
        assert_eq!(
            map_path("/var/run/kb/secrets/a/k", &all).unwrap(),
            "/tmp/a/k"
        );
    }

    #[test]
    fn maps_the_longest_mount_prefix() {
        let mounts = vec![
            ("/var/run".to_string(), PathBuf::from("/tmp/a")),
            ("/var/run/secrets/x/".to_string(), PathBuf::from("/tmp/b")),
            ("/dev/termination-log".to_string(), PathBuf::from("/tmp/t")),
        ];
        assert_eq!(
            map_path("/var/run/secrets/x/key", &mounts).unwrap(),
            "/tmp/b/key"
        );
        assert_eq!(map_path("/var/run/secrets/x", &mounts).unwrap(), "/tmp/b");
        assert_eq!(map_path("/var/run/other", &mounts).unwrap(), "/tmp/a/other");
        assert_eq!(map_path("/var/running", &mounts), None);
        assert_eq!(map_path("/dev/termination-log", &mounts).unwrap(), "/tmp/t");
        assert_eq!(
            map_arg("--config=/var/run/c.yaml", &mounts),
            "--config=/tmp/a/c.yaml"
        );
        assert_eq!(map_arg("--name=value", &mounts), "--name=value");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(crate::unique_name("node-agent-tail"));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let tail = log_tail(&path, 80, 2048);
        assert!(tail.starts_with("line 20\n"), "{tail}");
        assert!(tail.ends_with("line 99"), "{tail}");
        let short = log_tail(&path, 80, 20);
        assert!(short.len() <= 20, "{short}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
