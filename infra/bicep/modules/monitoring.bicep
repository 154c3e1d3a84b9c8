// Log Analytics workspace (AKS container insights, Functions logs), a workspace-based Application
// Insights resource the Functions host and the workers send telemetry to, and an Azure Monitor
// workspace for managed Prometheus: the cluster's metrics land there (aks.bicep), and KEDA scales the
// live component on `sum(speechflow_live_sessions)` read from its query endpoint (k8s/10-live.yaml).
param location string
param tags object
param workspaceName string
param appInsightsName string
param prometheusWorkspaceName string

@description('Days logs are kept in the workspace.')
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
  }
}

resource prometheusWorkspace 'Microsoft.Monitor/accounts@2023-04-03' = {
  name: prometheusWorkspaceName
  location: location
  tags: tags
}

output workspaceId string = workspace.id
output prometheusWorkspaceId string = prometheusWorkspace.id
output prometheusWorkspaceName string = prometheusWorkspace.name
output prometheusQueryEndpoint string = prometheusWorkspace.properties.metrics.prometheusQueryEndpoint
output appInsightsName string = appInsights.name
output appInsightsConnectionString string = appInsights.properties.ConnectionString
