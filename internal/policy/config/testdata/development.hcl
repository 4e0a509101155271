# The seed's module call adapted to development (box "Plan de Backup
# Development"): 7 days (the default short_term_retention), default
# encryption, no long-term retention, no cross-region copy, manual restore
# tests. backup_vault_name is left out: it derives
# accessweaver-dev-backup-vault. DynamoDB and ElastiCache ARNs are given but
# not selected ("Services: RDS, EFS, S3").
environment "accessweaver" {
  environment = "development"

  rds_instance_arns        = ["arn:aws:rds:eu-west-1:123456789012:db:accessweaver-dev"]
  dynamodb_table_arns      = ["arn:aws:dynamodb:eu-west-1:123456789012:table/accessweaver-dev-sessions"]
  elasticache_cluster_arns = ["arn:aws:elasticache:eu-west-1:123456789012:cluster:accessweaver-dev-redis"]
  efs_arns                 = ["arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0bbbbbbbbbbbbbbb2"]
  s3_bucket_arns           = ["arn:aws:s3:::accessweaver-dev-documents"]

  notification_email = "dev-alerts@accessweaver.com"

  tags = {
    Project     = "AccessWeaver"
    Environment = "development"
    Managed     = "terraform"
  }
}
