package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/coffre/coffre/internal/policy/schedule"
	"github.com/hashicorp/hcl/v2"
)

// at returns the recorded range of name, or the fallback.
func at(ranges map[string]hcl.Range, name string, fallback hcl.Range) hcl.Range {
	if r, ok := ranges[name]; ok {
		return r
	}
	return fallback
}

// validateVault checks a vault on its own: location scheme and lock.
func validateVault(v *Vault) hcl.Diagnostics {
	var diags hcl.Diagnostics
	where := fmt.Sprintf("vault %q", v.Name)
	loc := at(v.ranges, "location", v.decl)
	switch {
	case strings.HasPrefix(v.Location, "file:///"):
	case strings.HasPrefix(v.Location, "s3://") && len(v.Location) > len("s3://") && !strings.HasPrefix(v.Location, "s3:///"):
	default:
		diags = append(diags, diag(loc, "Invalid vault location", "%s: location %q must be file:///absolute/path or s3://bucket[/prefix]", where, v.Location))
	}
	if l := v.Lock; l != nil {
		lr := at(v.ranges, "lock", v.decl)
		if l.Mode != "governance" && l.Mode != "compliance" {
			diags = append(diags, diag(lr, "Invalid lock mode", "%s: lock mode %q must be \"governance\" or \"compliance\"", where, l.Mode))
		}
		if l.MinRetentionDays != 0 && l.MaxRetentionDays != 0 && l.MinRetentionDays > l.MaxRetentionDays {
			diags = append(diags, diag(lr, "Invalid lock retention", "%s: lock min_retention_days %d is above max_retention_days %d", where, l.MinRetentionDays, l.MaxRetentionDays))
		}
	}
	return diags
}

// validateRule checks a rule on its own: time zone, schedule syntax and
// frequency, windows, lifecycles, continuous backup limits.
func validateRule(plan string, r *Rule) hcl.Diagnostics {
	var diags hcl.Diagnostics
	where := fmt.Sprintf("plan %q rule %q", plan, r.Name)
	loc, err := time.LoadLocation(r.Timezone)
	if err != nil {
		diags = append(diags, diag(at(r.ranges, "timezone", r.decl), "Invalid time zone", "%s: unknown time zone %q; use an IANA name such as \"Europe/Paris\"", where, r.Timezone))
		loc = time.UTC
	}
	schedRange := at(r.ranges, "schedule", r.decl)
	if s, err := schedule.Parse(r.Schedule, loc); err != nil {
		diags = append(diags, diag(schedRange, "Invalid schedule", "%s: %v", where, err))
	} else if err := schedule.CheckFrequency(s, frequencyReference, MinBackupInterval); err != nil {
		diags = append(diags, diag(schedRange, "Schedule too frequent", "%s: %v", where, err))
	}
	w := schedule.Windows{
		Start:      time.Duration(r.StartWindowMinutes) * time.Minute,
		Completion: time.Duration(r.CompletionWindowMinutes) * time.Minute,
	}
	if err := w.Validate(); err != nil {
		rng := at(r.ranges, "completion_window_minutes", at(r.ranges, "start_window_minutes", r.decl))
		if w.Start < schedule.MinStartWindow {
			rng = at(r.ranges, "start_window_minutes", rng)
		}
		diags = append(diags, diag(rng, "Invalid backup windows", "%s: %v", where, err))
	}
	if r.Lifecycle != nil {
		diags = append(diags, validateLifecycle(where, r.Lifecycle, at(r.ranges, "lifecycle", r.decl))...)
	}
	for _, ca := range r.CopyActions {
		if ca.Lifecycle != nil {
			diags = append(diags, validateLifecycle(where+" copy_action to "+fmt.Sprintf("%q", ca.DestinationVault), ca.Lifecycle, at(ca.ranges, "lifecycle", ca.decl))...)
		}
	}
	if r.ContinuousBackup && r.Lifecycle != nil {
		lr := at(r.ranges, "lifecycle", r.decl)
		if r.Lifecycle.MoveToColdStorageAfterDays != 0 {
			diags = append(diags, diag(lr, "Invalid continuous backup", "%s: continuous backups cannot move to cold storage", where))
		}
		if r.Lifecycle.DeleteAfterDays > ContinuousBackupMaxDays {
			diags = append(diags, diag(lr, "Invalid continuous backup", "%s: continuous backups are kept at most %d days, not %d", where, ContinuousBackupMaxDays, r.Lifecycle.DeleteAfterDays))
		}
	}
	return diags
}

