// SpeechFlow on Azure: every resource the platform needs, one module per area.
// Deploy into an existing resource group:
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
// Output names are UPPER_SNAKE so that `azd` turns them into environment values, and the ones that
// feed the application are spelled exactly as the Settings environment variables they fill.
targetScope = 'resourceGroup'

@description('Short name of this environment (dev, prod, ...); part of every resource name.')
@minLength(2)
@maxLength(12)
param environmentName string

@description('Region for every resource except Azure OpenAI.')
param location string = resourceGroup().location

@description('Region for Azure OpenAI (gpt-4.1 GlobalStandard is not offered everywhere).')
param openAiLocation string = location

@description('Kubernetes namespace the manifests in k8s/ deploy into.')
param kubernetesNamespace string = 'speechflow'

@description('Service account of the Azure Functions pods (API, router, azure-ai steps, dashboard, migrations).')
param functionsServiceAccount string = 'speechflow-functions'

@description('Service account of the LID and Whisper worker pods.')
param workersServiceAccount string = 'speechflow-workers'

@description('PostgreSQL administrator login.')
param postgresAdminLogin string = 'speechflow'

@description('PostgreSQL administrator password; it is written to Key Vault as part of database-url.')
@secure()
param postgresAdminPassword string

@description('Origins allowed to PUT audio straight into Blob Storage with an upload URL (browser uploads).')
param corsAllowedOrigins array

@description('Days an uploaded audio file is kept before the lifecycle rule deletes it.')
param audioRetentionDays int = 30

@description('Days results are kept; they move to the cool tier after 30 days.')
param resultsRetentionDays int = 365

@description('VM size of the system node pool (seed 9.1).')
param systemVmSize string = 'Standard_DS2_v2'

@description('VM size of the default node pool: backend services and the LID worker (seed 9.1).')
param defaultVmSize string = 'Standard_D4s_v3'

@description('VM size of the GPU node pool for the Whisper worker (seed 9.1). NCv3 is being retired: Standard_NC4as_T4_v3 or Standard_NC24ads_A100_v4 are current choices.')
param gpuVmSize string = 'Standard_NC6s_v3'

@description('Upper bound of the GPU pool autoscaler; the pool itself scales to zero when idle.')
param gpuMaxCount int = 3

@description('Model version of the gpt-4.1 deployment.')
param openAiModelVersion string = '2025-04-14'

@description('Capacity of the gpt-4.1 deployment in thousands of tokens per minute.')
param openAiCapacity int = 50

@description('Key Vault purge protection; leave on in production, turn off for throw-away environments.')
param keyVaultPurgeProtection bool = true

@description('Key that signs live client secrets (SPEECHFLOW_SIGNING_KEY), shared by the API and the live component. The default is new on every deployment: pass the current one to keep it, or restart both after provisioning (docs/DEPLOY.md).')
@secure()
param liveSigningKey string = newGuid()

// Queue names as shared/core/config.py and the step registry (shared/domain/registry.py) name them.
var queueNames = [
  'job-events'
  'fetch-jobs'
  'lid-jobs'
  'whisper-jobs'
  'diarize-jobs'
  'azure-ai-jobs'
]
var audioContainerName = 'audio-files'
var resultsContainerName = 'results'
var containerNames = [
  audioContainerName
  resultsContainerName
]
var openAiDeploymentName = 'gpt-4.1'
var databaseName = 'speechflow'
var databaseUrlSecretName = 'database-url'
var openAiKeySecretName = 'azure-openai-api-key'
var liveSigningKeySecretName = 'live-signing-key'

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  application: 'speechflow'
  environment: environmentName
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: 'log-${environmentName}-${resourceToken}'
    appInsightsName: 'appi-${environmentName}-${resourceToken}'
    prometheusWorkspaceName: 'amw-${environmentName}-${resourceToken}'
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    location: location
    tags: tags
    namespaceName: 'sb-${environmentName}-${resourceToken}'
    queueNames: queueNames
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    duplicateDetectionWindow: 'PT10M'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    accountName: 'st${resourceToken}'
    containerNames: containerNames
    audioContainerName: audioContainerName
    resultsContainerName: resultsContainerName
    corsAllowedOrigins: corsAllowedOrigins
    audioRetentionDays: audioRetentionDays
    resultsRetentionDays: resultsRetentionDays
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    location: location
    tags: tags
    serverName: 'psql-${environmentName}-${resourceToken}'
    databaseName: databaseName
    adminLogin: postgresAdminLogin
    adminPassword: postgresAdminPassword
  }
}

