{{- /*
The pod pieces every auditlog-ops Job shares (the bootstrap Job, the pre-rollback shard check):
with the chart's MongoDB it authenticates with the keyfile as __system and, with TLS, presents
the client certificate, which auditlog-ops takes as one PEM file that an init container joins.
Each is called with the root context and renders nothing without the chart's MongoDB.
*/}}
{{- define "auditlog.opsJob.initContainers" -}}
{{- if and .Values.mongodb.enabled .Values.mongodb.tls.enabled }}
      initContainers:
        # auditlog-ops takes the client certificate and key as one PEM file.
        - name: prepare-tls
          image: {{ include "auditlog.mongoImage" . }}
          imagePullPolicy: {{ .Values.mongodb.image.pullPolicy }}
          command:
            - /bin/sh
            - -ec
            - |
              umask 077
              cat /etc/mongodb/tls/tls.crt /etc/mongodb/tls/tls.key > /var/run/mongodb/tls.pem
          securityContext:
            {{- toYaml .Values.containerSecurityContext | nindent 12 }}
          resources:
            {{- toYaml .Values.mongodb.initResources | nindent 12 }}
          volumeMounts:
            - name: tls
              mountPath: /etc/mongodb/tls
              readOnly: true
            - name: run
              mountPath: /var/run/mongodb
      {{- end }}
{{- end }}

{{- define "auditlog.opsJob.volumeMounts" -}}
{{- if .Values.mongodb.enabled }}
          volumeMounts:
            - name: auth
              mountPath: /etc/mongodb/auth
              readOnly: true
            {{- if .Values.mongodb.tls.enabled }}
            - name: tls
              mountPath: /etc/mongodb/tls
              readOnly: true
            - name: run
              mountPath: /var/run/mongodb
              readOnly: true
            {{- end }}
          {{- end }}
{{- end }}

{{- define "auditlog.opsJob.volumes" -}}
{{- if .Values.mongodb.enabled }}
      volumes:
        - name: auth
          secret:
            secretName: {{ include "auditlog.mongodb.secretName" . }}
            # Group-readable: the pod's fsGroup owns it, the non-root user can read it.
            defaultMode: 0440
            items:
              - key: mongodb-keyfile
                path: mongodb-keyfile
        {{- if .Values.mongodb.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ include "auditlog.tls.secretName" . }}
            defaultMode: 0440
        - name: run
          emptyDir:
            medium: Memory
            sizeLimit: 1Mi
        {{- end }}
      {{- end }}
{{- end }}

{{- /* mongos, as the ops Jobs reach it: keyfile auth needs no credentials in the URI. */}}
{{- define "auditlog.opsJob.routerUri" -}}
{{- printf "mongodb://%s:%d/%s" (include "auditlog.mongos.host" .) (int .Values.mongodb.mongos.service.port) (ternary "?tls=true&tlsCAFile=/etc/mongodb/tls/ca.crt" "" .Values.mongodb.tls.enabled) }}
{{- end }}
