{{/* What the operator reconciles: a Role in its namespace, or part of its ClusterRole. Exactly
the calls tinyimg_operator.applier and kopf make; the only deletions are a canary revision's
Deployment and ConfigMap when its rollout ends and a preload Job of an earlier revision
(ownerReferences collect the rest). */}}
{{- define "tinyimg.operator.rules" -}}
- apiGroups: [tinyimg.io]
  resources: [imagemodels]
  verbs: [get, list, watch, patch]
- apiGroups: [tinyimg.io]
  resources: [imagemodels/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [services, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# cache.preload's loader Job: made, read for status.cache, replaced for a new revision of the weights.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, create, delete]
# A model's pods: watched, their container states make the ImageModel Degraded with the reason
# (tinyimg_operator.pods); the built-in autoscaler also reads their /status (queue depth + in-flight).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# kopf posts its handler results as Events; the operator adds its own.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