module openAi 'modules/openai.bicep' = {
  name: 'openai'
  params: {
    location: openAiLocation
    tags: tags
    accountName: 'oai-${environmentName}-${resourceToken}'
    deploymentName: openAiDeploymentName
    modelName: 'gpt-4.1'
    modelVersion: openAiModelVersion
    capacity: openAiCapacity
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    vaultName: 'kv-${resourceToken}'
    purgeProtection: keyVaultPurgeProtection
    databaseUrlSecretName: databaseUrlSecretName
    databaseUrl: 'postgresql://${postgresAdminLogin}:${uriComponent(postgresAdminPassword)}@${postgres.outputs.fqdn}:5432/${databaseName}?sslmode=require'
    openAiKeySecretName: openAiKeySecretName
    openAiAccountName: openAi.outputs.name
    liveSigningKeySecretName: liveSigningKeySecretName
    liveSigningKey: liveSigningKey
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    tags: tags
    registryName: 'cr${resourceToken}'
  }
}

module aks 'modules/aks.bicep' = {
  name: 'aks'
  params: {
    location: location
    tags: tags
    clusterName: 'aks-${environmentName}-${resourceToken}'
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    prometheusWorkspaceId: monitoring.outputs.prometheusWorkspaceId
    systemVmSize: systemVmSize
    defaultVmSize: defaultVmSize
    gpuVmSize: gpuVmSize
    gpuMaxCount: gpuMaxCount
  }
}

module identities 'modules/identity.bicep' = {
  name: 'identities'
  params: {
    location: location
    tags: tags
    namePrefix: 'id-${environmentName}'
    oidcIssuerUrl: aks.outputs.oidcIssuerUrl
    kubernetesNamespace: kubernetesNamespace
    functionsServiceAccount: functionsServiceAccount
    workersServiceAccount: workersServiceAccount
  }
}

module access 'modules/access.bicep' = {
  name: 'access'
  params: {
    functionsPrincipalId: identities.outputs.functionsPrincipalId
    workersPrincipalId: identities.outputs.workersPrincipalId
    kedaPrincipalId: identities.outputs.kedaPrincipalId
    kubeletPrincipalId: aks.outputs.kubeletPrincipalId
    serviceBusNamespaceName: serviceBus.outputs.name
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    databaseUrlSecretName: databaseUrlSecretName
    openAiKeySecretName: openAiKeySecretName
    liveSigningKeySecretName: liveSigningKeySecretName
    openAiAccountName: openAi.outputs.name
    registryName: registry.outputs.name
    prometheusWorkspaceName: monitoring.outputs.prometheusWorkspaceName
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_AKS_CLUSTER_NAME string = aks.outputs.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output KUBERNETES_NAMESPACE string = kubernetesNamespace
output FUNCTIONS_IDENTITY_CLIENT_ID string = identities.outputs.functionsClientId
output WORKERS_IDENTITY_CLIENT_ID string = identities.outputs.workersClientId
output KEDA_IDENTITY_CLIENT_ID string = identities.outputs.kedaClientId
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output SERVICE_BUS_NAMESPACE_NAME string = serviceBus.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_DEPLOYMENT string = openAi.outputs.deploymentName
output POSTGRES_SERVER_FQDN string = postgres.outputs.fqdn
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.appInsightsConnectionString
// KEDA's prometheus trigger for the live component (k8s/10-live.yaml) queries this endpoint.
output AZURE_MONITOR_PROMETHEUS_ENDPOINT string = monitoring.outputs.prometheusQueryEndpoint
