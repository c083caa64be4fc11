{{/* Names and labels shared by every template. */}}

{{- define "tinyimg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tinyimg.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "tinyimg.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tinyimg.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: app name and instance (component added per object). */}}
{{- define "tinyimg.selectorLabels" -}}
app.kubernetes.io/name: tinyimg
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tinyimg.labels" -}}
{{ include "tinyimg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* "repository:tag" with the appVersion as the default tag. Call with (dict "image" X "root" $). */}}
{{- define "tinyimg.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "tinyimg.operator.fullname" -}}
{{- printf "%s-operator" (include "tinyimg.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tinyimg.router.fullname" -}}
{{- printf "%s-router" (include "tinyimg.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tinyimg.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "tinyimg.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tinyimg.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (include "tinyimg.router.fullname" .) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the router's API keys. */}}
{{- define "tinyimg.router.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "tinyimg.router.fullname" .)) .Values.router.apiKeys.existingSecret -}}
{{- end -}}

{{/* What the chart-made key Secret holds under secretKey: the tenants as YAML (router.tenants),
else one key per line (each key its own tenant). */}}
{{- define "tinyimg.router.apiKeysContent" -}}
{{- if .Values.router.tenants -}}
{{- toYaml (dict "tenants" .Values.router.tenants) }}
{{ else -}}
{{- range .Values.router.apiKeys.keys }}{{ . }}
{{ end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the router checks API keys: router.apiKeys.enabled, or tenants are given. */}}
{{- define "tinyimg.router.keysEnabled" -}}
{{- if or .Values.router.apiKeys.enabled .Values.router.tenants }}true{{ end -}}
{{- end -}}

{{/* A random revision of the chart-made key Secret, stored in its annotation and in the router's
pod template (a change rolls the pods). It reveals nothing about the keys, unlike a hash of them
(with one key, its SHA-256 is exactly what the router compares). The live Secret's revision is
kept while its content is unchanged (`lookup`; without a cluster, as in `helm template`, every
render draws a new one). Memoised in .Values so the Secret and the Deployment get the same one. */}}
{{- define "tinyimg.router.apiKeysRevision" -}}
{{- $keys := .Values.router.apiKeys -}}
{{- if not (hasKey $keys "_revision") -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "tinyimg.router.apiKeysSecret" .) | default dict -}}
{{- $revision := randAlphaNum 32 -}}
{{- if eq (dig "data" $keys.secretKey "" $live) (include "tinyimg.router.apiKeysContent" . | b64enc) -}}
{{- $revision = dig "metadata" "annotations" "tinyimg.io/api-keys-revision" $revision $live -}}
{{- end -}}
{{- $_ := set $keys "_revision" $revision -}}
{{- end -}}
{{- $keys._revision -}}
{{- end -}}

{{/* The longest runtime.requestTimeoutSeconds of the chart's `models` (the schema's default, 300,
when none), rounded up. The router waits that plus its upstream slack for a model's answer. */}}
{{- define "tinyimg.longestRequestTimeout" -}}
{{- $longest := 0 -}}
{{- range .Values.models -}}
{{- $longest = max $longest (dig "runtime" "requestTimeoutSeconds" 300 . | float64 | ceil | int) -}}
{{- end -}}
{{- default 300 $longest -}}
{{- end -}}

{{/* The router's upstream timeout for the longest model: tinyimg.drain.build_upstream_timeout
(request timeout + UPSTREAM_SLACK_SECONDS, 30 s). */}}
{{- define "tinyimg.router.upstreamTimeout" -}}
{{- add (include "tinyimg.longestRequestTimeout" . | int) 30 -}}
{{- end -}}

{{/* Seconds an ingress waits for the router: router.ingress.timeoutSeconds, else the router's
upstream timeout + 30 s, so the router's own JSON 504 arrives before the ingress gives up. */}}
{{- define "tinyimg.router.ingressTimeout" -}}
{{- .Values.router.ingress.timeoutSeconds | int | default (add (include "tinyimg.router.upstreamTimeout" . | int) 30) -}}
{{- end -}}

{{/* The router pod's terminationGracePeriodSeconds: router.terminationGracePeriodSeconds, else
tinyimg.drain.build_drain_timing([upstream timeout]).grace_seconds: the preStop sleep (5 s), the
longest proxied request, and 10 s to exit. */}}
{{- define "tinyimg.router.graceSeconds" -}}
{{- .Values.router.terminationGracePeriodSeconds | int | default (add 5 (include "tinyimg.router.upstreamTimeout" . | int) 10) -}}
{{- end -}}

{{/* Pod-level scheduling and pull secrets. Call with (dict "component" .Values.X "root" $). */}}
{{- define "tinyimg.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* env entries from a name → value map, sorted by name. */}}
{{/* The tracing.env variables of one part (dict "root" $ "service" name), with OTEL_SERVICE_NAME
unless tracing.env names one; nothing when tracing.env is empty. */}}
{{- define "tinyimg.otelEnv" -}}
{{- $env := .root.Values.tracing.env | default dict -}}
{{- if $env }}
{{- range $name, $value := $env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- if not (hasKey $env "OTEL_SERVICE_NAME") }}
- name: OTEL_SERVICE_NAME
  value: {{ .service }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "tinyimg.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The Secret with the webhook signing key model pods mount: webhooks.existingSecret, else the
chart's own when server.jobs.webhookAllowedHosts is set, else nothing. */}}
{{- define "tinyimg.webhookSecret" -}}
{{- if .Values.webhooks.existingSecret -}}
{{- .Values.webhooks.existingSecret -}}
{{- else if dig "jobs" "webhookAllowedHosts" list (.Values.server | default dict) -}}
{{- printf "%s-webhook" (include "tinyimg.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Durable jobs: the Redis URL (redis.url, else the chart's own Redis when redis.enabled), or nothing. */}}
{{- define "tinyimg.redisUrl" -}}
{{- if .Values.redis.url -}}
{{- .Values.redis.url -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "tinyimg.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the Redis password (key `password`): redis.existingSecret, else the chart's own. */}}
{{- define "tinyimg.redisSecret" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else if .Values.redis.enabled -}}
{{- printf "%s-redis" (include "tinyimg.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The results claim: storage.pvc.claimName, else the chart's own when storage.pvc.create. */}}
{{- define "tinyimg.resultsClaim" -}}
{{- if .Values.storage.pvc.claimName -}}
{{- .Values.storage.pvc.claimName -}}
{{- else if .Values.storage.pvc.create -}}
{{- printf "%s-results" (include "tinyimg.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Every model pod's server settings (the operator's TINYIMG_SERVER_SETTINGS): `server`, with
jobs.redisUrl and jobs.resultStore from `redis` and `storage` (the server's own value wins). Fails
when a Redis is given without a place for results. */}}
{{- define "tinyimg.serverSettings" -}}
{{- $server := deepCopy (.Values.server | default dict) -}}
{{- $jobs := dict -}}
{{- with include "tinyimg.redisUrl" . }}{{ $_ := set $jobs "redisUrl" . }}{{ end -}}
{{- $s3 := .Values.storage.s3 -}}
{{- if $s3.bucket -}}
{{- $store := dict "bucket" $s3.bucket "region" $s3.region -}}
{{- with $s3.endpoint }}{{ $_ := set $store "endpoint" . }}{{ end -}}
{{- with $s3.prefix }}{{ $_ := set $store "prefix" . }}{{ end -}}
{{- $_ := set $jobs "resultStore" (dict "s3" $store) -}}
{{- else if include "tinyimg.resultsClaim" . -}}
{{- $_ := set $jobs "resultStore" (dict "dir" "/var/lib/tinyimg/results") -}}
{{- end -}}
{{- if and $jobs.redisUrl (not $jobs.resultStore) (not (dig "jobs" "resultStore" "" $server)) -}}
{{- fail "redis: a shared queue stores its results: set storage.s3.bucket or storage.pvc (claimName or create)" -}}
{{- end -}}
{{- if $jobs -}}
{{- $_ := set $server "jobs" (mergeOverwrite $jobs (dig "jobs" dict $server)) -}}
{{- end -}}
{{- if $server }}{{ toJson $server }}{{ end -}}
{{- end -}}

{{/* The router's --result-store: the S3 URL of storage.s3, or the mounted results directory. */}}
{{- define "tinyimg.router.resultStore" -}}
{{- $s3 := .Values.storage.s3 -}}
{{- if $s3.bucket -}}
{{- $query := list (printf "region=%s" $s3.region) -}}
{{- with $s3.endpoint }}{{ $query = append $query (printf "endpoint=%s" .) }}{{ end -}}
{{- printf "s3://%s/%s?%s" $s3.bucket $s3.prefix (join "&" $query) -}}
{{- else if include "tinyimg.resultsClaim" . -}}
/var/lib/tinyimg/results
{{- end -}}
{{- end -}}
