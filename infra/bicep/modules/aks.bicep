// AKS cluster with the seed's three node pools (section 9.1), the KEDA add-on, workload identity
// (OIDC issuer), the Key Vault Secrets Store CSI driver, container insights, and the application routing
// add-on (managed NGINX, ingress class webapprouting.kubernetes.azure.com) that publishes the API and
// the live component's WebSockets (k8s/10-live.yaml).
param location string
param tags object
param clusterName string
param logAnalyticsWorkspaceId string
@description('Azure Monitor workspace that managed Prometheus writes the cluster\'s metrics to.')
param prometheusWorkspaceId string
param systemVmSize string
param defaultVmSize string
param gpuVmSize string
param gpuMaxCount int

@description('Empty picks the region default version.')
param kubernetesVersion string = ''

param defaultMinCount int = 1
param defaultMaxCount int = 5

// Pods choose their pool by the speechflow.io/pool label (k8s/ nodeSelector); the GPU pool also carries a taint so
// that nothing but the Whisper worker (which tolerates it) lands on the expensive nodes.
var gpuTaint = 'nvidia.com/gpu=present:NoSchedule'

resource cluster 'Microsoft.ContainerService/managedClusters@2024-09-01' = {
  name: clusterName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Base'
    tier: 'Standard'
  }
  properties: {
    dnsPrefix: clusterName
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    enableRBAC: true
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        vmSize: systemVmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        type: 'VirtualMachineScaleSets'
        count: 2
        enableAutoScaling: true
        minCount: 2
        maxCount: 3
        // Only critical add-ons (CoreDNS, KEDA, CSI driver) run here.
        nodeTaints: [
          'CriticalAddonsOnly=true:NoSchedule'
        ]
        nodeLabels: {
          'speechflow.io/pool': 'system'
        }
      }
      {
        name: 'default'
        mode: 'User'
        vmSize: defaultVmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
        type: 'VirtualMachineScaleSets'
        count: defaultMinCount
        enableAutoScaling: true
        minCount: defaultMinCount
        maxCount: defaultMaxCount
        nodeLabels: {
          'speechflow.io/pool': 'default'
        }
      }
      {
        name: 'gpu'
        mode: 'User'
        vmSize: gpuVmSize
        osType: 'Linux'
        osSKU: 'Ubuntu'
        type: 'VirtualMachineScaleSets'
        count: 0
        enableAutoScaling: true
        minCount: 0
        maxCount: gpuMaxCount
        nodeTaints: [
          gpuTaint
        ]
        nodeLabels: {
          'speechflow.io/pool': 'gpu'
        }
      }
    ]
    oidcIssuerProfile: {
      enabled: true
    }
    securityProfile: {
      workloadIdentity: {
        enabled: true
      }
    }
    workloadAutoScalerProfile: {
      keda: {
        enabled: true
      }
    }
    ingressProfile: {
      webAppRouting: {
        enabled: true
      }
    }
    addonProfiles: {
      azureKeyvaultSecretsProvider: {
        enabled: true
        config: {
          enableSecretRotation: 'true'
          rotationPollInterval: '2m'
        }
      }
      omsagent: {
        enabled: true
        config: {
          logAnalyticsWorkspaceResourceID: logAnalyticsWorkspaceId
        }
      }
    }
    // Managed Prometheus (the ama-metrics agents); it also scrapes the PodMonitor in k8s/10-live.yaml.
    azureMonitorProfile: {
      metrics: {
        enabled: true
        kubeStateMetrics: {
          metricLabelsAllowlist: ''
          metricAnnotationsAllowList: ''
        }
      }
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      loadBalancerSku: 'standard'
    }
  }
}

// Managed Prometheus sends what the agents scrape through a data collection endpoint and rule to the
// Azure Monitor workspace; the association ties the rule to this cluster.
var prometheusRuleName = take('MSProm-${location}-${clusterName}', 64)

resource prometheusEndpoint 'Microsoft.Insights/dataCollectionEndpoints@2022-06-01' = {
  name: prometheusRuleName
  location: location
  tags: tags
  kind: 'Linux'
  properties: {}
}

resource prometheusRule 'Microsoft.Insights/dataCollectionRules@2022-06-01' = {
  name: prometheusRuleName
  location: location
  tags: tags
  kind: 'Linux'
  properties: {
    dataCollectionEndpointId: prometheusEndpoint.id
    dataSources: {
      prometheusForwarder: [
        {
          name: 'PrometheusDataSource'
          streams: [
            'Microsoft-PrometheusMetrics'
          ]
          labelIncludeFilter: {}
        }
      ]
    }
    destinations: {
      monitoringAccounts: [
        {
          name: 'prometheusWorkspace'
          accountResourceId: prometheusWorkspaceId
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          'Microsoft-PrometheusMetrics'
        ]
        destinations: [
          'prometheusWorkspace'
        ]
      }
    ]
  }
}

resource prometheusRuleAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2022-06-01' = {
  name: prometheusRuleName
  scope: cluster
  properties: {
    description: 'Sends the cluster\'s Prometheus metrics to the Azure Monitor workspace; deleting it stops them.'
    dataCollectionRuleId: prometheusRule.id
  }
}

output name string = cluster.name
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL
output kubeletPrincipalId string = cluster.properties.identityProfile.kubeletidentity.objectId
