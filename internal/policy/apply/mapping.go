package apply

import (
	"sort"
	"strconv"
	"strings"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/policy/config"
)

// This file is the one place where configuration objects become catalog
// models, and where both are flattened into comparable fields.
//
// Gaps: the catalog has no column for these configuration fields, so they
// are neither stored nor compared (changing only them gives no change):
//   - every kind: Origin (where the block was declared) and the derived ARN;
//   - vault: Region (only used in ARNs and to tell cross-region copies apart);
//   - resource: Secrets (the references themselves are kept in Settings);
//   - plan: Region;
//   - notifications, KMS keys and restore tests have no catalog table at all:
//     they are not reconciled, only reported through the outputs.

// SelectionName is the catalog name of a plan's selection. Configuration
// selection names are only unique within their plan (the presets give every
// plan a "production-resource-selection") while catalog selection names are
// global, so the catalog name is qualified with the plan: "PLAN/SELECTION".
func SelectionName(plan, selection string) string { return plan + "/" + selection }

// toVault maps a configuration vault to the catalog model.
func toVault(v *config.Vault) catalog.Vault {
	out := catalog.Vault{Name: v.Name, Location: v.Location, KeyRef: v.KMSKey, Tags: copyMap(v.Tags)}
	if v.Lock != nil {
		out.Lock = catalog.VaultLock{Mode: catalog.LockMode(v.Lock.Mode), MinRetentionDays: v.Lock.MinRetentionDays, MaxRetentionDays: v.Lock.MaxRetentionDays}
	}
	return out
}

// toResource maps a configuration resource to the catalog model; its key is
// the resolved id.
func toResource(r *config.Resource) catalog.Resource {
	return catalog.Resource{ID: r.ID, Type: r.Type, Name: r.Name, Settings: copyMap(r.Settings), Tags: copyMap(r.Tags)}
}

// lifecycle returns a lifecycle's move-to-cold and delete days (0: unset).
func lifecycle(l *config.Lifecycle) (cold, del int) {
	if l == nil {
		return 0, 0
	}
	return l.MoveToColdStorageAfterDays, l.DeleteAfterDays
}

// toPlan maps a configuration plan and its rules (in order) to the catalog
// model; selections are separate catalog objects (toSelection).
func toPlan(p *config.Plan) catalog.Plan {
	out := catalog.Plan{Name: p.Name, Tags: copyMap(p.Tags)}
	for _, r := range p.Rules {
		cold, del := lifecycle(r.Lifecycle)
		cr := catalog.Rule{
			Name: r.Name, Schedule: r.Schedule, Timezone: r.Timezone,
			StartWindowMinutes: r.StartWindowMinutes, CompletionWindowMinutes: r.CompletionWindowMinutes,
			TargetVault: r.TargetVault, MoveToColdAfterDays: cold, DeleteAfterDays: del,
			ContinuousBackup: r.ContinuousBackup,
		}
		for _, c := range r.CopyActions {
			cc, cd := lifecycle(c.Lifecycle)
			cr.CopyActions = append(cr.CopyActions, catalog.CopyAction{TargetVault: c.DestinationVault, MoveToColdAfterDays: cc, DeleteAfterDays: cd})
		}
		out.Rules = append(out.Rules, cr)
	}
	return out
}

// conditionOps maps configuration condition operators to AWS Backup names.
var conditionOps = map[string]catalog.ConditionOp{
	"string_equals":     catalog.StringEquals,
	"string_not_equals": catalog.StringNotEquals,
	"string_like":       catalog.StringLike,
	"string_not_like":   catalog.StringNotLike,
}

// toSelection maps a plan's selection to the catalog model, named with
// SelectionName.
func toSelection(plan string, s *config.Selection) catalog.Selection {
	out := catalog.Selection{
		Name: SelectionName(plan, s.Name), Plan: plan,
		Resources: append([]string(nil), s.Resources...), NotResources: append([]string(nil), s.NotResources...),
	}
	for _, c := range s.Conditions {
		op, ok := conditionOps[c.Op]
		if !ok {
			op = catalog.ConditionOp(c.Op) // refused by catalog validation
		}
		out.Conditions = append(out.Conditions, catalog.Condition{Op: op, Key: c.Key, Value: c.Value})
	}
	return out
}

// fields is an object flattened to named string values; a zero value is
// left out, so nil and empty maps or lists compare equal.
type fields map[string]string

func (f fields) set(name, value string) {
	if value != "" {
		f[name] = value
	}
}

func (f fields) num(name string, n int) {
	if n != 0 {
		f[name] = strconv.Itoa(n)
	}
}

func (f fields) flag(name string, b bool) {
	if b {
		f[name] = "true"
	}
}

func (f fields) list(name string, l []string) { f.set(name, strings.Join(l, ", ")) }

func (f fields) tags(prefix string, m map[string]string) {
	for k, v := range m {
		f[prefix+"."+k] = v
	}
}

func vaultFields(v catalog.Vault) fields {
	f := fields{}
	f.set("location", v.Location)
	f.set("kms_key", v.KeyRef)
	f.set("lock.mode", string(v.Lock.Mode))
	f.num("lock.min_retention_days", v.Lock.MinRetentionDays)
	f.num("lock.max_retention_days", v.Lock.MaxRetentionDays)
	f.tags("tags", v.Tags)
	return f
}

func resourceFields(r catalog.Resource) fields {
	f := fields{}
	f.set("type", r.Type)
	f.set("name", r.Name)
	f.tags("settings", r.Settings)
	f.tags("tags", r.Tags)
	return f
}

func planFields(p catalog.Plan) fields {
	f := fields{}
	names := make([]string, 0, len(p.Rules))
	for _, r := range p.Rules {
		names = append(names, r.Name)
		pre := "rule " + r.Name + " "
		f.set(pre+"schedule", r.Schedule)
		f.set(pre+"timezone", r.Timezone)
		f.num(pre+"start_window_minutes", r.StartWindowMinutes)
		f.num(pre+"completion_window_minutes", r.CompletionWindowMinutes)
		f.set(pre+"target_vault", r.TargetVault)
		f.num(pre+"move_to_cold_storage_after_days", r.MoveToColdAfterDays)
		f.num(pre+"delete_after_days", r.DeleteAfterDays)
		f.flag(pre+"continuous_backup", r.ContinuousBackup)
		for i, c := range r.CopyActions {
			cp := pre + "copy_action[" + strconv.Itoa(i) + "] "
			f.set(cp+"destination_vault", c.TargetVault)
			f.num(cp+"move_to_cold_storage_after_days", c.MoveToColdAfterDays)
			f.num(cp+"delete_after_days", c.DeleteAfterDays)
		}
	}
	f.list("rules", names) // order and membership
	f.tags("tags", p.Tags)
	return f
}

func selectionFields(s catalog.Selection) fields {
	f := fields{}
	f.set("plan", s.Plan)
	f.list("resources", s.Resources)
	f.list("not_resources", s.NotResources)
	for i, c := range s.Conditions {
		f.set("condition["+strconv.Itoa(i)+"]", string(c.Op)+" "+c.Key+" "+strconv.Quote(c.Value))
	}
	return f
}

// diffFields lists the fields that differ between old and new, by name.
func diffFields(old, new fields) []FieldDiff {
	var out []FieldDiff
	for k, nv := range new {
		if ov, ok := old[k]; !ok || ov != nv {
			out = append(out, FieldDiff{Name: k, Old: old[k], New: nv})
		}
	}
	for k, ov := range old {
		if _, ok := new[k]; !ok {
			out = append(out, FieldDiff{Name: k, Old: ov})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
