{{/* ------------------------------------------------------------------ names */}}

{{- define "auditlog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix. Kept short (<= 40 chars) so that "<fullname>-<component>-<n>" stays a valid
DNS label and StatefulSet pod names leave room for the controller-revision hash label.
*/}}
{{- define "auditlog.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "auditlog.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* ----------------------------------------------------------------- labels */}}

{{/* Labels on every object: include with (dict "ctx" $ "component" "service"). */}}
{{- define "auditlog.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "auditlog.chart" $ctx }}
{{ include "auditlog.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: auditlog
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; "replicaSet" (optional) tells the shard/config replica set apart. */}}
{{- define "auditlog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auditlog.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .replicaSet }}
auditlog/replica-set: {{ . }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------------ images */}}

{{- define "auditlog.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository $tag }}
{{- end -}}
{{- end }}

{{- define "auditlog.mongoImage" -}}
{{ printf "%s:%s" .Values.mongodb.image.repository .Values.mongodb.image.tag }}
{{- end }}

{{- define "auditlog.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "auditlog.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- RabbitMQ */}}

{{- define "auditlog.rabbitmq.name" -}}
{{- printf "%s-rabbitmq" (include "auditlog.fullname" .) }}
{{- end }}

{{/* The client Service, which the service's AMQP URL names. */}}
{{- define "auditlog.rabbitmq.host" -}}
{{- printf "%s.%s.svc.%s" (include "auditlog.rabbitmq.name" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "auditlog.rabbitmqImage" -}}
{{ printf "%s:%s" .Values.rabbitmq.image.repository .Values.rabbitmq.image.tag }}
{{- end }}

{{/* --------------------------------------------------------- MongoDB topology */}}

{{- define "auditlog.configsvr.name" -}}
{{- printf "%s-cfg" (include "auditlog.fullname" .) }}
{{- end }}

{{/* Name of shard i's StatefulSet: include with (dict "ctx" $ "index" i). */}}
{{- define "auditlog.shard.name" -}}
{{- printf "%s-shard%d" (include "auditlog.fullname" .ctx) (int .index) }}
{{- end }}

{{- define "auditlog.shard.rsName" -}}
{{- printf "%s%d" .ctx.Values.mongodb.shards.replicaSetNamePrefix (int .index) }}
{{- end }}

{{- define "auditlog.mongos.name" -}}
{{- printf "%s-mongos" (include "auditlog.fullname" .) }}
{{- end }}

{{- define "auditlog.mongos.host" -}}
{{- printf "%s.%s.svc.%s" (include "auditlog.mongos.name" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Comma-separated member list of one replica set:
(dict "ctx" $ "sts" <statefulset name> "replicas" <n>) -> sts-0.sts-hl.ns.svc.domain:27017,...
*/}}
{{- define "auditlog.members" -}}
{{- $ctx := .ctx -}}
{{- $hosts := list -}}
{{- range $i := until (int .replicas) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s-hl.%s.svc.%s:27017" $.sts $i $.sts $ctx.Release.Namespace $ctx.Values.clusterDomain) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end }}

{{/* NAME/host:port,... of the config-server replica set (what --configdb and bootstrap take). */}}
{{- define "auditlog.configsvr.replset" -}}
{{- printf "%s/%s" .Values.mongodb.configsvr.replicaSetName (include "auditlog.members" (dict "ctx" . "sts" (include "auditlog.configsvr.name" .) "replicas" .Values.mongodb.configsvr.replicas)) }}
{{- end }}

{{/* NAME/host:port,... of shard i: (dict "ctx" $ "index" i). */}}
{{- define "auditlog.shard.replset" -}}
{{- printf "%s/%s" (include "auditlog.shard.rsName" .) (include "auditlog.members" (dict "ctx" .ctx "sts" (include "auditlog.shard.name" .) "replicas" .ctx.Values.mongodb.shards.members)) }}
{{- end }}

{{/* ----------------------------------------------------------------- secrets */}}

{{- define "auditlog.mongodb.secretName" -}}
{{- default (printf "%s-mongodb" (include "auditlog.fullname" .)) .Values.mongodb.auth.existingSecret }}
{{- end }}

{{/* The Secret of a component's own MongoDB user; dict "ctx" . "component" "service"|"archiver". */}}
{{- define "auditlog.componentUser.secretName" -}}
{{- $u := get .ctx.Values.mongodb.auth .component -}}
{{- default (printf "%s-mongodb-%s" (include "auditlog.fullname" .ctx) .component) $u.existingSecret }}
{{- end }}

{{- define "auditlog.apiKey.secretName" -}}
{{- default (printf "%s-api-key" (include "auditlog.fullname" .)) .Values.service.apiKey.existingSecret }}
{{- end }}

{{- define "auditlog.apiKey.secretKey" -}}
{{- if .Values.service.apiKey.existingSecret }}{{ .Values.service.apiKey.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{/* The key file of scoped API keys: set when service.apiKeys gives one. */}}
{{- define "auditlog.apiKeys.enabled" -}}
{{- if or .Values.service.apiKeys.file .Values.service.apiKeys.existingSecret }}true{{ end }}
{{- end }}

{{- define "auditlog.apiKeys.secretName" -}}
{{- default (printf "%s-api-keys" (include "auditlog.fullname" .)) .Values.service.apiKeys.existingSecret }}
{{- end }}

{{- define "auditlog.apiKeys.secretKey" -}}
{{- if .Values.service.apiKeys.existingSecret }}{{ .Values.service.apiKeys.existingSecretKey }}{{ else }}keys.toml{{ end }}
{{- end }}

{{/* Where the service's key file is mounted (a directory: Kubernetes updates it in place). */}}
{{- define "auditlog.apiKeys.dir" -}}/etc/auditlog/api-keys{{- end }}

{{/* The port the service answers /metrics on: its own (service.metricsPort) or the API's. */}}
{{- define "auditlog.service.metricsPort" -}}
{{- if kindIs "invalid" .Values.service.metricsPort }}8080{{ else }}{{ int .Values.service.metricsPort }}{{ end }}
{{- end }}

{{- define "auditlog.externalMongodb.secretName" -}}
{{- default (printf "%s-external-mongodb" (include "auditlog.fullname" .)) .Values.externalMongodb.existingSecret }}
{{- end }}

{{- define "auditlog.externalMongodb.secretKey" -}}
{{- if .Values.externalMongodb.existingSecret }}{{ .Values.externalMongodb.existingSecretKey }}{{ else }}mongodb-uri{{ end }}
{{- end }}

{{- define "auditlog.externalAmqp.secretName" -}}
{{- default (printf "%s-amqp" (include "auditlog.fullname" .)) .Values.externalAmqp.existingSecret }}
{{- end }}

{{- define "auditlog.externalAmqp.secretKey" -}}
{{- if .Values.externalAmqp.existingSecret }}{{ .Values.externalAmqp.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/* The Secret and key AUDIT_AMQP_URL comes from: the chart's RabbitMQ, or the external one. */}}
{{- define "auditlog.amqp.secretName" -}}
{{- if .Values.rabbitmq.enabled }}{{ include "auditlog.rabbitmq.secretName" . }}{{ else }}{{ include "auditlog.externalAmqp.secretName" . }}{{ end }}
{{- end }}

{{- define "auditlog.amqp.secretKey" -}}
{{- if .Values.rabbitmq.enabled }}url{{ else }}{{ include "auditlog.externalAmqp.secretKey" . }}{{ end }}
{{- end }}

{{- define "auditlog.rabbitmq.secretName" -}}
{{- default (printf "%s-rabbitmq" (include "auditlog.fullname" .)) .Values.rabbitmq.auth.existingSecret }}
{{- end }}

{{- define "auditlog.tls.secretName" -}}
{{- default (printf "%s-mongodb-tls" (include "auditlog.fullname" .)) .Values.mongodb.tls.existingSecret }}
{{- end }}

{{- define "auditlog.archiver.s3SecretName" -}}
{{- default (printf "%s-archiver-s3" (include "auditlog.fullname" .)) .Values.archiver.s3.existingSecret }}
{{- end }}

{{- define "auditlog.archiver.s3Enabled" -}}
{{- if or .Values.archiver.s3.existingSecret .Values.archiver.s3.accessKeyId }}true{{ end }}
{{- end }}

{{/* ------------------------------------------------------------ application env */}}

{{/* Archive URL: the value, or file://<mountPath> on the PVC. */}}
{{- define "auditlog.archiver.url" -}}
{{- default (printf "file://%s" .Values.archiver.persistence.mountPath) .Values.archiver.url }}
{{- end }}

{{- define "auditlog.archiver.usesFile" -}}
{{- if hasPrefix "file://" (include "auditlog.archiver.url" .) }}true{{ end }}
{{- end }}

{{/*
Where the archive is and how to reach it — AUDIT_ARCHIVE_URL, S3 credentials from their Secret,
the AUDIT_S3_* settings that are set, HADOOP_CONF_DIR — for the archiver, which writes it, and
the service, which reads it for find. One definition, so both always point at the same place.
*/}}
{{- define "auditlog.archiveStoreEnv" -}}
{{- $a := .Values.archiver -}}
- name: AUDIT_ARCHIVE_URL
  value: {{ include "auditlog.archiver.url" . | quote }}
{{- if include "auditlog.archiver.s3Enabled" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "auditlog.archiver.s3SecretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "auditlog.archiver.s3SecretName" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- /* The binaries' own variables: they win over AWS_* and their built-in defaults. */}}
{{- with $a.s3.region }}
- name: AUDIT_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $a.s3.endpoint }}
- name: AUDIT_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- $allowHttp := $a.s3.allowHttp }}
{{- if kindIs "invalid" $allowHttp }}{{ $allowHttp = hasPrefix "http://" $a.s3.endpoint }}{{ end }}
{{- if or $allowHttp $a.s3.endpoint }}
- name: AUDIT_S3_ALLOW_HTTP
  value: {{ $allowHttp | quote }}
{{- end }}
{{- if $a.hdfs.configMap }}
- name: HADOOP_CONF_DIR
  value: /etc/hadoop/conf
{{- end }}
{{- end }}

{{/*
Whether the service reads the archive for find: the archiver is on, service.archiveFind is on,
and every replica can read the archive's storage — s3:// or hdfs://, or a file:// archive on a
PVC shared ReadWriteMany (a ReadWriteOnce volume is the archiver's alone).
*/}}
{{- define "auditlog.service.readsArchive" -}}
{{- $a := .Values.archiver -}}
{{- if and $a.enabled .Values.service.archiveFind.enabled -}}
{{- if not (include "auditlog.archiver.usesFile" .) -}}true
{{- else if and $a.persistence.enabled (has "ReadWriteMany" $a.persistence.accessModes) -}}true
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Environment giving MONGODB_URI to the service or the archiver (dict "ctx" . "component"
"service"|"archiver"): the mongos Service with that component's own user from its Secret
(least privilege; Kubernetes expands $(VAR) of earlier entries), or the external URI from its
Secret.
*/}}
{{- define "auditlog.mongodbEnv" -}}
{{- $secret := include "auditlog.componentUser.secretName" . -}}
{{- with .ctx }}
{{- if .Values.mongodb.enabled }}
- name: MONGODB_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: username
- name: MONGODB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: password
- name: MONGODB_URI
  value: {{ printf "mongodb://$(MONGODB_USERNAME):$(MONGODB_PASSWORD)@%s:%d/?authSource=admin%s" (include "auditlog.mongos.host" .) (int .Values.mongodb.mongos.service.port) (include "auditlog.tls.uriOptions" .) | quote }}
{{- else }}
- name: MONGODB_URI
  valueFrom:
    secretKeyRef:
      name: {{ include "auditlog.externalMongodb.secretName" . }}
      key: {{ include "auditlog.externalMongodb.secretKey" . }}
{{- end }}
- name: AUDIT_DB_NAME
  value: {{ .Values.database.name | quote }}
- name: AUDIT_COLLECTION
  value: {{ .Values.database.collection | quote }}
- name: RUST_LOG
  value: {{ .Values.logging.level | quote }}
- name: AUDIT_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: AUDIT_RETENTION_DAYS
  value: {{ .Values.retentionDays | quote }}
{{- end }}
{{- end }}

{{- define "auditlog.tls.uriOptions" -}}
{{- if and .Values.mongodb.enabled .Values.mongodb.tls.enabled -}}
&tls=true&tlsCAFile=/etc/mongodb/tls/ca.crt
{{- end -}}
{{- end }}

{{/* --------------------------------------------------- MongoDB pod building blocks */}}

{{/* Paths inside MongoDB pods. */}}
{{- define "auditlog.mongo.keyfilePath" -}}/var/run/mongodb/keyfile{{- end }}
{{- define "auditlog.mongo.tlsPemPath" -}}/var/run/mongodb/tls.pem{{- end }}

{{/*
Init container copying the keyfile (and cert+key as one PEM for TLS) into a memory emptyDir
owned by the mongodb user with mode 0400: mongod refuses a keyfile readable by the group,
which a Secret volume with fsGroup always is.
*/}}
{{- define "auditlog.mongo.initContainer" -}}
- name: prepare-secrets
  image: {{ include "auditlog.mongoImage" . }}
  imagePullPolicy: {{ .Values.mongodb.image.pullPolicy }}
  command:
    - /bin/sh
    - -ec
    - |
      umask 077
      cp /etc/mongodb/auth/mongodb-keyfile {{ include "auditlog.mongo.keyfilePath" . }}
      chmod 0400 {{ include "auditlog.mongo.keyfilePath" . }}
      {{- if .Values.mongodb.tls.enabled }}
      cat /etc/mongodb/tls/tls.crt /etc/mongodb/tls/tls.key > {{ include "auditlog.mongo.tlsPemPath" . }}
      chmod 0400 {{ include "auditlog.mongo.tlsPemPath" . }}
      {{- end }}
  securityContext:
    {{- toYaml .Values.mongodb.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.mongodb.initResources | nindent 4 }}
  volumeMounts:
    - name: auth
      mountPath: /etc/mongodb/auth
      readOnly: true
    - name: run
      mountPath: /var/run/mongodb
    {{- if .Values.mongodb.tls.enabled }}
    - name: tls
      mountPath: /etc/mongodb/tls
      readOnly: true
    {{- end }}
{{- end }}

{{/* Common mongod/mongos arguments: keyfile auth, TLS, all interfaces, port 27017. */}}
{{- define "auditlog.mongo.commonArgs" -}}
- --port=27017
- --bind_ip_all
- --keyFile={{ include "auditlog.mongo.keyfilePath" . }}
{{- if .Values.mongodb.tls.enabled }}
- --tlsMode=requireTLS
- --tlsCertificateKeyFile={{ include "auditlog.mongo.tlsPemPath" . }}
- --tlsCAFile=/etc/mongodb/tls/ca.crt
{{- if .Values.mongodb.tls.allowConnectionsWithoutCertificates }}
- --tlsAllowConnectionsWithoutCertificates
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes shared by MongoDB pods. */}}
{{- define "auditlog.mongo.volumes" -}}
- name: auth
  secret:
    secretName: {{ include "auditlog.mongodb.secretName" . }}
    defaultMode: 0440
    items:
      - key: mongodb-keyfile
        path: mongodb-keyfile
- name: run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.mongodb.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "auditlog.tls.secretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "auditlog.mongo.volumeMounts" -}}
- name: run
  mountPath: /var/run/mongodb
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.mongodb.tls.enabled }}
- name: tls
  mountPath: /etc/mongodb/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Light probes: a TCP connect, no mongosh. */}}
{{- define "auditlog.mongo.probes" -}}
startupProbe:
  tcpSocket:
    port: mongodb
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  tcpSocket:
    port: mongodb
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
readinessProbe:
  tcpSocket:
    port: mongodb
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}

