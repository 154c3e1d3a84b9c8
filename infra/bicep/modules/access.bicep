// Least-privilege role assignments. Data-plane roles only, each on the narrowest scope that works:
// - functions and workers send and receive on the namespace (they publish to each other's queues and
//   schedule their own retries), read and write blobs, and read only the Key Vault secrets they mount
//   (both read live-signing-key: the API signs live client secrets, the live component checks them);
// - the API signs upload URLs as user-delegation SAS, hence Storage Blob Delegator for functions;
// - KEDA reads queue runtime properties, which Service Bus only exposes to Data Owner, and the live
//   component's session count from managed Prometheus (Monitoring Data Reader on the Azure Monitor workspace);
// - the kubelet pulls images.
param functionsPrincipalId string
param workersPrincipalId string
param kedaPrincipalId string
param kubeletPrincipalId string
param serviceBusNamespaceName string
param storageAccountName string
param keyVaultName string
param databaseUrlSecretName string
param openAiKeySecretName string
param liveSigningKeySecretName string
param openAiAccountName string
param registryName string
param prometheusWorkspaceName string

// Built-in role definition ids (the same in every tenant).
var roleIds = {
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  cognitiveServicesOpenAiUser: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  monitoringDataReader: 'b0d8363b-8ddd-447d-831f-62ca05bff136'
}

var serviceBusClients = [
  functionsPrincipalId
  workersPrincipalId
]
var blobClients = [
  functionsPrincipalId
  workersPrincipalId
]
var databaseUrlReaders = [
  functionsPrincipalId
  workersPrincipalId
]
var liveSigningKeyReaders = [
  functionsPrincipalId
  workersPrincipalId
]

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource databaseUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: databaseUrlSecretName
}

resource openAiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: openAiKeySecretName
}

resource liveSigningKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: liveSigningKeySecretName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource prometheusWorkspace 'Microsoft.Monitor/accounts@2023-04-03' existing = {
  name: prometheusWorkspaceName
}

resource serviceBusSenders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in serviceBusClients: {
  name: guid(serviceBus.id, principalId, roleIds.serviceBusDataSender)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource serviceBusReceivers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in serviceBusClients: {
  name: guid(serviceBus.id, principalId, roleIds.serviceBusDataReceiver)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataReceiver)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource kedaQueueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, kedaPrincipalId, roleIds.serviceBusDataOwner)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataOwner)
    principalId: kedaPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource kedaMetricsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(prometheusWorkspace.id, kedaPrincipalId, roleIds.monitoringDataReader)
  scope: prometheusWorkspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringDataReader)
    principalId: kedaPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource blobContributors 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in blobClients: {
  name: guid(storageAccount.id, principalId, roleIds.storageBlobDataContributor)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource uploadUrlSigner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, functionsPrincipalId, roleIds.storageBlobDelegator)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDelegator)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource databaseUrlSecretUsers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in databaseUrlReaders: {
  name: guid(databaseUrlSecret.id, principalId, roleIds.keyVaultSecretsUser)
  scope: databaseUrlSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource liveSigningKeySecretUsers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in liveSigningKeyReaders: {
  name: guid(liveSigningKeySecret.id, principalId, roleIds.keyVaultSecretsUser)
  scope: liveSigningKeySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource openAiKeySecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAiKeySecret.id, functionsPrincipalId, roleIds.keyVaultSecretsUser)
  scope: openAiKeySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Lets the azure-ai function call Azure OpenAI with its identity instead of the key, where it chooses to.
resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAi.id, functionsPrincipalId, roleIds.cognitiveServicesOpenAiUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.cognitiveServicesOpenAiUser)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource imagePull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, kubeletPrincipalId, roleIds.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: kubeletPrincipalId
    principalType: 'ServicePrincipal'
  }
}
