# `scripts/quickstart --kubernetes`: the main job through the operator on a local Kubernetes node.
# Starts Kafka, MinIO and the test cluster (API server, kubelet, containerd, CoreDNS), builds the
# image and loads it into the node, installs the chart with helm, applies a KafkaBackup and a
# KafkaRestore, waits for them with kubectl and checks the restored data record for record.
# Sourced by scripts/quickstart after scripts/lib/common.sh and build-deps.sh.

kb_quickstart_kubernetes() {
  kb_build_deps
  scripts/testenv up kafka k8s s3 helm node
  eval "$(scripts/testenv env kafka k8s s3 helm node)"

  echo "==> building the image and loading it into the node"
  local image
  image=$(scripts/image --load)
  echo "$image"
  cargo build --release --locked -p kafka-backup-testkit --bins
  local bin
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release

  local run ns kubectl orders payments
  run=$(date +%s)
  ns=quickstart-$run
  kubectl=("$KUBECTL" --kubeconfig "$KUBECONFIG")
  orders="quickstart-orders-$run"
  payments="quickstart-payments-$run"
  echo "==> installing the operator: helm install kafka-backup deploy/helm/kafka-backup -n $ns"
  "${kubectl[@]}" create namespace "$ns"
  "$HELM" install kafka-backup deploy/helm/kafka-backup --namespace "$ns" --wait --timeout 180s \
    --set "image.repository=${image%:*},image.tag=${image##*:},image.pullPolicy=Never" \
    --set "watchNamespace=$ns,replicaCount=1"
  "${kubectl[@]}" -n "$ns" get deployment,pods

  echo "==> writing sample data to $orders and $payments"
  "$bin/kb-sample" produce "$KAFKA_BOOTSTRAP" "$orders" 3000 3
  "$bin/kb-sample" produce "$KAFKA_BOOTSTRAP" "$payments" 1000 2
  "${kubectl[@]}" -n "$ns" create secret generic s3-credentials \
    --from-file=accessKey="$S3_ACCESS_KEY_FILE" --from-file=secretKey="$S3_SECRET_KEY_FILE"

  echo "==> kubectl apply: KafkaBackup quickstart"
  "${kubectl[@]}" -n "$ns" apply -f - <<YAML
apiVersion: kafka.oso.sh/v1alpha1
kind: KafkaBackup
metadata:
  name: quickstart
spec:
  kafkaCluster:
    bootstrapServers: ["$KB_POD_KAFKA_BOOTSTRAP"]
  topics: ["quickstart-*-$run"]
  storage:
    storageType: s3
    s3:
      bucket: $S3_BUCKET
      region: $S3_REGION
      endpoint: $KB_POD_S3_ENDPOINT
      prefix: $ns
      credentialsSecret: {name: s3-credentials}
  compression: zstd
YAML
  "${kubectl[@]}" -n "$ns" wait kb/quickstart --for=jsonpath='{.status.phase}'=Completed --timeout=300s
  local id
  id=$("${kubectl[@]}" -n "$ns" get kb quickstart -o jsonpath='{.status.lastBackupId}')

  echo "==> kubectl apply: KafkaRestore quickstart-restore of $id"
  "${kubectl[@]}" -n "$ns" apply -f - <<YAML
apiVersion: kafka.oso.sh/v1alpha1
kind: KafkaRestore
metadata:
  name: quickstart-restore
spec:
  backupId: "$id"
  targetCluster:
    bootstrapServers: ["$KB_POD_KAFKA_BOOTSTRAP"]
  storage:
    storageType: s3
    s3:
      bucket: $S3_BUCKET
      region: $S3_REGION
      endpoint: $KB_POD_S3_ENDPOINT
      prefix: $ns
      credentialsSecret: {name: s3-credentials}
  topicMapping:
    $orders: $orders-restored
    $payments: $payments-restored
  createTopics: true
YAML
  "${kubectl[@]}" -n "$ns" wait kr/quickstart-restore --for=jsonpath='{.status.phase}'=Completed --timeout=300s
  echo "==> kubectl get kb,kr -n $ns"
  "${kubectl[@]}" -n "$ns" get kb,kr
  echo "==> checking the restored topics hold exactly the sample data"
  "$bin/kb-sample" check "$KAFKA_BOOTSTRAP" "$orders-restored" 3000 3
  "$bin/kb-sample" check "$KAFKA_BOOTSTRAP" "$payments-restored" 1000 2
  echo "==> quickstart on Kubernetes OK. Remove it with: $KUBECTL delete namespace $ns"
  echo "    stop the services with: scripts/testenv down"
}
