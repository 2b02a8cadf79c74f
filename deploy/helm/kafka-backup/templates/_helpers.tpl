{{/* Names and labels shared by the templates. */}}

{{- define "kafka-backup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name, with the chart name appended unless the release name
already contains it. 63 characters at most (DNS label).
*/}}
{{- define "kafka-backup.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kafka-backup.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kafka-backup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-backup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kafka-backup.labels" -}}
helm.sh/chart: {{ include "kafka-backup.chart" . }}
{{ include "kafka-backup.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kafka-backup
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kafka-backup.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kafka-backup.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "kafka-backup.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{- define "kafka-backup.workerImage" -}}
{{- default (include "kafka-backup.image" .) .Values.workerImage }}
{{- end }}

{{/* The Lease the replicas elect their leader with, in the release namespace. */}}
{{- define "kafka-backup.leaseName" -}}
{{- printf "%s-operator" (include "kafka-backup.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kafka-backup.defaultStoragePath" -}}
/etc/kafka-backup/default-storage.yaml
{{- end }}

{{/* The default-storage file: a `storage:` block holding values.defaultStorage. */}}
{{- define "kafka-backup.defaultStorageFile" -}}
{{- dict "storage" .Values.defaultStorage | toYaml }}
{{- end }}
