{{- /*
Whether a Prometheus Operator kind can be created here. `helm install` on a cluster without the
monitoring.coreos.com CRDs would otherwise fail as a whole ("no matches for kind ServiceMonitor"),
for objects that are an extra: they are skipped instead and NOTES.txt says so. Offline
(`helm template`), pass `--api-versions monitoring.coreos.com/v1/ServiceMonitor` (and
`.../PrometheusRule`) to render them.
Call with (dict "ctx" $ "kind" "ServiceMonitor"); prints "true" or nothing.
*/}}
{{- define "auditlog.monitoring.canCreate" -}}
{{- if .ctx.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) }}true{{ end }}
{{- end }}

{{- /* The monitoring objects asked for in the values but skipped for want of their CRD. */}}
{{- define "auditlog.monitoring.skipped" -}}
{{- $m := .Values.monitoring }}
{{- $skipped := list }}
{{- if and $m.serviceMonitor.enabled (not (include "auditlog.monitoring.canCreate" (dict "ctx" . "kind" "ServiceMonitor"))) }}
{{- $skipped = append $skipped "ServiceMonitor" }}
{{- end }}
{{- if and $m.prometheusRule.enabled (not (include "auditlog.monitoring.canCreate" (dict "ctx" . "kind" "PrometheusRule"))) }}
{{- $skipped = append $skipped "PrometheusRule" }}
{{- end }}
{{- join ", " $skipped }}
{{- end }}
