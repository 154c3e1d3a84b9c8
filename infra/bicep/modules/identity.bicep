// User-assigned identities, federated with Kubernetes service accounts through the AKS OIDC issuer:
//   functions: API, router and azure-ai pods (same Functions image), the dashboard and the migration Job
//   workers:   LID and Whisper worker pods
//   keda:      the KEDA operator of the AKS add-on, which reads queue lengths for scaling
param location string
param tags object
param namePrefix string
param oidcIssuerUrl string
param kubernetesNamespace string
param functionsServiceAccount string
param workersServiceAccount string

@description('Service account of the operator installed by the AKS KEDA add-on.')
param kedaServiceAccountSubject string = 'system:serviceaccount:kube-system:keda-operator'

var audiences = [
  'api://AzureADTokenExchange'
]

resource functionsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-functions'
  location: location
  tags: tags
}

resource workersIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-workers'
  location: location
  tags: tags
}

resource kedaIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-keda'
  location: location
  tags: tags
}

resource functionsFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: functionsIdentity
  name: 'aks-${functionsServiceAccount}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${kubernetesNamespace}:${functionsServiceAccount}'
    audiences: audiences
  }
}

resource workersFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: workersIdentity
  name: 'aks-${workersServiceAccount}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${kubernetesNamespace}:${workersServiceAccount}'
    audiences: audiences
  }
}

resource kedaFederation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: kedaIdentity
  name: 'aks-keda-operator'
  properties: {
    issuer: oidcIssuerUrl
    subject: kedaServiceAccountSubject
    audiences: audiences
  }
}

output functionsPrincipalId string = functionsIdentity.properties.principalId
output functionsClientId string = functionsIdentity.properties.clientId
output workersPrincipalId string = workersIdentity.properties.principalId
output workersClientId string = workersIdentity.properties.clientId
output kedaPrincipalId string = kedaIdentity.properties.principalId
output kedaClientId string = kedaIdentity.properties.clientId
