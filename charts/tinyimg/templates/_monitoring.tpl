{{/* Monitors select routers and model servers by the shared labels, in every namespace the
operator watches. */}}
{{- define "tinyimg.monitorSelector" -}}
selector:
  matchLabels:
    app.kubernetes.io/name: tinyimg
  matchExpressions:
    - key: app.kubernetes.io/component
      operator: In
      values: [router, model-server]
{{- end -}}

{{- define "tinyimg.monitorNamespaceSelector" -}}
namespaceSelector:
{{- if .Values.operator.watchAllNamespaces }}
  any: true
{{- else }}
  matchNames: [{{ .Release.Namespace }}]
{{- end }}
{{- end -}}
