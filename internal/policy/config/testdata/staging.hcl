# The seed's module call adapted to staging (table "Stratégie
# Multi-Environnement" and box "Plan de Backup Staging"): 14 days short
# term, 30 days long term, dedicated KMS key, no cross-region copy, monthly
# automated restore tests.
environment "accessweaver" {
  environment       = "staging"
  backup_vault_name = "accessweaver-staging-backup-vault"

  short_term_retention = 14
  long_term_retention  = 30

  create_kms_key = true

  rds_instance_arns        = ["arn:aws:rds:eu-west-1:123456789012:db:accessweaver-staging"]
  dynamodb_table_arns      = ["arn:aws:dynamodb:eu-west-1:123456789012:table/accessweaver-staging-sessions"]
  elasticache_cluster_arns = ["arn:aws:elasticache:eu-west-1:123456789012:cluster:accessweaver-staging-redis"]
  efs_arns                 = ["arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0aaaaaaaaaaaaaaa1"]
  s3_bucket_arns           = ["arn:aws:s3:::accessweaver-staging-documents"]

  notification_email = "platform-alerts@accessweaver.com"

  enable_recovery_testing = true
  recovery_test_frequency = "monthly"

  tags = {
    Project     = "AccessWeaver"
    Environment = "staging"
    Managed     = "terraform"
  }
}
