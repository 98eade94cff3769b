{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "gentask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "gentask.fullname" -}}
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

{{- define "gentask.operator.fullname" -}}
{{- printf "%s-operator" (include "gentask.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gentask.pool.fullname" -}}
{{- printf "%s-pool" (include "gentask.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gentask.api.fullname" -}}
{{- printf "%s-api" (include "gentask.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped names carry the release namespace too: two releases must not collide. */}}
{{- define "gentask.operator.clusterRoleName" -}}
{{- printf "%s-%s-operator" .Release.Namespace (include "gentask.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gentask.taskNamespace" -}}
{{- .Values.taskNamespace.name }}
{{- end }}

{{- define "gentask.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------------- */}}

{{- define "gentask.labels" -}}
helm.sh/chart: {{ include "gentask.chart" . }}
app.kubernetes.io/name: {{ include "gentask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gentask
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator") */}}
{{- define "gentask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gentask.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "gentask.componentLabels" -}}
{{ include "gentask.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image and pods ---------------------------------------------------------------------------- */}}

{{- define "gentask.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Pod Security "restricted", the same uid/gid as the image's user and the operator's Job pods. */}}
{{- define "gentask.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "gentask.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Settings every component reads (names from gentask/config.py); secrets only as secretKeyRef. */}}
{{- define "gentask.commonEnv" -}}
- name: ENVIRONMENT
  value: {{ .Values.config.environment | quote }}
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: GENTASK_NAMESPACE
  value: {{ include "gentask.taskNamespace" . | quote }}
- name: GENTASK_PROVIDERS
  value: {{ join "," .Values.config.providers | quote }}
- name: AI_TIMEOUT
  value: {{ .Values.config.aiTimeout | quote }}
{{- with .Values.config.arkBaseURL }}
- name: ARK_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.visualBaseURL }}
- name: VOLCENGINE_VISUAL_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.config.openaiBaseURL }}
- name: OPENAI_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.pricing.overrides }}
- name: GENTASK_PRICES
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}

{{/* The webhook receiver rules: the operator applies them before each send, the API to callback_url. */}}
{{- define "gentask.webhookEnv" -}}
- name: GENTASK_WEBHOOK_ALLOW
  value: {{ join "," .Values.webhooks.allow | quote }}
- name: GENTASK_WEBHOOK_ALLOW_HTTP
  value: {{ .Values.webhooks.allowHTTP | quote }}
{{- end }}

{{/* The Secret holding the default webhook signing key: the one the chart makes, or an existing one. */}}
{{- define "gentask.webhookKeySecret" -}}
{{- .Values.webhooks.signingKey.existingSecret | default (printf "%s-webhook-signing-key" (include "gentask.fullname" .)) -}}
{{- end }}

{{/* MONGO_URL from the credentials Secret (the operator's mirror, the API's history and artifacts). */}}
{{- define "gentask.mongoEnv" -}}
- name: MONGO_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.credentials.secretName }}
      key: MONGO_URL
{{- end }}

{{/* Provider keys, each optional: only the operator holds them (vendor-side cancel, inline executor). */}}
{{- define "gentask.providerKeysEnv" -}}
{{- range list "ARK_API_KEY" "VOLCENGINE_ACCESS_KEY" "VOLCENGINE_SECRET_KEY" "OPENAI_API_KEY" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.credentials.secretName }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end }}

{{- define "gentask.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{/* The Secret with the artifact link keys: the one given, else the one the chart makes. */}}
{{- define "gentask.api.linksSecret" -}}
{{- default (printf "%s-links" (include "gentask.api.fullname" .) | trunc 63 | trimSuffix "-") .Values.api.links.existingSecret }}
{{- end }}
