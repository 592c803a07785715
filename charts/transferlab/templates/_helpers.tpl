{{/*
Names, labels, images and the settings every transferlab pod shares.
*/}}

{{- define "transferlab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: fullnameOverride, else the release name when it already holds the chart
name, else "<release>-<chart>". Component names append "-<component>", so keep room for them.
*/}}
{{- define "transferlab.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "transferlab.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "transferlab.labels" -}}
helm.sh/chart: {{ include "transferlab.chart" . }}
app.kubernetes.io/name: {{ include "transferlab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: transferlab
{{- end }}

{{/* Labels of one component's objects: (dict "root" $ "component" "controller"). */}}
{{- define "transferlab.componentLabels" -}}
{{ include "transferlab.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "controller"). */}}
{{- define "transferlab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "transferlab.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* "<fullname>-<component>": (dict "root" $ "component" "controller"). */}}
{{- define "transferlab.componentName" -}}
{{- printf "%s-%s" (include "transferlab.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "transferlab.configMapName" -}}
{{- printf "%s-config" (include "transferlab.fullname" .) }}
{{- end }}

{{- define "transferlab.controllerServiceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "transferlab.componentName" (dict "root" . "component" "controller")) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "transferlab.trainerServiceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create }}
{{- default (include "transferlab.componentName" (dict "root" . "component" "trainer")) .Values.trainer.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.trainer.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference: (dict "root" $ "image" .Values.controller.image).
"<image.registry>/<repository>:<tag>"; the tag defaults to image.tag, then the chart's appVersion.
*/}}
{{- define "transferlab.image" -}}
{{- $registry := .root.Values.image.registry | trimSuffix "/" }}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "transferlab.imagePullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/* A subchart's full name, computed the way the NATS and MinIO charts compute it. */}}
{{- define "transferlab.subchartFullname" -}}
{{- if .values.fullnameOverride }}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .chart .values.nameOverride }}
{{- if contains $name .root.Release.Name }}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The NATS servers the services and trainers use; fails when none is configured. */}}
{{- define "transferlab.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s:4222" (include "transferlab.subchartFullname" (dict "root" . "chart" "nats" "values" .Values.nats)) }}
{{- else if .Values.externalNats.url }}
{{- .Values.externalNats.url }}
{{- else }}
{{- fail "transferlab needs NATS with JetStream: set nats.enabled=true (bundled) or externalNats.url (e.g. nats://nats.example:4222)" }}
{{- end }}
{{- end }}

{{/* The S3 endpoint; fails when none is configured. */}}
{{- define "transferlab.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "transferlab.subchartFullname" (dict "root" . "chart" "minio" "values" .Values.minio)) }}
{{- else if .Values.externalS3.endpoint }}
{{- .Values.externalS3.endpoint }}
{{- else }}
{{- fail "transferlab needs an S3 object store: set minio.enabled=true (bundled) or externalS3.endpoint (e.g. https://s3.example:443)" }}
{{- end }}
{{- end }}

{{/*
Where the S3 keys come from, as a dict: name (the Secret), accessKey and secretKey (its keys).
Bundled MinIO: the MinIO chart's own Secret (minio.existingSecret, else the one it generates).
External: externalS3.existingSecret, else the Secret this chart makes from externalS3.accessKey
and externalS3.secretKey. Keys are never put in the ConfigMap.
*/}}
{{- define "transferlab.s3SecretRef" -}}
{{- /* Without an endpoint, that is the error to show first, whichever template asks. */}}
{{- $_ := include "transferlab.s3Endpoint" . }}
{{- if .Values.minio.enabled }}
{{- $name := .Values.minio.existingSecret | default (include "transferlab.subchartFullname" (dict "root" . "chart" "minio" "values" .Values.minio)) }}
{{- dict "name" $name "accessKey" "rootUser" "secretKey" "rootPassword" | toJson }}
{{- else if .Values.externalS3.existingSecret }}
{{- dict "name" .Values.externalS3.existingSecret "accessKey" .Values.externalS3.accessKeyKey "secretKey" .Values.externalS3.secretKeyKey | toJson }}
{{- else if and .Values.externalS3.accessKey .Values.externalS3.secretKey }}
{{- dict "name" (printf "%s-s3" (include "transferlab.fullname" .)) "accessKey" "accessKey" "secretKey" "secretKey" | toJson }}
{{- else }}
{{- fail "the S3 keys must come from a Secret: set externalS3.existingSecret (keys externalS3.accessKeyKey and externalS3.secretKeyKey), or both externalS3.accessKey and externalS3.secretKey for the chart to create one" }}
{{- end }}
{{- end }}

{{/*
The Secret with the user and password the bundled NATS server requires, generated once by
templates/secret.yaml. Its name depends on the release name only, because the NATS subchart
computes it too (through a `$tplYaml` value in values.yaml), where this chart's values are unseen.
*/}}
{{- define "transferlab.natsAuthSecretName" -}}
{{- printf "%s-nats-auth" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Where the NATS login comes from, as a dict (name, user, password: the Secret and its keys), or an
empty dict when the NATS server takes no login (external NATS without externalNats.existingSecret).
*/}}
{{- define "transferlab.natsSecretRef" -}}
{{- $_ := include "transferlab.natsUrl" . }}
{{- if .Values.nats.enabled }}
{{- dict "name" (include "transferlab.natsAuthSecretName" .) "user" "user" "password" "password" | toJson }}
{{- else if .Values.externalNats.existingSecret }}
{{- dict "name" .Values.externalNats.existingSecret "user" .Values.externalNats.userKey "password" .Values.externalNats.passwordKey | toJson }}
{{- else }}
{{- dict | toJson }}
{{- end }}
{{- end }}

{{/* The NATS login as environment variables (none without one): services and trainers alike. */}}
{{- define "transferlab.natsAuthEnv" -}}
{{- $nats := include "transferlab.natsSecretRef" . | fromJson -}}
{{- with $nats.name -}}
- name: TRANSFERLAB_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $nats.user }}
- name: TRANSFERLAB_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $nats.password }}
{{- end }}
{{- end }}

{{/* Environment every service container gets besides the ConfigMap: the S3 keys, the NATS login, the interface, extraEnv. */}}
{{- define "transferlab.commonEnv" -}}
{{- $secret := include "transferlab.s3SecretRef" . | fromJson -}}
- name: TRANSFERLAB_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.accessKey }}
- name: TRANSFERLAB_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.secretKey }}
{{- with include "transferlab.natsAuthEnv" . }}
{{ . }}
{{- end }}
- name: TRANSFERLAB_HOST
  value: "0.0.0.0"
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
One service's Deployment: (dict "root" $ "component" "evaluator" "values" .Values.evaluator
"entry" "services/evaluator/src/main.ts"). The component's own environment comes from the
template "transferlab.<component>.env"; extra volumes from "transferlab.<component>.volumes"
and "transferlab.<component>.volumeMounts" when they exist.
*/}}
{{- define "transferlab.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $name := include "transferlab.componentName" (dict "root" $root "component" .component) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "transferlab.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  replicas: {{ $v.replicas | default 1 }}
  revisionHistoryLimit: 3
  {{- if eq .component "controller" }}
  # One controller at a time: two would both drive the same sweeps.
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "transferlab.selectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "transferlab.componentLabels" (dict "root" $root "component" .component) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- if eq .component "controller" }}
      serviceAccountName: {{ include "transferlab.controllerServiceAccountName" $root }}
      automountServiceAccountToken: true
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds | default 30 }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "transferlab.image" (dict "root" $root "image" $v.image) }}
          imagePullPolicy: {{ include "transferlab.imagePullPolicy" (dict "root" $root "image" $v.image) }}
          args: [{{ .entry | quote }}]
          ports:
            - name: grpc
              containerPort: {{ $v.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- if $root.Values.tls.enabled }}
            - name: health
              containerPort: {{ $root.Values.tls.healthPort }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "transferlab.configMapName" $root }}
          env:
            - name: TRANSFERLAB_PORT
              value: {{ $v.port | quote }}
            {{- include "transferlab.commonEnv" $root | nindent 12 }}
            {{- with include "transferlab.securityEnv" (dict "root" $root "component" .component) }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with include (printf "transferlab.%s.env" .component) $root }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            grpc:
              port: {{ include "transferlab.probePort" (dict "root" $root "values" $v) }}
            {{- toYaml $root.Values.probes.startup | nindent 12 }}
          readinessProbe:
            grpc:
              port: {{ include "transferlab.probePort" (dict "root" $root "values" $v) }}
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          livenessProbe:
            grpc:
              port: {{ include "transferlab.probePort" (dict "root" $root "values" $v) }}
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with include "transferlab.securityVolumeMounts" (dict "root" $root "component" .component) }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with include (printf "transferlab.%s.volumeMounts" .component) $root }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            {{- with $root.Values.tmpVolume.sizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
        {{- with include "transferlab.securityVolumes" (dict "root" $root "component" .component) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with include (printf "transferlab.%s.volumes" .component) $root }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* One service's Service: (dict "root" $ "component" "evaluator" "values" .Values.evaluator). */}}
{{- define "transferlab.service" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "transferlab.componentName" (dict "root" $root "component" .component) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "transferlab.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "transferlab.selectorLabels" (dict "root" $root "component" .component) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- end }}

{{/*
A monitoring switch, (dict "root" $ "enabled" .Values.monitoring.podMonitor.enabled): "true" when
on. `auto` is on when the cluster serves the Prometheus Operator's API (monitoring.coreos.com/v1):
where its CRDs exist, the ServiceMonitor, PodMonitor and dashboards are wanted and can be created.
*/}}
{{- define "transferlab.monitoringOn" -}}
{{- if eq (toString .enabled) "auto" }}
{{- if .root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- else if .enabled }}true
{{- end }}
{{- end }}

{{/*
TLS and the API token (values tls and apiToken). The Secret with ca.crt, tls.crt and tls.key:
tls.existingSecret, else the one templates/secret.yaml generates once. One certificate serves
every service (it names them all) and is also each one's client certificate for mutual TLS.
*/}}
{{- define "transferlab.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "transferlab.fullname" .)) }}
{{- end }}

{{- define "transferlab.apiTokenSecretName" -}}
{{- .Values.apiToken.existingSecret | default (printf "%s-api-token" (include "transferlab.fullname" .)) }}
{{- end }}

{{/* The names the generated certificate holds: each service's Service, short and qualified, localhost, tls.extraDnsNames. */}}
{{- define "transferlab.tlsDnsNames" -}}
{{- $names := list "localhost" }}
{{- range $component := list "controller" "dataset-splitter" "transplanter" "evaluator" }}
{{- $name := include "transferlab.componentName" (dict "root" $ "component" $component) }}
{{- $ns := $.Release.Namespace }}
{{- $names = concat $names (list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns)) }}
{{- end }}
{{- concat $names .Values.tls.extraDnsNames | toJson }}
{{- end }}

{{/*
The TLS and token variables of one pod: (dict "root" $ "component" "controller"), "test" for the
`helm test` pod. Every server serves TLS and a plaintext health-only port for the kubelet's gRPC
probes (which cannot speak TLS); the dataset-splitter, transplanter and evaluator require client
certificates (tls.mutual); the controller requires the API token, and its users need no certificate.
*/}}
{{- define "transferlab.securityEnv" -}}
{{- $root := .root }}
{{- if $root.Values.tls.enabled }}
- name: TRANSFERLAB_TLS_CERT_FILE
  value: /etc/transferlab/tls/tls.crt
- name: TRANSFERLAB_TLS_KEY_FILE
  value: /etc/transferlab/tls/tls.key
- name: TRANSFERLAB_TLS_CA_FILE
  value: /etc/transferlab/tls/ca.crt
{{- if ne .component "test" }}
- name: TRANSFERLAB_HEALTH_PORT
  value: {{ $root.Values.tls.healthPort | quote }}
{{- end }}
{{- if and $root.Values.tls.mutual (has .component (list "dataset-splitter" "transplanter" "evaluator")) }}
- name: TRANSFERLAB_TLS_CLIENT_CA_FILE
  value: /etc/transferlab/tls/ca.crt
{{- end }}
{{- end }}
{{- if and $root.Values.apiToken.enabled (eq .component "controller") }}
- name: TRANSFERLAB_API_TOKEN_FILE
  value: /etc/transferlab/api-token/token
{{- end }}
{{- end }}

{{- define "transferlab.securityVolumeMounts" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: /etc/transferlab/tls
  readOnly: true
{{- end }}
{{- if and .root.Values.apiToken.enabled (eq .component "controller") }}
- name: api-token
  mountPath: /etc/transferlab/api-token
  readOnly: true
{{- end }}
{{- end }}

{{- define "transferlab.securityVolumes" -}}
{{- $root := .root }}
{{- if $root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "transferlab.tlsSecretName" $root }}
    defaultMode: 0440
    items:
      - { key: ca.crt, path: ca.crt }
      - { key: tls.crt, path: tls.crt }
      - { key: tls.key, path: tls.key }
{{- end }}
{{- if and $root.Values.apiToken.enabled (eq .component "controller") }}
- name: api-token
  secret:
    secretName: {{ include "transferlab.apiTokenSecretName" $root }}
    defaultMode: 0440
    items:
      - key: {{ if $root.Values.apiToken.existingSecret }}{{ $root.Values.apiToken.key }}{{ else }}token{{ end }}
        path: token
{{- end }}
{{- end }}

{{/* The port the kubelet's gRPC probes use: the plaintext health port with TLS, else the service's own. */}}
{{- define "transferlab.probePort" -}}
{{- if .root.Values.tls.enabled }}{{ .root.Values.tls.healthPort }}{{ else }}{{ .values.port }}{{ end }}
{{- end }}
