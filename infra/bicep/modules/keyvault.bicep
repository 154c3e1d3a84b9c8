// Key Vault (RBAC mode) holding the secrets the pods need: database-url, azure-openai-api-key and
// live-signing-key (SPEECHFLOW_SIGNING_KEY: the API signs live client secrets with it and the live
// component checks them, so both must read the same one). The Secrets Store CSI driver add-on mounts them with each pod's workload
// identity, which holds Key Vault Secrets User on exactly the secrets it reads (access.bicep).
param location string
param tags object
param vaultName string
param purgeProtection bool
param databaseUrlSecretName string
param openAiKeySecretName string
param openAiAccountName string
param liveSigningKeySecretName string

@secure()
param databaseUrl string

@secure()
param liveSigningKey string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 30
    // The API accepts true or an absent value, never false.
    enablePurgeProtection: purgeProtection ? true : null
  }
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

resource databaseUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: databaseUrlSecretName
  properties: {
    value: databaseUrl
    contentType: 'text/plain'
  }
}

resource openAiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: openAiKeySecretName
  properties: {
    value: openAi.listKeys().key1
    contentType: 'text/plain'
  }
}

resource liveSigningKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: liveSigningKeySecretName
  properties: {
    value: liveSigningKey
    contentType: 'text/plain'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
