{{/*
The trainer Job's settings, handed to the controller's Kubernetes executor as environment
variables (services/controller/src/config.ts reads them; the executor builds one batch/v1 Job
per cell attempt from them). Values: .Values.trainer and .Values.kueue. Maps and lists (image
pull secrets, node selector, tolerations, affinity, labels, env, volumes) travel as JSON.
*/}}

{{/* The ConfigMap that owns every trainer Job: `helm uninstall` deletes it, and with it the Jobs. */}}
{{- define "transferlab.jobOwnerName" -}}
{{- printf "%s-trainer-jobs" (include "transferlab.fullname" .) }}
{{- end }}
{{- define "transferlab.trainerJobEnv" -}}
{{- $t := .Values.trainer }}
{{- $secret := include "transferlab.s3SecretRef" . | fromJson -}}
- name: TRANSFERLAB_EXECUTOR
  value: kubernetes
- name: TRANSFERLAB_K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: TRANSFERLAB_K8S_INSTANCE
  value: {{ .Release.Name | quote }}
- name: TRANSFERLAB_K8S_TRAINER_IMAGE
  value: {{ include "transferlab.image" (dict "root" . "image" $t.image) | quote }}
- name: TRANSFERLAB_K8S_IMAGE_PULL_POLICY
  value: {{ include "transferlab.imagePullPolicy" (dict "root" . "image" $t.image) | quote }}
{{- with .Values.imagePullSecrets }}
- name: TRANSFERLAB_K8S_IMAGE_PULL_SECRETS
  value: {{ . | toJson | quote }}
{{- end }}
- name: TRANSFERLAB_K8S_SERVICE_ACCOUNT
  value: {{ include "transferlab.trainerServiceAccountName" . | quote }}
- name: TRANSFERLAB_K8S_CONFIG_MAP
  value: {{ include "transferlab.configMapName" . | quote }}
- name: TRANSFERLAB_K8S_S3_SECRET
  value: {{ $secret.name | quote }}
- name: TRANSFERLAB_K8S_S3_ACCESS_KEY_KEY
  value: {{ $secret.accessKey | quote }}
- name: TRANSFERLAB_K8S_S3_SECRET_KEY_KEY
  value: {{ $secret.secretKey | quote }}
- name: TRANSFERLAB_K8S_GPU_RESOURCE
  value: {{ $t.gpu.resourceName | quote }}
- name: TRANSFERLAB_K8S_GPU_COUNT
  value: {{ $t.gpu.count | quote }}
- name: TRANSFERLAB_K8S_CPU
  value: {{ $t.cpu | quote }}
- name: TRANSFERLAB_K8S_MEMORY
  value: {{ $t.memory | quote }}
- name: TRANSFERLAB_K8S_NODE_SELECTOR
  value: {{ $t.nodeSelector | toJson | quote }}
- name: TRANSFERLAB_K8S_TOLERATIONS
  value: {{ $t.tolerations | toJson | quote }}
- name: TRANSFERLAB_K8S_AFFINITY
  value: {{ $t.affinity | toJson | quote }}
{{- with $t.runtimeClassName }}
- name: TRANSFERLAB_K8S_RUNTIME_CLASS_NAME
  value: {{ . | quote }}
{{- end }}
{{- with $t.priorityClassName }}
- name: TRANSFERLAB_K8S_PRIORITY_CLASS_NAME
  value: {{ . | quote }}
{{- end }}
- name: TRANSFERLAB_K8S_ACTIVE_DEADLINE_SECONDS
  value: {{ $t.activeDeadlineSeconds | quote }}
- name: TRANSFERLAB_K8S_TTL_SECONDS_AFTER_FINISHED
  value: {{ $t.ttlSecondsAfterFinished | quote }}
- name: TRANSFERLAB_K8S_TERMINATION_GRACE_PERIOD_SECONDS
  value: {{ $t.terminationGracePeriodSeconds | quote }}
- name: TRANSFERLAB_K8S_PENDING_TIMEOUT_SECONDS
  value: {{ $t.pendingTimeoutSeconds | quote }}
- name: TRANSFERLAB_K8S_QUEUE_TIMEOUT_SECONDS
  value: {{ $t.queueTimeoutSeconds | default 0 | quote }}
- name: TRANSFERLAB_K8S_IMAGE_PULL_ATTEMPTS
  value: {{ $t.imagePullAttempts | default 6 | quote }}
{{- $labels := deepCopy $t.labels }}
{{- with .Values.kueue.queueName }}
{{- $_ := set $labels "kueue.x-k8s.io/queue-name" . }}
{{- end }}
- name: TRANSFERLAB_K8S_LABELS
  value: {{ $labels | toJson | quote }}
- name: TRANSFERLAB_K8S_ANNOTATIONS
  value: {{ $t.annotations | toJson | quote }}
{{- /* The NATS login first, then the user's variables. */}}
{{- $env := concat (include "transferlab.natsAuthEnv" . | fromYamlArray | default list) ($t.env | default list) }}
- name: TRANSFERLAB_K8S_ENV
  {{- /* sprig's concat of two empty lists is nil, which toJson writes as null. */}}
  value: {{ if $env }}{{ $env | toJson | quote }}{{ else }}"[]"{{ end }}
- name: TRANSFERLAB_K8S_VOLUMES
  value: {{ $t.volumes | toJson | quote }}
- name: TRANSFERLAB_K8S_VOLUME_MOUNTS
  value: {{ $t.volumeMounts | toJson | quote }}
{{- if .Values.kueue.queueName }}
# Kueue admits a Job by unsuspending it; created running, it would start before admission.
- name: TRANSFERLAB_K8S_SUSPEND
  value: "true"
{{- end }}
- name: TRANSFERLAB_K8S_JOB_OWNER
  value: {{ include "transferlab.jobOwnerName" . | quote }}
{{- end }}
