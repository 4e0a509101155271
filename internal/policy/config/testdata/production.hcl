# The seed's module call (section "Utilisation du Module"), with the module
# outputs it references (module.database.db_instance_arns, ...) replaced by
# example ARNs.
environment "accessweaver" {
  environment                = "production"
  backup_vault_name          = "accessweaver-prod-backup-vault"
  enable_cross_region_backup = true
  secondary_region           = "eu-central-1"

  # Configuration des rétentions
  short_term_retention = 30   # jours
  long_term_retention  = 365  # jours
  archive_retention    = 2555 # jours (7 ans)

  # Sélection des ressources
  rds_instance_arns        = ["arn:aws:rds:eu-west-1:123456789012:db:accessweaver-prod"]
  dynamodb_table_arns      = ["arn:aws:dynamodb:eu-west-1:123456789012:table/accessweaver-prod-sessions"]
  elasticache_cluster_arns = ["arn:aws:elasticache:eu-west-1:123456789012:cluster:accessweaver-prod-redis"]
  efs_arns                 = ["arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0123456789abcdef0"]
  s3_bucket_arns           = ["arn:aws:s3:::accessweaver-prod-documents"]

  # Plans de sauvegarde
  enable_hourly_backups   = true
  hourly_backup_resources = ["rds"]

  # Notifications
  notification_email = "platform-alerts@accessweaver.com"

  # Test de restauration automatisé
  enable_recovery_testing = true
  recovery_test_frequency = "weekly"

  tags = {
    Project     = "AccessWeaver"
    Environment = "production"
    Managed     = "terraform"
  }
}
