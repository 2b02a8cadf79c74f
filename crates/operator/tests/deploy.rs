//! The operator's deployment, checked by the genuine API server of `scripts/testenv up k8s`: the
//! plain manifests (deploy/manifests/kafka-backup.yaml) apply, and the Helm chart rendered for one
//! watched namespace applies there with a Role instead of cluster-wide permissions. Everything
//! but the CRDs and the namespaces goes through a server-side dry run (`kubectl apply
//! --dry-run=server --validate=strict`), so the RBAC objects, the Deployment and the rest are
//! validated by the API server without being created. The RBAC rules granted are exactly the
//! ones the operator needs.

use std::collections::BTreeSet;

use serde_json::Value;

use kafka_backup_testkit::cluster::{CHART, helm, kubectl};
use kafka_backup_testkit::env::repo_root;
use kafka_backup_testkit::unique_name;

const MANIFESTS: &str = "deploy/manifests/kafka-backup.yaml";

fn documents(yaml: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("a document");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn kind_of(doc: &str) -> &str {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .map(str::trim)
        .unwrap_or_default()
}

/// Applies YAML for real (server-side apply, idempotent).
fn apply_for_real(yaml: &str) {
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kafka-backup-tests",
            "-f",
            "-",
        ],
        Some(yaml),
    );
}

/// Applies YAML with a server-side dry run and strict field validation; the objects as the API
/// server would have stored them.
fn apply_dry_run(yaml: &str) -> Vec<Value> {
    let out = kubectl(
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(yaml),
    );
    let v: Value = serde_json::from_str(&out).expect("kubectl -o json output");
    if v["kind"] == "List" {
        v["items"].as_array().cloned().unwrap_or_default()
    } else {
        vec![v]
    }
}

fn create_namespace(prefix: &str) -> String {
    let name = unique_name(prefix);
    kubectl(&["create", "namespace", &name], None);
    name
}

fn delete_namespace(name: &str) {
    kubectl(&["delete", "namespace", name, "--wait=false"], None);
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} expected, found {}", found.len());
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every (apiGroup, resource, verb) a role's rules grant, resource names noted as `name=...`.
fn grants(role: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let names = strings(&rule["resourceNames"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    if names.is_empty() {
                        out.insert(format!("{group}/{resource}:{verb}"));
                    } else {
                        for n in &names {
                            out.insert(format!("{group}/{resource}:{verb} name={n}"));
                        }
                    }
                }
            }
        }
    }
    out
}

/// No wildcard anywhere, no listing or watching Secrets, no non-resource URLs.
fn assert_no_broad_grants(role: &Value) {
    let name = role["metadata"]["name"].as_str().unwrap_or_default();
    for rule in role["rules"].as_array().expect("rules") {
        for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
            assert!(
                !strings(&rule[field]).contains(&"*"),
                "{name}: `*` in {field}: {rule}"
            );
        }
        assert!(rule.get("nonResourceURLs").is_none(), "{name}: {rule}");
        if strings(&rule["resources"]).contains(&"secrets") {
            let verbs = strings(&rule["verbs"]);
            assert!(
                verbs.iter().all(|v| !["list", "watch"].contains(v)),
                "{name}: Secrets may be read by name only: {rule}"
            );
        }
    }
}

/// What the operator's main role must grant, and nothing else.
fn operator_grants() -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    let mut add = |group: &str, resources: &[&str], verbs: &[&str]| {
        for r in resources {
            for v in verbs {
                want.insert(format!("{group}/{r}:{v}"));
            }
        }
    };
    let kinds = [
        "kafkabackups",
        "kafkarestores",
        "kafkaoffsetresets",
        "kafkaoffsetrollbacks",
    ];
    add(
        "kafka.oso.sh",
        &kinds,
        &["get", "list", "watch", "patch", "update"],
    );
    let status: Vec<String> = kinds.iter().map(|k| format!("{k}/status")).collect();
    let status: Vec<&str> = status.iter().map(String::as_str).collect();
    add("kafka.oso.sh", &status, &["get", "patch", "update"]);
    let finalizers: Vec<String> = kinds.iter().map(|k| format!("{k}/finalizers")).collect();
    let finalizers: Vec<&str> = finalizers.iter().map(String::as_str).collect();
    add("kafka.oso.sh", &finalizers, &["update"]);
    add(
        "batch",
        &["jobs"],
        &["get", "list", "watch", "create", "delete", "patch"],
    );
    add("", &["persistentvolumeclaims"], &["get"]);
    add("", &["pods"], &["get", "list", "watch"]);
    add("", &["secrets"], &["get"]);
    add("", &["serviceaccounts"], &["get", "create"]);
    add("", &["events"], &["create", "patch"]);
    add("events.k8s.io", &["events"], &["create", "patch"]);
    want
}