// validateLifecycle enforces AWS Backup's 90-day minimum in cold storage.
func validateLifecycle(where string, l *Lifecycle, rng hcl.Range) hcl.Diagnostics {
	if l.MoveToColdStorageAfterDays != 0 && l.DeleteAfterDays != 0 &&
		l.DeleteAfterDays < l.MoveToColdStorageAfterDays+ColdStorageMinimumDays {
		return hcl.Diagnostics{diag(rng, "Invalid lifecycle",
			"%s: delete_after_days (%d) must be at least move_to_cold_storage_after_days + %d (%d): recovery points stay in cold storage at least %d days",
			where, l.DeleteAfterDays, ColdStorageMinimumDays, l.MoveToColdStorageAfterDays+ColdStorageMinimumDays, ColdStorageMinimumDays)}
	}
	return nil
}

// checkDuplicates reports names declared twice among explicit blocks.
func (c *Config) checkDuplicates() hcl.Diagnostics {
	var diags hcl.Diagnostics
	dup := func(kind string) func(name string, rng hcl.Range) {
		seen := map[string]hcl.Range{}
		return func(name string, rng hcl.Range) {
			if first, ok := seen[name]; ok {
				diags = append(diags, diag(rng, "Duplicate "+kind, "%s %s is already declared at %s", kind, name, origin(first)))
				return
			}
			seen[name] = rng
		}
	}
	vaults, resources, ids, plans, notes, envs := dup("vault"), dup("resource"), dup("resource id"), dup("plan"), dup("notification"), dup("environment")
	for _, v := range c.Vaults {
		vaults(fmt.Sprintf("%q", v.Name), v.decl)
	}
	for _, r := range c.Resources {
		resources(fmt.Sprintf("%q %q", r.Type, r.Name), r.decl)
		ids(fmt.Sprintf("%q", ResourceID(r)), r.decl)
	}
	for _, p := range c.Plans {
		plans(fmt.Sprintf("%q", p.Name), p.decl)
	}
	for _, n := range c.Notifications {
		notes(fmt.Sprintf("%q", n.Name), n.decl)
	}
	for _, e := range c.Environments {
		envs(fmt.Sprintf("%q", e.Name), e.decl)
	}
	return diags
}

// checkReferences checks what needs the whole resolved set: target and
// destination vaults exist, and retentions fit the vaults' locks.
func (r *Resolved) checkReferences() hcl.Diagnostics {
	var diags hcl.Diagnostics
	vaults := map[string]*Vault{}
	for _, v := range r.Vaults {
		vaults[v.Name] = v
	}
	for _, p := range r.Plans {
		for _, rule := range p.Rules {
			where := fmt.Sprintf("plan %q rule %q", p.Name, rule.Name)
			tv := at(rule.ranges, "target_vault", rule.decl)
			if v, ok := vaults[rule.TargetVault]; !ok {
				diags = append(diags, diag(tv, "Undefined vault", "%s: target_vault %q is not declared; add a vault %q block", where, rule.TargetVault, rule.TargetVault))
			} else {
				diags = append(diags, checkLock(where, v, rule.Lifecycle, at(rule.ranges, "lifecycle", tv))...)
			}
			for _, ca := range rule.CopyActions {
				dv := at(ca.ranges, "destination_vault", ca.decl)
				v, ok := vaults[ca.DestinationVault]
				if !ok {
					diags = append(diags, diag(dv, "Undefined vault", "%s: copy_action destination_vault %q is not declared; add a vault %q block", where, ca.DestinationVault, ca.DestinationVault))
					continue
				}
				diags = append(diags, checkLock(where+" copy_action", v, ca.Lifecycle, at(ca.ranges, "lifecycle", dv))...)
			}
		}
	}
	return diags
}

// checkLock reports a retention outside a vault lock's bounds. A lifecycle
// without delete_after_days keeps recovery points forever.
func checkLock(where string, v *Vault, l *Lifecycle, rng hcl.Range) hcl.Diagnostics {
	if v.Lock == nil {
		return nil
	}
	del := 0
	if l != nil {
		del = l.DeleteAfterDays
	}
	lk := v.Lock
	switch {
	case del == 0 && lk.MaxRetentionDays != 0:
		return hcl.Diagnostics{diag(rng, "Retention outside vault lock",
			"%s: recovery points are kept forever, but vault %q (locked at %s) allows at most %d days; set lifecycle delete_after_days", where, v.Name, v.Origin, lk.MaxRetentionDays)}
	case del != 0 && lk.MinRetentionDays != 0 && del < lk.MinRetentionDays:
		return hcl.Diagnostics{diag(rng, "Retention outside vault lock",
			"%s: delete_after_days %d is below the minimum retention of %d days of vault %q's lock", where, del, lk.MinRetentionDays, v.Name)}
	case del != 0 && lk.MaxRetentionDays != 0 && del > lk.MaxRetentionDays:
		return hcl.Diagnostics{diag(rng, "Retention outside vault lock",
			"%s: delete_after_days %d is above the maximum retention of %d days of vault %q's lock", where, del, lk.MaxRetentionDays, v.Name)}
	}
	return nil
}
