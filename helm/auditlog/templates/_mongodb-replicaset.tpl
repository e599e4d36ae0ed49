{{/*
One MongoDB replica set: a headless Service (publishNotReadyAddresses, so members resolve each
other while they start and before the set is initiated), a StatefulSet and a PDB.
Called with (dict "ctx" $ "name" <sts> "rsName" <replSet> "component" configsvr|shard
"role" --configsvr|--shardsvr "replicas" n "section" <values section>).
Nothing here initiates the set or assumes pod-0 is the primary: `auditlog-ops cluster bootstrap`
does that, idempotently, with every member.
*/}}
{{- define "auditlog.mongod.replicaset" -}}
{{- $ctx := .ctx -}}
{{- $s := .section -}}
{{- $sel := dict "ctx" $ctx "component" .component "replicaSet" .rsName -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}-hl
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "auditlog.labels" $sel | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  publishNotReadyAddresses: true
  ports:
    - name: mongodb
      port: 27017
      targetPort: mongodb
      protocol: TCP
    {{- if $ctx.Values.mongodb.metrics.enabled }}
    - name: metrics
      port: {{ $ctx.Values.mongodb.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
  selector:
    {{- include "auditlog.selectorLabels" $sel | nindent 4 }}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "auditlog.labels" $sel | nindent 4 }}
spec:
  serviceName: {{ .name }}-hl
  replicas: {{ .replicas }}
  # Members start in parallel: none waits for another, bootstrap joins them.
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  selector:
    matchLabels:
      {{- include "auditlog.selectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "auditlog.labels" $sel | nindent 8 }}
      {{- include "auditlog.mongo.podAnnotations" (dict "ctx" $ctx "section" $s) | nindent 6 }}
    spec:
      serviceAccountName: {{ include "auditlog.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $ctx.Values.mongodb.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: 60
      {{- include "auditlog.affinity" (merge (dict "preset" $s.podAntiAffinityPreset "affinity" $s.affinity) $sel) | nindent 6 }}
      {{- include "auditlog.scheduling" $s | nindent 6 }}
      initContainers:
        {{- include "auditlog.mongo.initContainer" $ctx | nindent 8 }}
      containers:
        - name: mongod
          image: {{ include "auditlog.mongoImage" $ctx }}
          imagePullPolicy: {{ $ctx.Values.mongodb.image.pullPolicy }}
          # mongod directly, not the image's entrypoint (which would create users itself).
          command: ["mongod"]
          args:
            - {{ .role }}
            - --replSet={{ .rsName }}
            - --dbpath=/data/db
            {{- include "auditlog.mongo.commonArgs" $ctx | nindent 12 }}
            {{- range $s.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          ports:
            - name: mongodb
              containerPort: 27017
              protocol: TCP
          {{- include "auditlog.mongo.probes" $ctx | nindent 10 }}
          securityContext:
            {{- toYaml $ctx.Values.mongodb.containerSecurityContext | nindent 12 }}
          resources:
            {{- toYaml $s.resources | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /data/db
            {{- include "auditlog.mongo.volumeMounts" $ctx | nindent 12 }}
        {{- include "auditlog.mongo.exporter" (dict "ctx" $ctx "direct" true) | nindent 8 }}
      volumes:
        {{- include "auditlog.mongo.volumes" $ctx | nindent 8 }}
        {{- if not $s.persistence.enabled }}
        - name: data
          emptyDir: {}
        {{- end }}
  {{- if $s.persistence.enabled }}
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Retain
    whenScaled: Retain
  volumeClaimTemplates:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata:
        name: data
        labels:
          {{- include "auditlog.selectorLabels" $sel | nindent 10 }}
      spec:
        {{- include "auditlog.pvcSpec" $s.persistence | nindent 8 }}
  {{- end }}
{{- if $s.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "auditlog.labels" $sel | nindent 4 }}
spec:
  maxUnavailable: {{ $s.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "auditlog.selectorLabels" $sel | nindent 6 }}
{{- end }}
{{- end }}
