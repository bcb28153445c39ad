{{/* The release's full name, used for every object of the chart. */}}
{{- define "fleetserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fleetserve.labels" -}}
app.kubernetes.io/name: fleetserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fleetserve.selectorLabels" -}}
app.kubernetes.io/name: fleetserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fleetserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fleetserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Several replicas coordinate through kopf peering; a single one runs standalone. */}}
{{- define "fleetserve.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}
