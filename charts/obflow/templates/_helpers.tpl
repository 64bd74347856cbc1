{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "obflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "obflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "obflow.labels" -}}
{{ include "obflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "obflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "obflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set it to an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, as a JSON list (the release's own by default). */}}
{{- define "obflow.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{- define "obflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The operator's --network-policies settings (obflow_operator.network.NetworkPolicySettings), as JSON. */}}
{{- define "obflow.networkPolicySettings" -}}
{{- $np := .Values.networkPolicy -}}
{{- dict
      "operatorNamespace" .Release.Namespace
      "operatorLabels" (include "obflow.selectorLabels" . | fromYaml)
      "metricsFrom" $np.metricsFrom
      "restFrom" $np.restFrom
      "apiServerPorts" $np.apiServer.ports
      "apiServerCidrs" $np.apiServer.cidrs
      "extraEgress" $np.extraEgress
    | toJson -}}
{{- end -}}
