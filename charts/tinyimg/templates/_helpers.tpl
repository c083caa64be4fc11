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
{{- define "tinyimg.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}
