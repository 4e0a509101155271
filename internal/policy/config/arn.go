package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
)

// ARNs follow AWS's six-part layout with the partition "coffre" and an empty
// account: arn:coffre:SERVICE:REGION::RESOURCE. An empty region is written
// "local". They are derived from names only, so they are stable across runs
// and machines.

func region(r string) string {
	if r == "" {
		return "local"
	}
	return r
}

// VaultARN is arn:coffre:backup:REGION::backup-vault:NAME.
func VaultARN(reg, name string) string {
	return "arn:coffre:backup:" + region(reg) + "::backup-vault:" + name
}

// PlanARN is arn:coffre:backup:REGION::backup-plan:NAME.
func PlanARN(reg, name string) string {
	return "arn:coffre:backup:" + region(reg) + "::backup-plan:" + name
}

// TopicARN is arn:coffre:sns:REGION::NAME (a notification's topic).
func TopicARN(reg, name string) string { return "arn:coffre:sns:" + region(reg) + "::" + name }

// KeyARN is arn:coffre:kms:REGION::key/ID; an id that already is an ARN
// (starts with "arn:") is returned as is.
func KeyARN(reg, id string) string {
	if strings.HasPrefix(id, "arn:") {
		return id
	}
	return "arn:coffre:kms:" + region(reg) + "::key/" + id
}

// ResourceID is the resource's id as written, or
// arn:coffre:TYPE:::resource/NAME.
func ResourceID(r *Resource) string {
	if r.ID != "" {
		return r.ID
	}
	return "arn:coffre:" + r.Type + ":::resource/" + r.Name
}

// envOutputs records, per environment preset, the names its outputs refer
// to; Outputs looks them up after overrides.
type envOutputs struct {
	primary, secondary string
	plans              []string
	topic              string
	kmsKeyARN          string
}

// Outputs returns the seed module's outputs for each environment preset, by
// environment block name. ARNs are those of the resolved objects, so an
// explicit block overriding a preset object is reflected. A secondary vault
// that does not exist gives an empty secondary_backup_vault_arn. kms_key_arn
// is the preset's key (kms_key_id or the created key; empty for default
// encryption), even if an explicit vault block uses another key.
func (r *Resolved) Outputs() map[string]Outputs {
	vaults := map[string]*Vault{}
	for _, v := range r.Vaults {
		vaults[v.Name] = v
	}
	plans := map[string]*Plan{}
	for _, p := range r.Plans {
		plans[p.Name] = p
	}
	topics := map[string]*Notification{}
	for _, n := range r.Notifications {
		topics[n.Name] = n
	}
	out := map[string]Outputs{}
	for name, e := range r.outputs {
		o := Outputs{BackupVaultName: e.primary, BackupPlanARNs: map[string]string{}, KMSKeyARN: e.kmsKeyARN}
		if v := vaults[e.primary]; v != nil {
			o.BackupVaultARN = v.ARN
		}
		if v := vaults[e.secondary]; e.secondary != "" && v != nil {
			o.SecondaryBackupVaultARN = v.ARN
		}
		for _, pn := range e.plans {
			if p := plans[pn]; p != nil {
				o.BackupPlanARNs[pn] = p.ARN
			}
		}
		if n := topics[e.topic]; n != nil {
			o.BackupSNSTopicARN = n.ARN
		}
		out[name] = o
	}
	return out
}

// ResolveSecrets checks that every secret reference can be read: each env()
// variable is set (getenv reports it) and each file() exists and is a
// regular file. It reads no secret into the configuration. The error lists
// every problem, naming the resource, the setting and the variable or file.
func (r *Resolved) ResolveSecrets(getenv func(string) (string, bool)) error {
	var errs []error
	for _, res := range r.Resources {
		keys := make([]string, 0, len(res.Secrets))
		for k := range res.Secrets {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ref := res.Secrets[k]
			where := fmt.Sprintf("resource %q %q (%s) settings.%s", res.Type, res.Name, res.Origin, k)
			switch ref.Kind {
			case "env":
				if _, ok := getenv(ref.Name); !ok {
					errs = append(errs, fmt.Errorf("%s: environment variable %s is not set; export it before running coffre", where, ref.Name))
				}
			case "file":
				fi, err := os.Stat(ref.Name)
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("%s: secret file: %w", where, err))
				case !fi.Mode().IsRegular():
					errs = append(errs, fmt.Errorf("%s: secret file %s is not a regular file", where, ref.Name))
				}
			}
		}
	}
	return errors.Join(errs...)
}
