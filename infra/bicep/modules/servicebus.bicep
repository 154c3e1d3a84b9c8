// Service Bus namespace and the SpeechFlow queues: job-events and one per registered step queue (main.bicep queueNames). Standard tier: duplicate detection needs it.
// Local (SAS key) auth is off: every client reaches the namespace with a workload identity.
param location string
param tags object
param namespaceName string

@description('job-events, lid-jobs, whisper-jobs, azure-ai-jobs (seed section 10).')
param queueNames array

@description('Peek-lock duration; workers renew the lock while they work (QUEUE_LOCK_DURATION_SECONDS).')
param lockDuration string

@description('Deliveries before a message is dead-lettered; app-level retries are new scheduled messages.')
param maxDeliveryCount int

@description('Window in which a repeated MessageId ({job_id}:{step_type}:{attempt}) is dropped.')
param duplicateDetectionWindow string

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for queueName in queueNames: {
  parent: namespace
  name: queueName
  properties: {
    lockDuration: lockDuration
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    defaultMessageTimeToLive: 'P14D'
    enableBatchedOperations: true
  }
}]

output name string = namespace.name
output id string = namespace.id
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
