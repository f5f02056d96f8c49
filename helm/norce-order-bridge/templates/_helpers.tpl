{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "norce-order-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release name already contains it. */}}
{{- define "norce-order-bridge.fullname" -}}
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

{{- define "norce-order-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every resource. */}}
{{- define "norce-order-bridge.labels" -}}
helm.sh/chart: {{ include "norce-order-bridge.chart" . }}
{{ include "norce-order-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: norce-order-bridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels the Deployment, Service, PDB and NetworkPolicy select pods by (immutable). */}}
{{- define "norce-order-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "norce-order-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "norce-order-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "norce-order-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "norce-order-bridge.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Whether the Kafka security protocol uses SASL. */}}
{{- define "norce-order-bridge.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.config.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* Name of the Secret holding the API key / SASL password ("" when there is none). */}}
{{- define "norce-order-bridge.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if or .Values.secrets.norceApiKey .Values.secrets.kafkaSaslPassword }}
{{- include "norce-order-bridge.fullname" . }}
{{- end }}
{{- end }}

{{/* Whether the chart creates the Secret itself. */}}
{{- define "norce-order-bridge.createSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.norceApiKey .Values.secrets.kafkaSaslPassword) }}true{{ end }}
{{- end }}

{{/* Whether a Norce API key file is mounted. */}}
{{- define "norce-order-bridge.mountApiKey" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.norceApiKey }}true{{ end }}
{{- end }}

{{/* Render-time checks of combinations the schema cannot express. */}}
{{- define "norce-order-bridge.validate" -}}
{{- $p := .Values.config.processing }}
{{- if le (int64 .Values.terminationGracePeriodSeconds) (int64 (ceil $p.drainDeadlineSeconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than config.processing.drainDeadlineSeconds (%v): the pod would be killed in the middle of its drain" .Values.terminationGracePeriodSeconds $p.drainDeadlineSeconds) }}
{{- end }}
{{- if include "norce-order-bridge.kafkaSasl" . }}
{{- if not .Values.config.kafka.sasl.mechanism }}
{{- fail (printf "config.kafka.sasl.mechanism is required with securityProtocol %s" .Values.config.kafka.securityProtocol) }}
{{- end }}
{{- if not .Values.config.kafka.sasl.username }}
{{- fail (printf "config.kafka.sasl.username is required with securityProtocol %s" .Values.config.kafka.securityProtocol) }}
{{- end }}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.kafkaSaslPassword) }}
{{- fail (printf "securityProtocol %s needs the SASL password: set secrets.existingSecret (key %s) or secrets.kafkaSaslPassword" .Values.config.kafka.securityProtocol .Values.secrets.kafkaSaslPasswordKey) }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are mutually exclusive (KEDA manages its own HPA)" }}
{{- end }}
{{- end }}

{{/* Environment of the bridge container: paths of the mounted secret files, then extraEnv. */}}
{{- define "norce-order-bridge.env" -}}
{{- $tls := .Values.config.kafka.tls }}
{{- if include "norce-order-bridge.mountApiKey" . }}
- name: BRIDGE_NORCE__API_KEY_FILE
  value: /var/run/secrets/norce/api-key
{{- end }}
{{- if include "norce-order-bridge.kafkaSasl" . }}
- name: BRIDGE_KAFKA__SASL_PASSWORD_FILE
  value: /var/run/secrets/kafka/sasl-password
{{- end }}
{{- if $tls.caSecret.name }}
- name: BRIDGE_KAFKA__SSL_CAFILE
  value: /var/run/secrets/kafka-tls/ca/ca.crt
{{- end }}
{{- if $tls.clientSecret.name }}
- name: BRIDGE_KAFKA__SSL_CERTFILE
  value: /var/run/secrets/kafka-tls/client/tls.crt
- name: BRIDGE_KAFKA__SSL_KEYFILE
  value: /var/run/secrets/kafka-tls/client/tls.key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
