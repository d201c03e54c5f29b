{{/* The release's name for its objects: "<release>-metrocast", or the release's name when it holds "metrocast". */}}
{{- define "metrocast.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "metrocast.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "metrocast.labels" -}}
{{ include "metrocast.selectorLabels" . }}
app.kubernetes.io/version: {{ include "metrocast.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "metrocast.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "metrocast.image" -}}
{{- $repo := required "image.repository: the registry path of an image built with deploy/Dockerfile, e.g. --set image.repository=registry.example.com/metrocast" .Values.image.repository -}}
{{- printf "%s:%s" $repo (include "metrocast.tag" .) -}}
{{- end -}}

{{- define "metrocast.secretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "metrocast.fullname" .)) -}}
{{- end -}}