{{/*
mongodb_exporter sidecar: (dict "ctx" $ "direct" true|false). "direct" connects to the local
member only (mongod); false for mongos.
*/}}
{{- define "auditlog.mongo.exporter" -}}
{{- $ctx := .ctx -}}
{{- if $ctx.Values.mongodb.metrics.enabled }}
- name: metrics
  image: {{ printf "%s:%s" $ctx.Values.mongodb.metrics.image.repository $ctx.Values.mongodb.metrics.image.tag }}
  imagePullPolicy: {{ $ctx.Values.mongodb.metrics.image.pullPolicy }}
  args:
    - --web.listen-address=:{{ $ctx.Values.mongodb.metrics.port }}
    {{- range $ctx.Values.mongodb.metrics.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: MONGODB_USERNAME
      valueFrom:
        secretKeyRef:
          name: {{ include "auditlog.mongodb.secretName" $ctx }}
          key: mongodb-root-username
    - name: MONGODB_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ include "auditlog.mongodb.secretName" $ctx }}
          key: mongodb-root-password
    - name: MONGODB_URI
      value: {{ printf "mongodb://$(MONGODB_USERNAME):$(MONGODB_PASSWORD)@localhost:27017/admin?authSource=admin%s%s" (ternary "&directConnection=true" "" .direct) (ternary "&tls=true&tlsCAFile=/etc/mongodb/tls/ca.crt&tlsAllowInvalidHostnames=true" "" $ctx.Values.mongodb.tls.enabled) | quote }}
  ports:
    - name: metrics
      containerPort: {{ $ctx.Values.mongodb.metrics.port }}
      protocol: TCP
  livenessProbe:
    tcpSocket:
      port: metrics
    periodSeconds: 30
  securityContext:
    {{- toYaml $ctx.Values.mongodb.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $ctx.Values.mongodb.metrics.resources | nindent 4 }}
  {{- if $ctx.Values.mongodb.tls.enabled }}
  volumeMounts:
    - name: tls
      mountPath: /etc/mongodb/tls
      readOnly: true
  {{- end }}
{{- end }}
{{- end }}

