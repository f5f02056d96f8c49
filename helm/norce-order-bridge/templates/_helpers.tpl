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
{{- else if include "norce-order-bridge.chartSecretValues" . }}
{{- include "norce-order-bridge.fullname" . }}
{{- end }}
{{- end }}

{{/* Whether any credential is given as a value (for a chart-managed Secret). */}}
{{- define "norce-order-bridge.chartSecretValues" -}}
{{- $s := .Values.secrets }}
{{- if or $s.norceApiKey $s.kafkaSaslPassword $s.notificationSecret $s.notificationPathToken }}true{{ end }}
{{- end }}

{{/* Whether the chart creates the Secret itself. */}}
{{- define "norce-order-bridge.createSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (include "norce-order-bridge.chartSecretValues" .) }}true{{ end }}
{{- end }}

{{/* Whether the notification ingress runs (and which of its secret files are mounted). */}}
{{- define "norce-order-bridge.notifications" -}}
{{- if .Values.ingress.notifications.enabled }}true{{ end }}
{{- end }}
{{- define "norce-order-bridge.notificationSecretFile" -}}
{{- if and .Values.ingress.notifications.enabled .Values.ingress.notifications.auth.sharedSecret }}true{{ end }}
{{- end }}
{{- define "norce-order-bridge.notificationPathTokenFile" -}}
{{- if and .Values.ingress.notifications.enabled .Values.ingress.notifications.auth.pathToken }}true{{ end }}
{{- end }}

{{/* Name of the notifications Service. */}}
{{- define "norce-order-bridge.notificationsService" -}}
{{- printf "%s-notifications" (include "norce-order-bridge.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether a Norce API key file is mounted. */}}
{{- define "norce-order-bridge.mountApiKey" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.norceApiKey }}true{{ end }}
{{- end }}

{{/* Lowest number of replicas the Deployment runs with (the autoscaler's minimum, at least 1). */}}
{{- define "norce-order-bridge.minReplicas" -}}
{{- $a := .Values.autoscaling }}
{{- $n := int .Values.replicaCount }}
{{- if $a.hpa.enabled }}{{ $n = int $a.hpa.minReplicas }}{{ else if $a.keda.enabled }}{{ $n = int $a.keda.minReplicaCount }}{{ end }}
{{- max $n 1 }}
{{- end }}

{{/* Pods a PDB value (integer or percentage, rounded up as Kubernetes does) stands for. */}}
{{- define "norce-order-bridge.scaledPods" -}}
{{- $v := toString .value }}
{{- if hasSuffix "%" $v }}
{{- $pct := trimSuffix "%" $v | int }}
{{- div (add (mul $pct .replicas) 99) 100 }}
{{- else }}
{{- int $v }}
{{- end }}
{{- end }}

{{/* A Kubernetes quantity (schema-checked: 250m, 0.5, 1Gi, 1e3...) as a plain number. */}}
{{- define "norce-order-bridge.quantity" -}}
{{- $q := toString . }}
{{- $units := dict "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- $unit := regexFind "([KMGTPE]i|[mkMGTPE])$" $q }}
{{- mulf (float64 (trimPrefix "+" (trimSuffix $unit $q))) (get $units $unit | default 1.0) }}
{{- end }}

{{/* Requests above limits are rejected by the API server in the middle of an install. */}}
{{- define "norce-order-bridge.checkResources" -}}
{{- $resources := .resources | default dict }}
{{- $requests := $resources.requests | default dict }}
{{- range $name, $limit := $resources.limits | default dict }}
{{- $request := get $requests $name }}
{{- if and (not (kindIs "invalid" $request)) (not (kindIs "invalid" $limit)) }}
{{- if gt (float64 (include "norce-order-bridge.quantity" $request)) (float64 (include "norce-order-bridge.quantity" $limit)) }}
{{- fail (printf "%s.requests.%s (%v) must not be greater than %s.limits.%s (%v)" $.path $name $request $.path $name $limit) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The plain BRIDGE_* settings of the ConfigMap, as YAML (nulls and empty strings dropped later). */}}
{{- define "norce-order-bridge.configEnv" -}}
{{- $c := .Values.config }}
{{- $env := dict
    "BRIDGE_LOG_LEVEL" $c.logLevel
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" $c.kafka.bootstrapServers
    "BRIDGE_KAFKA__GROUP_ID" $c.kafka.groupId
    "BRIDGE_KAFKA__CLIENT_ID" $c.kafka.clientId
    "BRIDGE_KAFKA__SECURITY_PROTOCOL" $c.kafka.securityProtocol
    "BRIDGE_TOPICS__COMMANDS" $c.topics.commands
    "BRIDGE_TOPICS__SNAPSHOTS" $c.topics.snapshots
    "BRIDGE_TOPICS__EVENTS" $c.topics.events
    "BRIDGE_TOPICS__RESULTS" $c.topics.results
    "BRIDGE_TOPICS__DLQ" $c.topics.dlq
    "BRIDGE_TOPICS__NOTIFICATIONS" (dig "topics" "notifications" nil $c)
    "BRIDGE_TOPICS__ORDER_STATE" (dig "topics" "orderState" nil $c)
    "BRIDGE_TOPICS__CREATE_MISSING" $c.topics.createMissing
    "BRIDGE_TOPICS__PARTITIONS" $c.topics.partitions
    "BRIDGE_TOPICS__REPLICATION_FACTOR" $c.topics.replicationFactor
    "BRIDGE_NORCE__BASE_URL" $c.norce.baseUrl
    "BRIDGE_NORCE__ENVIRONMENT" $c.norce.environment
    "BRIDGE_NORCE__SLUG" $c.norce.slug
    "BRIDGE_NORCE__ADAPTER_ID" $c.norce.adapterId
    "BRIDGE_NORCE__READ_TIMEOUT_S" $c.norce.readTimeoutSeconds
    "BRIDGE_NORCE__MAX_CONNECTIONS" $c.norce.maxConnections
    "BRIDGE_PROCESSING__ORDERING" $c.processing.ordering
    "BRIDGE_PROCESSING__PROCESSING_GUARANTEE" $c.processing.processingGuarantee
    "BRIDGE_PROCESSING__MAX_IN_FLIGHT" $c.processing.maxInFlight
    "BRIDGE_PROCESSING__MAX_COMMAND_AGE_S" $c.processing.maxCommandAgeSeconds
    "BRIDGE_PROCESSING__DRAIN_DEADLINE_S" $c.processing.drainDeadlineSeconds
    "BRIDGE_PROCESSING__REVOKE_DEADLINE_S" (dig "processing" "revokeDeadlineSeconds" nil $c)
    "BRIDGE_PROCESSING__WRITE_GUARD" (dig "processing" "writeGuard" nil $c)
    "BRIDGE_KAFKA__SESSION_TIMEOUT_MS" (dig "kafka" "sessionTimeoutMs" nil $c)
    "BRIDGE_KAFKA__STARTUP_DEADLINE_S" (dig "kafka" "startupDeadlineSeconds" nil $c)
    "BRIDGE_HTTP__PORT" .Values.containerPort
    "BRIDGE_HTTP__WEDGED_AFTER_S" (dig "http" "wedgedAfterSeconds" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__URL" (dig "schemaRegistry" "url" nil $c)
    "BRIDGE_AVRO__ENCODING" (dig "schemaRegistry" "encoding" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__EVENTS_SUBJECT_STRATEGY" (dig "schemaRegistry" "eventsSubjectStrategy" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__COMPATIBILITY" (dig "schemaRegistry" "compatibility" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__AUTO_REGISTER" (dig "schemaRegistry" "autoRegister" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__USE_LATEST" (dig "schemaRegistry" "useLatest" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__TIMEOUT_S" (dig "schemaRegistry" "timeoutSeconds" nil $c)
    "BRIDGE_SCHEMA_REGISTRY__USERNAME" (dig "schemaRegistry" "username" nil $c)
}}
{{- if $c.norce.allowInsecureHttp }}
{{- /* Only when true: false is the bridge's default. */}}
{{- $_ := set $env "BRIDGE_NORCE__ALLOW_INSECURE_HTTP" true }}
{{- end }}
{{- if include "norce-order-bridge.notifications" . }}
{{- /* Only when enabled: disabled is the bridge's default, and its other settings are unused then. */}}
{{- $n := .Values.ingress.notifications }}
{{- $_ := set $env "BRIDGE_INGRESS__ENABLED" true }}
{{- $_ := set $env "BRIDGE_INGRESS__PORT" $n.port }}
{{- $_ := set $env "BRIDGE_INGRESS__SECRET_HEADER" $n.auth.header }}
{{- $_ := set $env "BRIDGE_INGRESS__MAX_BODY_BYTES" $n.maxBodyBytes }}
{{- $_ := set $env "BRIDGE_INGRESS__BODY_TIMEOUT_S" $n.bodyTimeoutSeconds }}
{{- $_ := set $env "BRIDGE_INGRESS__ACK_TIMEOUT_S" $n.ackTimeoutSeconds }}
{{- $_ := set $env "BRIDGE_INGRESS__RETRY_AFTER_S" (dig "retryAfterSeconds" nil $n) }}
{{- $_ := set $env "BRIDGE_INGRESS__MAX_CONNECTIONS" (dig "maxConnections" nil $n) }}
{{- $_ := set $env "BRIDGE_INGRESS__RELAY" $n.relay }}
{{- end }}
{{- if include "norce-order-bridge.kafkaSasl" . }}
{{- $_ := set $env "BRIDGE_KAFKA__SASL_MECHANISM" $c.kafka.sasl.mechanism }}
{{- $_ := set $env "BRIDGE_KAFKA__SASL_USERNAME" $c.kafka.sasl.username }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* Names of the variables the chart sets on the container itself (secret file paths). */}}
{{- define "norce-order-bridge.envNames" -}}
BRIDGE_NORCE__API_KEY_FILE BRIDGE_KAFKA__SASL_PASSWORD_FILE BRIDGE_KAFKA__SSL_CAFILE BRIDGE_KAFKA__SSL_CERTFILE BRIDGE_KAFKA__SSL_KEYFILE BRIDGE_INGRESS__SECRET_FILE BRIDGE_INGRESS__PATH_TOKEN_FILE BRIDGE_SCHEMA_REGISTRY__PASSWORD_FILE BRIDGE_SCHEMA_REGISTRY__BEARER_TOKEN_FILE BRIDGE_SCHEMA_REGISTRY__CA_FILE
{{- end }}

{{/* Render-time checks of combinations the schema cannot express. Each names the values to fix. */}}
{{- define "norce-order-bridge.validate" -}}
{{- $p := .Values.config.processing }}
{{- $kafka := .Values.config.kafka }}
{{- $norce := .Values.config.norce }}
{{- $a := .Values.autoscaling }}
{{- if le (int64 .Values.terminationGracePeriodSeconds) (int64 (ceil $p.drainDeadlineSeconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than config.processing.drainDeadlineSeconds (%v): the pod would be killed in the middle of its drain" .Values.terminationGracePeriodSeconds $p.drainDeadlineSeconds) }}
{{- end }}
{{- /* Where the bridge sends commands, and with which key: without them the pod exits at startup. */}}
{{- if eq $norce.environment "custom" }}
{{- if not $norce.baseUrl }}
{{- fail "config.norce.baseUrl is required: the Norce Order API URL, e.g. https://<slug>.api-se.norce.tech/checkout/order/ (or set config.norce.environment and config.norce.slug)" }}
{{- end }}
{{- if and (hasPrefix "http://" $norce.baseUrl) (not $norce.allowInsecureHttp) (not (regexMatch "^http://(localhost|127(\\.[0-9]{1,3}){3}|\\[::1\\])(:[0-9]+)?(/|$)" $norce.baseUrl)) }}
{{- fail (printf "config.norce.baseUrl %s is plain http:// to a non-loopback host: the bridge would refuse to send the API key there. Use https://, or set config.norce.allowInsecureHttp=true if the traffic is protected otherwise (e.g. a sidecar proxy)" $norce.baseUrl) }}
{{- end }}
{{- else }}
{{- if not $norce.slug }}
{{- fail (printf "config.norce.slug is required with config.norce.environment=%s (the bridge builds the API URL from it)" $norce.environment) }}
{{- end }}
{{- if $norce.baseUrl }}
{{- fail (printf "config.norce.baseUrl is ignored with config.norce.environment=%s: set either baseUrl (environment custom) or environment and slug" $norce.environment) }}
{{- end }}
{{- end }}
{{- if not (include "norce-order-bridge.mountApiKey" .) }}
{{- fail (printf "a Norce API key is required: set secrets.existingSecret (a Secret with key %s) or secrets.norceApiKey" .Values.secrets.norceApiKeyKey) }}
{{- end }}
{{- if and .Values.secrets.existingSecret (include "norce-order-bridge.chartSecretValues" .) }}
{{- fail "secrets.norceApiKey / secrets.kafkaSaslPassword / secrets.notificationSecret / secrets.notificationPathToken are ignored when secrets.existingSecret is set: put the credentials in that Secret and remove them from the values" }}
{{- end }}
{{- /* Notification ingress: never an unauthenticated webhook, never a credential silently unused. */}}
{{- $n := .Values.ingress.notifications }}
{{- $s := .Values.secrets }}
{{- if $n.enabled }}
{{- if not (or $n.auth.sharedSecret $n.auth.pathToken) }}
{{- fail "ingress.notifications.enabled needs authentication: set ingress.notifications.auth.sharedSecret=true and/or ingress.notifications.auth.pathToken=true (the bridge refuses to accept unauthenticated notifications)" }}
{{- end }}
{{- if and $n.auth.sharedSecret (not $s.existingSecret) (not $s.notificationSecret) }}
{{- fail (printf "ingress.notifications.auth.sharedSecret needs the webhook secret: set secrets.existingSecret (a Secret with key %s) or secrets.notificationSecret, or turn auth.sharedSecret off and use auth.pathToken" $s.notificationSecretKey) }}
{{- end }}
{{- if and $n.auth.pathToken (not $s.existingSecret) (not $s.notificationPathToken) }}
{{- fail (printf "ingress.notifications.auth.pathToken needs the path token: set secrets.existingSecret (a Secret with key %s) or secrets.notificationPathToken" $s.notificationPathTokenKey) }}
{{- end }}
{{- if eq (int $n.port) (int .Values.containerPort) }}
{{- fail (printf "ingress.notifications.port (%v) must differ from containerPort (%v): the ingress has a port of its own, so it can be exposed without metrics and health" $n.port .Values.containerPort) }}
{{- end }}
{{- end }}
{{- if and $s.notificationSecret (not (include "norce-order-bridge.notificationSecretFile" .)) }}
{{- fail "secrets.notificationSecret is set but unused: it needs ingress.notifications.enabled=true and ingress.notifications.auth.sharedSecret=true" }}
{{- end }}
{{- if and $s.notificationPathToken (not (include "norce-order-bridge.notificationPathTokenFile" .)) }}
{{- fail "secrets.notificationPathToken is set but unused: it needs ingress.notifications.enabled=true and ingress.notifications.auth.pathToken=true" }}
{{- end }}
{{- if and $n.kubernetesIngress.enabled (not $n.enabled) }}
{{- fail "ingress.notifications.kubernetesIngress.enabled needs ingress.notifications.enabled=true: the Ingress would route to a port nothing listens on" }}
{{- end }}
{{- if and $n.kubernetesIngress.enabled (not $n.kubernetesIngress.hosts) }}
{{- fail "ingress.notifications.kubernetesIngress.hosts is empty: name the host(s) Norce posts to, e.g. [hooks.example.com]" }}
{{- end }}
{{- /* Kafka security. */}}
{{- if include "norce-order-bridge.kafkaSasl" . }}
{{- if not $kafka.sasl.mechanism }}
{{- fail (printf "config.kafka.sasl.mechanism is required with securityProtocol %s" $kafka.securityProtocol) }}
{{- end }}
{{- if not $kafka.sasl.username }}
{{- fail (printf "config.kafka.sasl.username is required with securityProtocol %s" $kafka.securityProtocol) }}
{{- end }}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.kafkaSaslPassword) }}
{{- fail (printf "securityProtocol %s needs the SASL password: set secrets.existingSecret (key %s) or secrets.kafkaSaslPassword" $kafka.securityProtocol .Values.secrets.kafkaSaslPasswordKey) }}
{{- end }}
{{- end }}
{{- if not (hasSuffix "SSL" $kafka.securityProtocol) }}
{{- if $kafka.tls.caSecret.name }}
{{- fail (printf "config.kafka.tls.caSecret is set but securityProtocol is %s, which does not use TLS: the CA would be ignored and the connection unencrypted. Use SSL or SASL_SSL, or remove the CA secret" $kafka.securityProtocol) }}
{{- end }}
{{- if $kafka.tls.clientSecret.name }}
{{- fail (printf "config.kafka.tls.clientSecret is set but securityProtocol is %s, which does not use TLS: the client certificate would be ignored. Use SSL or SASL_SSL, or remove the client secret" $kafka.securityProtocol) }}
{{- end }}
{{- end }}
{{- /* Secrets never travel as env values; the chart's own variables are not overridden. */}}
{{- $own := splitList " " (include "norce-order-bridge.envNames" .) }}
{{- $own = concat $own (keys (include "norce-order-bridge.configEnv" . | fromYaml)) }}
{{- range .Values.extraEnv }}
{{- $name := upper (toString .name) }}
{{- if regexMatch "^BRIDGE_.*(API_KEY|PASSWORD|SECRET|TOKEN)$" $name }}
{{- fail (printf "extraEnv %s would pass a secret as an environment value (the bridge reads variable names in any letter case): use secrets.existingSecret / secrets.* (mounted as files)" .name) }}
{{- end }}
{{- if has $name $own }}
{{- fail (printf "extraEnv %s overrides a variable the chart sets: use the matching chart value instead" .name) }}
{{- end }}
{{- end }}
{{- /* Autoscaling. */}}
{{- if and $a.hpa.enabled $a.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are mutually exclusive (KEDA manages its own HPA)" }}
{{- end }}
{{- if and $a.hpa.enabled (gt (int $a.hpa.minReplicas) (int $a.hpa.maxReplicas)) }}
{{- fail (printf "autoscaling.hpa.minReplicas (%v) must not be greater than autoscaling.hpa.maxReplicas (%v)" $a.hpa.minReplicas $a.hpa.maxReplicas) }}
{{- end }}
{{- if and $a.keda.enabled (gt (int $a.keda.minReplicaCount) (int $a.keda.maxReplicaCount)) }}
{{- fail (printf "autoscaling.keda.minReplicaCount (%v) must not be greater than autoscaling.keda.maxReplicaCount (%v)" $a.keda.minReplicaCount $a.keda.maxReplicaCount) }}
{{- end }}
{{- if and $a.hpa.enabled (not (kindIs "invalid" $a.hpa.targetCPUUtilizationPercentage)) (not (dig "requests" "cpu" "" (.Values.resources | default dict))) }}
{{- fail "autoscaling.hpa.targetCPUUtilizationPercentage needs resources.requests.cpu: CPU utilisation is measured against the request, and without one the HPA never scales. Set resources.requests.cpu, or targetCPUUtilizationPercentage=null to scale on autoscaling.hpa.metrics only" }}
{{- end }}
{{- /* A PodDisruptionBudget that allows no eviction blocks every node drain. */}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- $replicas := int (include "norce-order-bridge.minReplicas" .) }}
{{- if not (kindIs "invalid" $pdb.minAvailable) }}
{{- $min := int (include "norce-order-bridge.scaledPods" (dict "value" $pdb.minAvailable "replicas" $replicas)) }}
{{- if ge $min $replicas }}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) must be lower than the replica count (%d, the autoscaler's minimum when autoscaling): otherwise no pod may ever be evicted and node drains block. Lower it, raise the replica count, or use maxUnavailable" $pdb.minAvailable $replicas) }}
{{- end }}
{{- else if not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- if eq (int (include "norce-order-bridge.scaledPods" (dict "value" $pdb.maxUnavailable "replicas" $replicas))) 0 }}
{{- fail (printf "podDisruptionBudget.maxUnavailable (%v) allows no eviction: node drains would block. Use at least 1" $pdb.maxUnavailable) }}
{{- end }}
{{- end }}
{{- end }}
{{- include "norce-order-bridge.checkResources" (dict "resources" .Values.resources "path" "resources") }}
{{- include "norce-order-bridge.checkResources" (dict "resources" .Values.helmTest.resources "path" "helmTest.resources") }}
{{- /* Alerts. */}}
{{- if and .Values.prometheusRule.enabled .Values.serviceMonitor.jobLabel (not .Values.prometheusRule.job) }}
{{- fail "serviceMonitor.jobLabel changes the job label of the bridge's targets: set prometheusRule.job to the resulting value, or the down/absent alerts watch the wrong job" }}
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
{{- if include "norce-order-bridge.notificationSecretFile" . }}
- name: BRIDGE_INGRESS__SECRET_FILE
  value: /var/run/secrets/notifications/secret
{{- end }}
{{- if include "norce-order-bridge.notificationPathTokenFile" . }}
- name: BRIDGE_INGRESS__PATH_TOKEN_FILE
  value: /var/run/secrets/notifications/path-token
{{- end }}
{{- if $tls.clientSecret.name }}
- name: BRIDGE_KAFKA__SSL_CERTFILE
  value: /var/run/secrets/kafka-tls/client/tls.crt
- name: BRIDGE_KAFKA__SSL_KEYFILE
  value: /var/run/secrets/kafka-tls/client/tls.key
{{- end }}
{{- $registry := .Values.config.schemaRegistry | default dict }}
{{- if dig "credentialsSecret" "name" "" $registry }}
- name: {{ if $registry.username }}BRIDGE_SCHEMA_REGISTRY__PASSWORD_FILE{{ else }}BRIDGE_SCHEMA_REGISTRY__BEARER_TOKEN_FILE{{ end }}
  value: /var/run/secrets/schema-registry/credential
{{- end }}
{{- if dig "caSecret" "name" "" $registry }}
- name: BRIDGE_SCHEMA_REGISTRY__CA_FILE
  value: /var/run/secrets/schema-registry-tls/ca.crt
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the `helm test` Pod: the release's, but not the selector of the bridge's pods. */}}
{{- define "norce-order-bridge.testLabels" -}}
helm.sh/chart: {{ include "norce-order-bridge.chart" . }}
app.kubernetes.io/name: {{ include "norce-order-bridge.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: norce-order-bridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
