// Example parameters: copy, adjust, and pass with -p. The password is read from the environment so
// that it never lands in a file:  export POSTGRES_ADMIN_PASSWORD='...'
using 'main.bicep'

param environmentName = 'prod'
param kubernetesNamespace = 'speechflow'
param postgresAdminLogin = 'speechflow'
param postgresAdminPassword = readEnvironmentVariable('POSTGRES_ADMIN_PASSWORD')
param corsAllowedOrigins = [
  'https://speechflow.example.com'
]
param audioRetentionDays = 30
param resultsRetentionDays = 365
param systemVmSize = 'Standard_DS2_v2'
param defaultVmSize = 'Standard_D4s_v3'
param gpuVmSize = 'Standard_NC6s_v3'
param gpuMaxCount = 3
param openAiModelVersion = '2025-04-14'
param openAiCapacity = 50
param keyVaultPurgeProtection = true