{{/*
Affinity: the explicit value, or the anti-affinity preset between pods with the given selector
labels: (dict "ctx" $ "component" c "replicaSet" rs "preset" p "affinity" a).
*/}}
{{- define "auditlog.affinity" -}}
{{- if .affinity }}
affinity:
  {{- toYaml .affinity | nindent 2 }}
{{- else if eq .preset "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "auditlog.selectorLabels" . | nindent 14 }}
{{- else if eq .preset "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "auditlog.selectorLabels" . | nindent 12 }}
{{- end }}
{{- end }}

{{/* nodeSelector, tolerations, topology spread, priority class of a section. */}}
{{- define "auditlog.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* PersistentVolumeClaim spec body from a persistence section. */}}
{{- define "auditlog.pvcSpec" -}}
accessModes:
  {{- toYaml .accessModes | nindent 2 }}
{{- if .storageClass }}
{{- if eq "-" .storageClass }}
storageClassName: ""
{{- else }}
storageClassName: {{ .storageClass | quote }}
{{- end }}
{{- end }}
resources:
  requests:
    storage: {{ .size | quote }}
{{- end }}

{{/*
terminationGracePeriodSeconds of the service's pods: every wait of its shutdown
(service/src/server.rs), one after the other, plus a margin — past it Kubernetes kills the
process, and what it was writing is written again only if a producer or RabbitMQ sends it again.
- direct mode: the open requests (AUDIT_SHUTDOWN_GRACE_SECS), then the writes still queued, each
  retried until AUDIT_WRITE_DEADLINE_SECS after it was queued, the last attempt waiting up to the
  driver's server selection (5 s);
- queue mode: the open requests, the drain's last writes, the writer's last writes: the grace
  each;
- then 15 s: closing the RabbitMQ link (up to 4 s), the metrics listener (1 s), the replica's
  last record and the MongoDB client.
*/}}
{{- define "auditlog.service.terminationGracePeriodSeconds" -}}
{{- $s := .Values.service -}}
{{- $grace := int64 $s.shutdownGraceSecs -}}
{{- if .Values.queue.enabled -}}
{{- add (mul 3 $grace) 15 -}}
{{- else -}}
{{- add $grace (int64 $s.writeDeadlineSecs) 5 15 -}}
{{- end -}}
{{- end }}

{{/* ------------------------------------------------------------- value checks */}}
{{- define "auditlog.validate" -}}
{{- if .Values.mongodb.enabled }}
{{- if and .Values.mongodb.tls.enabled (not .Values.mongodb.tls.existingSecret) (not .Values.mongodb.tls.certManager.enabled) }}
{{- fail "mongodb.tls.enabled needs mongodb.tls.existingSecret or mongodb.tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.mongodb.tls.certManager.enabled (not .Values.mongodb.tls.existingSecret) (not .Values.mongodb.tls.certManager.issuerRef.name) }}
{{- fail "mongodb.tls.certManager.enabled needs mongodb.tls.certManager.issuerRef.name" }}
{{- end }}
{{- /* Refuse to shrink the cluster: a removed shard's data would become unreachable. */}}
{{- $next := include "auditlog.shard.name" (dict "ctx" . "index" (int .Values.mongodb.shards.count)) }}
{{- if lookup "apps/v1" "StatefulSet" .Release.Namespace $next }}
{{- fail (printf "StatefulSet %s exists: decreasing mongodb.shards.count is not supported (drain the shard with removeShard first, then delete it by hand)" $next) }}
{{- end }}
{{- else }}
{{- if and (not .Values.externalMongodb.uri) (not .Values.externalMongodb.existingSecret) }}
{{- fail "mongodb.enabled=false needs externalMongodb.uri or externalMongodb.existingSecret" }}
{{- end }}
{{- end }}
{{- if and .Values.queue.enabled (not .Values.rabbitmq.enabled) (not .Values.externalAmqp.url) (not .Values.externalAmqp.existingSecret) }}
{{- fail "queue.enabled=true needs externalAmqp.url or externalAmqp.existingSecret (a Secret holding the amqp:// URL of RabbitMQ), or rabbitmq.enabled=true (RabbitMQ run by this chart)" }}
{{- end }}
{{- if .Values.rabbitmq.enabled }}
{{- /* One URL reaches the service: with both, which RabbitMQ holds the queue would be a guess. */}}
{{- if or .Values.externalAmqp.url .Values.externalAmqp.existingSecret }}
{{- fail "rabbitmq.enabled=true and externalAmqp.url/externalAmqp.existingSecret are both set: the service connects to one RabbitMQ only. Unset externalAmqp.* to use the chart's RabbitMQ, or set rabbitmq.enabled=false to use your own" }}
{{- end }}
{{- $mem := toString ((.Values.rabbitmq.resources.limits | default dict).memory | default "") }}
{{- if not (regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $mem) }}
{{- fail (printf "rabbitmq.resources.limits.memory %q: give an integer with an optional unit (2Gi, 2048Mi, 2G): RabbitMQ reads it as its total memory, which its memory alarm is a share of" $mem) }}
{{- end }}
{{- end }}
{{- /* terminationGracePeriodSeconds is derived from these; one set behind the chart's back
would make it too short. */}}
{{- range .Values.service.extraEnv }}
{{- $owned := dict "AUDIT_SHUTDOWN_GRACE_SECS" "service.shutdownGraceSecs" "AUDIT_WRITE_DEADLINE_SECS" "service.writeDeadlineSecs" "AUDIT_INGEST_MODE" "queue.enabled" }}
{{- if hasKey $owned (toString .name) }}
{{- fail (printf "service.extraEnv sets %s: set %s instead (the pods' terminationGracePeriodSeconds is derived from it)" .name (get $owned (toString .name))) }}
{{- end }}
{{- end }}
{{- $a := .Values.archiver }}
{{- if and $a.enabled $a.verify.enabled }}
{{- if not $a.signing.publicKeys }}
{{- fail "archiver.verify.enabled needs archiver.signing.publicKeys (name: PEM): the public keys verify checks the digests' signatures with (print the archive's with `auditlog-archiver keys public`)" }}
{{- end }}
{{- if and (include "auditlog.archiver.usesFile" .) (not $a.persistence.enabled) }}
{{- fail "archiver.verify.enabled with a file:// archive needs archiver.persistence.enabled: without the PVC the archive is an emptyDir of the archiver's pod, which the verify Job cannot read" }}
{{- end }}
{{- end }}
{{- if and (not .Values.service.apiKey.enabled) (not (include "auditlog.apiKeys.enabled" .)) }}
{{- fail "service.apiKey.enabled=false needs service.apiKeys.file or service.apiKeys.existingSecret: the service needs at least one API key" }}
{{- end }}
{{- /* With /metrics on the API port, an Ingress route covering it would publish the metrics. */}}
{{- if and .Values.service.ingress.enabled (kindIs "invalid" .Values.service.metricsPort) }}
{{- range .Values.service.ingress.hosts }}
{{- range .paths }}
{{- $p := trimSuffix "/" .path }}
{{- if or (eq $p "/metrics") (and (ne .pathType "Exact") (hasPrefix (printf "%s/" $p) "/metrics/")) }}
{{- fail (printf "service.ingress path %q would expose /metrics, which is on the API port (service.metricsPort=null): set service.metricsPort, or route only /v1, /docs and /openapi.json" .path) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations of MongoDB pods: the section's, plus scrape hints when metrics are on. */}}
{{- define "auditlog.mongo.podAnnotations" -}}
{{- $ann := merge (dict) (.section.podAnnotations | default dict) -}}
{{- if .ctx.Values.mongodb.metrics.enabled -}}
{{- $_ := set $ann "prometheus.io/scrape" "true" -}}
{{- $_ := set $ann "prometheus.io/port" (toString .ctx.Values.mongodb.metrics.port) -}}
{{- end -}}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- archiver pod */}}
{{- define "auditlog.archiver.claimName" -}}
{{- default (printf "%s-archiver" (include "auditlog.fullname" .)) .Values.archiver.persistence.existingClaim }}
{{- end }}

{{/* Pod spec of the archiver: (dict "ctx" $ "cmd" "run"|"once" "restartPolicy" p). */}}
{{- define "auditlog.archiver.podSpec" -}}
{{- $ctx := .ctx -}}
{{- $a := $ctx.Values.archiver -}}
serviceAccountName: {{ include "auditlog.serviceAccountName" $ctx }}
automountServiceAccountToken: false
{{- with .restartPolicy }}
restartPolicy: {{ . }}
{{- end }}
{{- with $ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: 120
{{- with $a.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "auditlog.scheduling" $a }}
containers:
  - name: archiver
    image: {{ include "auditlog.image" $ctx }}
    imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
    command: ["/usr/local/bin/auditlog-archiver"]
    args: [{{ .cmd | quote }}]
    env:
      {{- include "auditlog.mongodbEnv" (dict "ctx" $ctx "component" "archiver") | nindent 6 }}
      # Both modes: `run` fires on it, and the TTL guard of `run` and `once` computes the next
      # run from it. The archiver's cron has a seconds field; the chart's value has not.
      - name: AUDIT_ARCHIVE_SCHEDULE
        value: {{ printf "0 %s" $a.schedule | quote }}
      {{- if eq .cmd "run" }}
      - name: AUDIT_ARCHIVER_LISTEN_ADDR
        value: {{ printf "0.0.0.0:%d" (int $a.metricsPort) | quote }}
      {{- end }}
      - name: AUDIT_ARCHIVE_AFTER
        value: {{ $a.after | quote }}
      - name: AUDIT_ARCHIVE_WINDOW
        value: {{ $a.window | quote }}
      - name: AUDIT_ARCHIVE_COMPRESSION
        value: {{ $a.compression | quote }}
      {{- with $a.grace }}
      - name: AUDIT_ARCHIVE_GRACE
        value: {{ . | quote }}
      {{- end }}
      {{- with $a.safetyMargin }}
      - name: AUDIT_ARCHIVE_SAFETY_MARGIN
        value: {{ . | quote }}
      {{- end }}
      {{- include "auditlog.archiveStoreEnv" $ctx | nindent 6 }}
      {{- if $a.signing.enabled }}
      - name: AUDIT_ARCHIVE_SIGNING_KEY_FILE
        value: {{ include "auditlog.archiveSigning.keyFile" $ctx | quote }}
      {{- end }}
      {{- with $a.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if eq .cmd "run" }}
    ports:
      - name: http
        containerPort: {{ $a.metricsPort }}
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /healthz
        port: http
      periodSeconds: 20
      timeoutSeconds: 5
      failureThreshold: 3
    readinessProbe:
      httpGet:
        path: /healthz
        port: http
      periodSeconds: 10
      timeoutSeconds: 5
    {{- end }}
    securityContext:
      {{- toYaml $ctx.Values.containerSecurityContext | nindent 6 }}
    resources:
      {{- toYaml $a.resources | nindent 6 }}
    volumeMounts:
      {{- include "auditlog.archiver.storeVolumeMounts" (dict "ctx" $ctx) | nindent 6 }}
      {{- if $a.signing.enabled }}
      - name: signing
        mountPath: {{ include "auditlog.archiveSigning.dir" $ctx }}
        readOnly: true
      {{- end }}
volumes:
  {{- include "auditlog.archiver.storeVolumes" (dict "ctx" $ctx) | nindent 2 }}
  {{- if $a.signing.enabled }}
  - name: signing
    secret:
      secretName: {{ include "auditlog.archiveSigning.secretName" $ctx }}
      defaultMode: 0440
      items:
        - key: {{ include "auditlog.archiveSigning.secretKey" $ctx }}
          path: {{ include "auditlog.archiveSigning.secretKey" $ctx }}
  {{- end }}
{{- end }}

{{/*
What the archiver's pods need to reach the archive and MongoDB: /tmp, the archive's PVC
(file://), the Hadoop client configuration, MongoDB's CA. (dict "ctx" $ "readOnly" true) for
the verify Job, which reads the archive and must never write it.
*/}}
{{- define "auditlog.archiver.storeVolumeMounts" -}}
{{- $ctx := .ctx -}}
{{- $a := $ctx.Values.archiver -}}
- name: tmp
  mountPath: /tmp
{{- if include "auditlog.archiver.usesFile" $ctx }}
- name: archive
  mountPath: {{ $a.persistence.mountPath }}
  {{- if .readOnly }}
  readOnly: true
  {{- end }}
{{- end }}
{{- if $a.hdfs.configMap }}
- name: hadoop-conf
  mountPath: /etc/hadoop/conf
  readOnly: true
{{- end }}
{{- if and $ctx.Values.mongodb.enabled $ctx.Values.mongodb.tls.enabled }}
- name: tls
  mountPath: /etc/mongodb/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "auditlog.archiver.storeVolumes" -}}
{{- $ctx := .ctx -}}
{{- $a := $ctx.Values.archiver -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if include "auditlog.archiver.usesFile" $ctx }}
- name: archive
  {{- if $a.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "auditlog.archiver.claimName" $ctx }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- if $a.hdfs.configMap }}
- name: hadoop-conf
  configMap:
    name: {{ $a.hdfs.configMap }}
{{- end }}
{{- if and $ctx.Values.mongodb.enabled $ctx.Values.mongodb.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "auditlog.tls.secretName" $ctx }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{/* ------------------------------------------------------- the archive's integrity */}}

{{- define "auditlog.archiveSigning.secretName" -}}
{{- default (printf "%s-archive-signing" (include "auditlog.fullname" .)) .Values.archiver.signing.existingSecret }}
{{- end }}

{{- define "auditlog.archiveSigning.secretKey" -}}
{{- if .Values.archiver.signing.existingSecret }}{{ .Values.archiver.signing.existingSecretKey }}{{ else }}archive-signing.key{{ end }}
{{- end }}

{{- define "auditlog.archiveSigning.dir" -}}/etc/auditlog/signing{{- end }}

{{/* AUDIT_ARCHIVE_SIGNING_KEY_FILE: the private key as the archiver's pods see it. */}}
{{- define "auditlog.archiveSigning.keyFile" -}}
{{- printf "%s/%s" (include "auditlog.archiveSigning.dir" .) (include "auditlog.archiveSigning.secretKey" .) }}
{{- end }}

{{- define "auditlog.archivePublicKeys.name" -}}
{{- printf "%s-archive-public-keys" (include "auditlog.fullname" .) }}
{{- end }}

{{- define "auditlog.archivePublicKeys.dir" -}}/etc/auditlog/public-keys{{- end }}

{{/* The verify CronJob: a CronJob's name has at most 52 characters (its Jobs append 11). */}}
{{- define "auditlog.archiveVerify.name" -}}
{{- printf "%s-archive-verify" (include "auditlog.fullname" . | trunc 37 | trimSuffix "-") }}
{{- end }}