fn leader_election_grants(lease: &str) -> BTreeSet<String> {
    [
        "coordination.k8s.io/leases:create".to_string(),
        format!("coordination.k8s.io/leases:get name={lease}"),
        format!("coordination.k8s.io/leases:update name={lease}"),
    ]
    .into_iter()
    .collect()
}

/// The operator container of the Deployment.
fn operator_container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(container: &Value) -> Vec<&str> {
    strings(&container["args"])
}

/// What both renders share: the pod runs `kafka-backup operator` hardened, with its identity from
/// the downward API, probes on the metrics port and a memory-backed work directory.
fn assert_operator_deployment(deployment: &Value, sa: &str, lease: &str) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = operator_container(deployment);
    let a = args(c);
    assert_eq!(a.first(), Some(&"operator"), "{a:?}");
    for want in [
        "--http-addr=0.0.0.0:8080".to_string(),
        format!("--lease-name={lease}"),
        "--work-dir=/var/run/kafka-backup-operator".to_string(),
        "--log-format=json".to_string(),
        "--worker-service-account=kafka-backup-worker".to_string(),
    ] {
        assert!(a.contains(&want.as_str()), "{want} not in {a:?}");
    }
    assert!(a.iter().any(|x| x.starts_with("--worker-image=")), "{a:?}");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"]);
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = c["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == var))
            .unwrap_or_else(|| panic!("{var} not set"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field, "{var}");
    }
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let work = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "work"))
        .expect("work volume");
    assert_eq!(work["emptyDir"]["medium"], "Memory");
    assert!(
        c["volumeMounts"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["name"] == "work" && m["mountPath"] == "/var/run/kafka-backup-operator")),
        "work directory mounted"
    );
}

