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

{{- define "gentask.ownerPolicyName" -}}
{{- printf "%s-%s-task-owner" .Release.Namespace (include "gentask.fullname" .) | trunc 55 | trimSuffix "-" }}
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
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}

{{/* The kube-score checks a Deployment deliberately fails (values.yaml, "kube-score"), each only
while the value that causes it is as the chart's default: (dict "ctx" $ "resources" ... "always" (list ...)).
container-resources only when the CPU limit is all it would miss. */}}
{{- define "gentask.kubeScoreIgnore" -}}
{{- $ignore := .always | default list }}
{{- $r := .resources | default dict }}
{{- $req := $r.requests | default dict }}
{{- $lim := $r.limits | default dict }}
{{- if and (not (hasKey $lim "cpu")) (hasKey $lim "memory") (hasKey $req "cpu") (hasKey $req "memory") }}
{{- $ignore = append $ignore "container-resources" }}
{{- end }}
{{- if ne .ctx.Values.image.pullPolicy "Always" }}
{{- $ignore = append $ignore "container-image-pull-policy" }}
{{- end }}
{{- join "," $ignore }}
{{- end }}

{{/* A preferred spread over nodes of one component's pods, when it has more than one. */}}
{{- define "gentask.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "gentask.selectorLabels" . | nindent 12 }}
{{- end }}

{{/* The Secret with the artifact link keys: the one given, else the one the chart makes. */}}
{{- define "gentask.api.linksSecret" -}}
{{- default (printf "%s-links" (include "gentask.api.fullname" .) | trunc 63 | trimSuffix "-") .Values.api.links.existingSecret }}
{{- end }}

{{/* Network policies (templates/networkpolicy.yaml) --------------------------------------------- */}}

{{/* The namespaces whose task pods the workers' policy covers: the task namespace, the listed
tenants (tenants.namespaces) and networkPolicy.taskNamespaces, as a JSON list. */}}
{{- define "gentask.networkPolicy.taskNamespaces" -}}
{{- concat (list (include "gentask.taskNamespace" .)) .Values.tenants.namespaces .Values.networkPolicy.taskNamespaces | uniq | toJson }}
{{- end }}

{{/* An address as a CIDR: 10.1.2.3 -> 10.1.2.3/32, fd00::1 -> fd00::1/128, a CIDR as it is. */}}
{{- define "gentask.networkPolicy.cidr" -}}
{{- $a := trimAll "[]" . }}
{{- if contains "/" $a }}{{ $a }}{{ else if contains ":" $a }}{{ $a }}/128{{ else }}{{ $a }}/32{{ end }}
{{- end }}

{{/* The API server: networkPolicy.apiServer.cidrs; empty: the `kubernetes` Service's ClusterIPs and
its EndpointSlice's addresses, looked up at install and upgrade; where nothing can be looked up
(helm template, Argo CD) any address on networkPolicy.apiServer.ports. */}}
{{- define "gentask.networkPolicy.apiServerEgress" -}}
{{- $cfg := .Values.networkPolicy.apiServer }}
{{- $cidrs := list }}
{{- $ports := list }}
{{- range $cfg.ports }}{{ $ports = append $ports (int .) }}{{ end }}
{{- if $cfg.cidrs }}
{{- $cidrs = $cfg.cidrs }}
{{- else }}
{{- $svc := lookup "v1" "Service" "default" "kubernetes" }}
{{- if and $svc $svc.spec }}
{{- range ($svc.spec.clusterIPs | default (list $svc.spec.clusterIP)) }}{{ $cidrs = append $cidrs (include "gentask.networkPolicy.cidr" .) }}{{ end }}
{{- range $svc.spec.ports }}{{ $ports = append $ports (int .port) }}{{ end }}
{{- end }}
{{- $slice := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" }}
{{- if $slice }}
{{- range ($slice.endpoints | default list) }}{{ range .addresses }}{{ $cidrs = append $cidrs (include "gentask.networkPolicy.cidr" .) }}{{ end }}{{ end }}
{{- range ($slice.ports | default list) }}{{ $ports = append $ports (int .port) }}{{ end }}
{{- end }}
{{- end }}
# the API server{{ if not $cidrs }} (not looked up: any address on its ports; set networkPolicy.apiServer.cidrs){{ end }}
- ports:
    {{- range ($ports | uniq) }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- if $cidrs }}
  to:
    {{- range ($cidrs | uniq) }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end }}

{{/* DNS, the API server and MongoDB: what every gentask process talks to. */}}
{{- define "gentask.networkPolicy.baseEgress" -}}
{{- $np := .Values.networkPolicy }}
# DNS: the cluster's resolver (names of MongoDB, vendors and webhook receivers)
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
  to:
    - namespaceSelector:
        {{- toYaml $np.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $np.dns.podSelector | nindent 8 }}
    {{- range $np.dns.cidrs }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
{{ include "gentask.networkPolicy.apiServerEgress" . | trim }}
# MongoDB: the task mirror and the artifact store{{ if not $np.mongodb.peers }} (any address on its ports; set networkPolicy.mongodb.peers){{ end }}
- ports:
    {{- range $np.mongodb.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with $np.mongodb.peers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "gentask.networkPolicy.ipBlocks" -}}
{{- range . }}
- ipBlock:
    cidr: {{ .cidr | quote }}
    {{- with .except }}
    except:
      {{- range . }}
      - {{ . | quote }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end }}

{{/* The AI vendors' APIs and the hosts their results are downloaded from. */}}
{{- define "gentask.networkPolicy.vendorEgress" -}}
{{- $v := .Values.networkPolicy.vendors }}
# AI vendors (Ark, Visual, OpenAI) and their result downloads
- ports:
    {{- range $v.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  to:
    {{- include "gentask.networkPolicy.ipBlocks" $v.ipBlocks | trim | nindent 4 }}
{{- end }}

{{/* Webhook receivers (the operator sends): public addresses on networkPolicy.webhooks.ports (80 too
when http may be used), and every address or CIDR of webhooks.allow on any port. */}}
{{- define "gentask.networkPolicy.webhookEgress" -}}
{{- $w := .Values.networkPolicy.webhooks }}
{{- $ports := list }}
{{- range $w.ports }}{{ $ports = append $ports (int .) }}{{ end }}
{{- if or .Values.webhooks.allowHTTP .Values.webhooks.allow }}{{ $ports = append $ports 80 }}{{ end }}
{{- $allowed := list }}
{{- range .Values.webhooks.allow }}
{{- $entry := trimAll "[]" (trim .) }}
{{- if or (contains "/" $entry) (contains ":" $entry) (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $entry) }}
{{- $allowed = append $allowed (include "gentask.networkPolicy.cidr" $entry) }}
{{- end }}
{{- end }}
{{- if not $w.ipBlocks }}
{{- /* the same addresses as the vendors' rule: only the ports it does not open already */}}
{{- $vendorPorts := list }}
{{- range .Values.networkPolicy.vendors.ports }}{{ $vendorPorts = append $vendorPorts (int .) }}{{ end }}
{{- $left := list }}
{{- range $ports }}{{ if not (has . $vendorPorts) }}{{ $left = append $left . }}{{ end }}{{ end }}
{{- $ports = $left }}
{{- end }}
{{- if $ports }}
# webhook receivers: public addresses{{ if not $w.ipBlocks }} (on the vendors' ports: the rule above){{ end }}
- ports:
    {{- range ($ports | uniq) }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  to:
    {{- include "gentask.networkPolicy.ipBlocks" ($w.ipBlocks | default .Values.networkPolicy.vendors.ipBlocks) | trim | nindent 4 }}
{{- end }}
{{- if $allowed }}
# webhook receivers on the allowlist (webhooks.allow's addresses and CIDRs), any port
- to:
    {{- range ($allowed | uniq) }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
{{- end }}
{{- end }}
