{{/*
Names and labels shared by every template. Object names are capped at 63 characters
(DNS labels) with the suffixes they get below included.
*/}}

{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already holds the chart name. */}}
{{- define "strata.fullname" -}}
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

{{- define "strata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of everything the chart renders. */}}
{{- define "strata.labels" -}}
helm.sh/chart: {{ include "strata.chart" . }}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strata
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's pods. */}}
{{- define "strata.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "strata.operator.name" -}}
{{- printf "%s-operator" (include "strata.fullname" .) }}
{{- end }}

{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "strata.operator.name" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image holding `strata`: repository:tag, the tag defaulting to the appVersion. */}}
{{- define "strata.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The StrataCluster's name; its broker Service is <name>-broker. */}}
{{- define "strata.clusterName" -}}
{{- default (include "strata.fullname" .) .Values.cluster.name | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The cluster's client (and admin) URL inside Kubernetes. */}}
{{- define "strata.serviceUrl" -}}
{{- $scheme := ternary "https" "http" (not (empty ((.Values.cluster.security).tls))) }}
{{- printf "%s://%s-broker.%s.svc:6650" $scheme (include "strata.clusterName" .) .Release.Namespace }}
{{- end }}

{{/* The Secret holding the cluster's TLS certificate (spec.security.tls). */}}
{{- define "strata.tlsSecret" -}}
{{- $tls := (.Values.cluster.security).tls }}
{{- default (printf "%s-tls" (include "strata.clusterName" .)) $tls.secretName }}
{{- end }}

{{/* "true" when the Prometheus Operator's monitors are served. */}}
{{- define "strata.monitorsServed" -}}
{{- if and (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PodMonitor") }}true{{ end }}
{{- end }}

{{/* Annotations for Prometheus' annotation-based discovery, when no monitors are served. */}}
{{- define "strata.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- if .https }}
prometheus.io/scheme: https
{{- end }}
{{- end }}

{{/* "true" when the cluster's HTTP ports serve TLS (cluster.security.tls.http). */}}
{{- define "strata.httpTls" -}}
{{- if (((.Values.cluster.security).tls).http) }}true{{ end }}
{{- end }}

{{/* What the test pod needs to reach a secured cluster: with auth on, the admin token of
the operator's Secret (STRATA_TOKEN); with TLS on, the CA of the TLS Secret. */}}
{{- define "strata.testClient" -}}
{{- $auth := ((.Values.cluster.security).auth).enabled }}
{{- $tls := (.Values.cluster.security).tls }}
{{- if or $auth $tls }}
env:
  {{- if $auth }}
  - name: STRATA_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ include "strata.clusterName" . }}-auth
        key: admin.token
  {{- end }}
  {{- if $tls }}
  - name: STRATA_TLS_CA_FILE
    value: /etc/strata-tls/ca.crt
  {{- end }}
{{- end }}
{{- if $tls }}
volumeMounts:
  - name: tls
    mountPath: /etc/strata-tls
    readOnly: true
{{- end }}
{{- end }}