#[test]
fn plain_manifests_apply_to_the_api_server() {
    let text = std::fs::read_to_string(repo_root().join(MANIFESTS)).expect("read manifests");
    let docs = documents(&text);
    let (first, rest): (Vec<&String>, Vec<&String>) = docs
        .iter()
        .partition(|d| ["CustomResourceDefinition", "Namespace"].contains(&kind_of(d)));
    assert_eq!(
        first
            .iter()
            .filter(|d| kind_of(d) == "CustomResourceDefinition")
            .count(),
        4,
        "the four CRDs"
    );
    // The CRDs (other tests install the same ones) and the namespace for real: namespaced objects
    // can be dry-run only into a namespace that exists.
    let join = |ds: &[&String]| {
        ds.iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join("---\n")
    };
    apply_for_real(&join(&first));
    let objects = apply_dry_run(&join(&rest));

    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .into_iter()
        .collect(),
        "the default render"
    );
    for o in &objects {
        if o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding" {
            assert_eq!(o["metadata"]["namespace"], "kafka-backup", "{}", o["kind"]);
        }
    }

    let sa = one(&objects, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .expect("sa name")
        .to_string();
    let cluster_role = one(&objects, "ClusterRole");
    assert_no_broad_grants(cluster_role);
    assert_eq!(grants(cluster_role), operator_grants());
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], cluster_role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], sa.as_str());
    assert_eq!(binding["subjects"][0]["namespace"], "kafka-backup");

    let lease = "kafka-backup-operator";
    let le = one(&objects, "Role");
    assert_no_broad_grants(le);
    assert_eq!(grants(le), leader_election_grants(lease));
    assert_eq!(
        one(&objects, "RoleBinding")["subjects"][0]["name"],
        sa.as_str()
    );

    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_operator_deployment(deployment, &sa, lease);
    let a = args(operator_container(deployment));
    assert!(
        !a.iter().any(|x| x.starts_with("--namespace")),
        "every namespace by default: {a:?}"
    );
    assert!(
        a.contains(&"--worker-image=ghcr.io/kafka-backup/kafka-backup:0.1.0"),
        "{a:?}"
    );
    assert_eq!(
        operator_container(deployment)["image"],
        "ghcr.io/kafka-backup/kafka-backup:0.1.0"
    );

    let service = one(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn chart_for_one_namespace_grants_a_role_there_only() {
    let release_ns = create_namespace("deploy-op");
    let watched = create_namespace("deploy-watched");
    let chart = repo_root().join(CHART);
    let rendered = helm(&[
        "template",
        "kb",
        chart.to_str().expect("chart path"),
        "--namespace",
        &release_ns,
        "--set",
        &format!("watchNamespace={watched}"),
        "--set-json",
        r#"defaultStorage={"storageType":"s3","s3":{"bucket":"kafka-backups","region":"eu-west-1"}}"#,
    ]);
    assert!(
        !rendered.contains("kind: CustomResourceDefinition"),
        "CRDs only with --include-crds"
    );
    let objects = apply_dry_run(&rendered);

    assert!(
        find(&objects, "ClusterRole").is_empty() && find(&objects, "ClusterRoleBinding").is_empty(),
        "no cluster-wide permission when one namespace is watched"
    );
    let roles = find(&objects, "Role");
    assert_eq!(
        roles.len(),
        2,
        "the operator's Role and the leader-election Role"
    );
    let fullname = "kb-kafka-backup";
    let lease = format!("{fullname}-operator");
    let sa = one(&objects, "ServiceAccount");
    assert_eq!(sa["metadata"]["namespace"], release_ns.as_str());
    let sa = sa["metadata"]["name"].as_str().expect("sa name");
    for role in &roles {
        assert_no_broad_grants(role);
        if role["metadata"]["name"] == fullname {
            assert_eq!(role["metadata"]["namespace"], watched.as_str());
            assert_eq!(grants(role), operator_grants());
        } else {
            assert_eq!(role["metadata"]["namespace"], release_ns.as_str());
            assert_eq!(grants(role), leader_election_grants(&lease));
        }
    }
    for binding in find(&objects, "RoleBinding") {
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["subjects"][0]["name"], sa);
        assert_eq!(binding["subjects"][0]["namespace"], release_ns.as_str());
        let want_ns = if binding["metadata"]["name"] == fullname {
            &watched
        } else {
            &release_ns
        };
        assert_eq!(binding["metadata"]["namespace"], want_ns.as_str());
    }

    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], release_ns.as_str());
    assert_operator_deployment(deployment, sa, &lease);
    let a = args(operator_container(deployment));
    let ns_arg = format!("--namespace={watched}");
    assert!(a.contains(&ns_arg.as_str()), "{a:?}");
    assert!(
        a.contains(&"--default-storage=/etc/kafka-backup/default-storage.yaml"),
        "{a:?}"
    );
    let cm = one(&objects, "ConfigMap");
    let file = cm["data"]["default-storage.yaml"]
        .as_str()
        .expect("default-storage.yaml");
    assert!(
        file.starts_with("storage:\n") && file.contains("bucket: kafka-backups"),
        "{file}"
    );
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "default-storage"))
        .expect("default-storage volume");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);

    delete_namespace(&watched);
    delete_namespace(&release_ns);
}

#[test]
fn chart_renders_a_service_monitor_when_asked() {
    let chart = repo_root().join(CHART);
    let chart = chart.to_str().expect("chart path");
    let off = helm(&["template", "kb", chart, "--namespace", "monitoring-test"]);
    assert!(!off.contains("kind: ServiceMonitor"), "off by default");
    let on = helm(&[
        "template",
        "kb",
        chart,
        "--namespace",
        "monitoring-test",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=prometheus",
    ]);
    let doc = documents(&on)
        .into_iter()
        .find(|d| kind_of(d) == "ServiceMonitor")
        .expect("a ServiceMonitor");
    for want in [
        "apiVersion: monitoring.coreos.com/v1",
        "release: prometheus",
        "- port: metrics",
        "path: /metrics",
        "app.kubernetes.io/instance: kb",
    ] {
        assert!(doc.contains(want), "{want} not in:\n{doc}");
    }
}
