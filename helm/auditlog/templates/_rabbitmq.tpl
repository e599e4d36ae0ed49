{{/* Plugins of the chart's RabbitMQ: peer discovery and metrics, plus rabbitmq.extraPlugins. */}}
{{- define "auditlog.rabbitmq.plugins" -}}
{{- concat (list "rabbitmq_peer_discovery_k8s" "rabbitmq_prometheus") .Values.rabbitmq.extraPlugins | uniq | join "," }}
{{- end }}

{{/* rabbitmq.conf of the chart's RabbitMQ. */}}
{{- define "auditlog.rabbitmq.conf" -}}
{{- $r := .Values.rabbitmq -}}
cluster_formation.peer_discovery_backend = k8s
cluster_formation.target_cluster_size_hint = {{ int $r.replicas }}
# The service declares its queues as quorum queues itself; this covers any other queue.
default_queue_type = quorum
# A queue declared while the cluster is still forming gets fewer members than there are nodes;
# this adds the missing ones (one per node) as nodes join, instead of leaving it short.
quorum_queue.continuous_membership_reconciliation.enabled = true
quorum_queue.continuous_membership_reconciliation.target_group_size = {{ int $r.replicas }}
# Inside a container RabbitMQ would take the host's memory for its own. In bytes: RabbitMQ's
# units (GiB, GB, G) are not Kubernetes' (Gi, G), and "2Gi" would stop it at boot.
total_memory_available_override_value = {{ include "auditlog.rabbitmq.memoryBytes" . }}
{{- if $r.memoryHighWatermark.absolute }}
vm_memory_high_watermark.absolute = {{ $r.memoryHighWatermark.absolute }}
{{- else }}
vm_memory_high_watermark.relative = {{ $r.memoryHighWatermark.relative }}
{{- end }}
disk_free_limit.absolute = {{ $r.diskFreeLimit.absolute }}
listeners.tcp.default = 5672
prometheus.tcp.port = 15692
log.console = true
log.file = false
{{- with $r.extraConfig }}
{{ . }}
{{- end }}
{{- end }}

{{/* rabbitmq.resources.limits.memory in bytes (a Kubernetes quantity, integer with an optional
unit; auditlog.validate refuses other forms). */}}
{{- define "auditlog.rabbitmq.memoryBytes" -}}
{{- $m := toString .Values.rabbitmq.resources.limits.memory }}
{{- $digits := regexFind "^[0-9]+" $m }}
{{- $unit := trimPrefix $digits $m }}
{{- $scale := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- mul (int64 $digits) (int64 (get $scale $unit)) }}
{{- end }}
