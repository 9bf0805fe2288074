{{/*
Names and labels, after the prometheus-community charts (kube-state-metrics).
*/}}

{{/* Chart name, overridable, cut to the 63 characters of a label value. */}}
{{- define "zopilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the
release name already contains it. Cut to 63 characters (DNS label).
*/}}
{{- define "zopilot.fullname" -}}
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

{{/* name-version for the helm.sh/chart label ("+" is not allowed in labels). */}}
{{- define "zopilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. helm.sh/chart changes with every chart version, so it
is never part of a selector (selectors are immutable).
*/}}
{{- define "zopilot.labels" -}}
helm.sh/chart: {{ include "zopilot.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zopilot
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator (stable across upgrades). */}}
{{- define "zopilot.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zopilot.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "zopilot.operator.labels" -}}
{{ include "zopilot.labels" . }}
{{ include "zopilot.operator.selectorLabels" . }}
{{- end }}

{{/*
Selector labels of the HTTP service's pods. app.kubernetes.io/name is the
worker's own name (what the operator gives job pods too), so one PodMonitor
and one NetworkPolicy cover both; the component tells them apart.
*/}}
{{- define "zopilot.service.selectorLabels" -}}
app.kubernetes.io/name: zopilot-worker
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: service
{{- end }}

{{- define "zopilot.service.labels" -}}
{{ include "zopilot.labels" . }}
{{ include "zopilot.service.selectorLabels" . }}
{{- end }}

{{- define "zopilot.operator.fullname" -}}
{{- printf "%s-operator" (include "zopilot.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zopilot.service.fullname" -}}
{{- printf "%s-worker" (include "zopilot.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* ServiceAccount of the operator. */}}
{{- define "zopilot.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "zopilot.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ServiceAccount of worker pods (jobs and the HTTP service). */}}
{{- define "zopilot.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "zopilot.service.fullname" .) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Namespaces where DocumentJobs run, so worker objects (ServiceAccount,
NetworkPolicy) must exist: the release namespace, watchNamespaces and
worker.namespaces, without duplicates.
*/}}
{{- define "zopilot.jobNamespaces" -}}
{{- $all := list .Release.Namespace }}
{{- range (concat .Values.watchNamespaces .Values.worker.namespaces) }}
{{- $all = append $all . }}
{{- end }}
{{- toJson ($all | uniq) }}
{{- end }}

{{/* image reference: repository:tag (tag defaults to the chart's appVersion) or @digest. */}}
{{- define "zopilot.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace of a monitoring object: its own override or the release's. */}}
{{- define "zopilot.monitoringNamespace" -}}
{{- default .root.Release.Namespace .namespace }}
{{- end }}

{{/*
What the operator does in a namespace where jobs run (operator/src):
- pods: kube.py create_pod/get_pod/delete_pod; the worker pod watch (handlers.py) lists and watches;
- configmaps: the per-job spec ConfigMap (create, read back, delete; listed and watched with the jobs);
- events: kube.py emit_event (core/v1 Events; kopf's own posting is off);
- documentjobs: kube.py get_job, and the job watch (handlers.py, kube.py list_jobs_in/watch_jobs);
- documentjobs/status: kube.py patch_job_status;
- documentjobs/finalizers: the worker pod's ownerReference sets blockOwnerDeletion, which needs it.
*/}}
{{- define "zopilot.operator.jobRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [create, get, delete, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, get, delete, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [zopilot.dev]
  resources: [documentjobs]
  verbs: [get, list, watch]
- apiGroups: [zopilot.dev]
  resources: [documentjobs/status]
  verbs: [patch]
- apiGroups: [zopilot.dev]
  resources: [documentjobs/finalizers]
  verbs: [update]
{{- end }}
