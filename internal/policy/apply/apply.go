// Package apply compares a resolved HCL configuration with the catalog and reconciles them, Terraform-style: Diff computes a plan of changes, Apply carries it out, Format prints it.
package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/policy/config"
)

// Action is what a change does to a catalog object.
type Action string

// Actions.
const (
	Create Action = "create"
	Update Action = "update"
	Delete Action = "delete"
)

// Kind is the kind of catalog object a change touches.
type Kind string

// Kinds, in dependency order: a selection needs its plan, a plan's rules
// name vaults.
const (
	KindVault     Kind = "vault"
	KindResource  Kind = "resource"
	KindPlan      Kind = "plan"
	KindSelection Kind = "selection"
)

var kindOrder = map[Kind]int{KindVault: 0, KindResource: 1, KindPlan: 2, KindSelection: 3}

// FieldDiff is one field of a change: its old value ("" for a create or an
// unset field) and its new one ("" for a delete or an unset field).
type FieldDiff struct {
	Name string `json:"name"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
}

// Change is one catalog object to create, update or delete. Name is the
// catalog key: the vault or plan name, the resource id, or the selection's
// "PLAN/SELECTION" name (SelectionName).
type Change struct {
	Action Action      `json:"action"`
	Kind   Kind        `json:"kind"`
	Name   string      `json:"name"`
	Fields []FieldDiff `json:"fields,omitempty"`

	obj any // the desired catalog model, for create and update
}

// Plan is the ordered list of changes that makes the catalog match the
// configuration: sorted by kind (vault, resource, plan, selection) then name.
// Only a Plan returned by Diff can be applied.
type Plan struct {
	Changes []Change `json:"changes"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return p == nil || len(p.Changes) == 0 }

// Counts returns how many objects the plan creates, updates and deletes.
func (p *Plan) Counts() (create, update, del int) {
	if p == nil {
		return 0, 0, 0
	}
	for _, c := range p.Changes {
		switch c.Action {
		case Create:
			create++
		case Update:
			update++
		case Delete:
			del++
		}
	}
	return create, update, del
}

// Diff compares the desired vaults, resources, plans (with their rules) and
// selections of r with the catalog. The configuration files are taken to
// manage the whole catalog: every vault, resource, plan or selection in the
// catalog that r does not have is deleted. Notifications, KMS keys and
// restore tests have no catalog counterpart and are not compared.
func Diff(ctx context.Context, cat catalog.Catalog, r *config.Resolved) (*Plan, error) {
	p := &Plan{Changes: []Change{}}

	vaults, err := cat.ListVaults(ctx)
	if err != nil {
		return nil, err
	}
	cur := map[string]fields{}
	for _, v := range vaults {
		cur[v.Name] = vaultFields(v)
	}
	want := map[string]any{}
	wantFields := map[string]fields{}
	for _, v := range r.Vaults {
		m := toVault(v)
		want[m.Name], wantFields[m.Name] = m, vaultFields(m)
	}
	p.add(KindVault, cur, want, wantFields)

	resources, err := cat.ListResources(ctx, "")
	if err != nil {
		return nil, err
	}
	cur, want, wantFields = map[string]fields{}, map[string]any{}, map[string]fields{}
	for _, x := range resources {
		cur[x.ID] = resourceFields(x)
	}
	for _, x := range r.Resources {
		m := toResource(x)
		if _, dup := want[m.ID]; dup {
			return nil, fmt.Errorf("apply: two resources have the id %s", m.ID)
		}
		want[m.ID], wantFields[m.ID] = m, resourceFields(m)
	}
	p.add(KindResource, cur, want, wantFields)

	plans, err := cat.ListPlans(ctx)
	if err != nil {
		return nil, err
	}
	cur, want, wantFields = map[string]fields{}, map[string]any{}, map[string]fields{}
	for _, x := range plans {
		cur[x.Name] = planFields(x)
	}
	for _, x := range r.Plans {
		m := toPlan(x)
		want[m.Name], wantFields[m.Name] = m, planFields(m)
	}
	p.add(KindPlan, cur, want, wantFields)

	sels, err := cat.ListSelections(ctx, "")
	if err != nil {
		return nil, err
	}
	cur, want, wantFields = map[string]fields{}, map[string]any{}, map[string]fields{}
	for _, x := range sels {
		cur[x.Name] = selectionFields(x)
	}
	for _, pl := range r.Plans {
		for _, s := range pl.Selections {
			m := toSelection(pl.Name, s)
			if _, dup := want[m.Name]; dup {
				return nil, fmt.Errorf("apply: plan %q has two selections named %q", pl.Name, s.Name)
			}
			want[m.Name], wantFields[m.Name] = m, selectionFields(m)
		}
	}
	p.add(KindSelection, cur, want, wantFields)

	sort.SliceStable(p.Changes, func(i, j int) bool {
		a, b := p.Changes[i], p.Changes[j]
		if a.Kind != b.Kind {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		return a.Name < b.Name
	})
	return p, nil
}

// add appends the changes of one kind: creates and updates for the desired
// objects, deletes for the current ones the configuration no longer has.
func (p *Plan) add(kind Kind, cur map[string]fields, want map[string]any, wantFields map[string]fields) {
	for name, obj := range want {
		old, exists := cur[name]
		if !exists {
			p.Changes = append(p.Changes, Change{Action: Create, Kind: kind, Name: name, Fields: diffFields(fields{}, wantFields[name]), obj: obj})
			continue
		}
		if d := diffFields(old, wantFields[name]); len(d) > 0 {
			p.Changes = append(p.Changes, Change{Action: Update, Kind: kind, Name: name, Fields: d, obj: obj})
		}
	}
	for name, old := range cur {
		if _, ok := want[name]; !ok {
			p.Changes = append(p.Changes, Change{Action: Delete, Kind: kind, Name: name, Fields: diffFields(old, fields{})})
		}
	}
}

// Actor is the audit actor of the changes Apply makes.
const Actor = "coffre apply"

// Apply carries out a plan returned by Diff: creates and updates first, in
// dependency order (vaults, resources, plans, then selections), then deletes
// in reverse order (selections, plans, resources, vaults). Each change is
// recorded in the audit chain (actor "coffre apply", action "create vault",
// object the catalog key, outcome "ok", or "error" with the error as detail
// when the change fails). Apply stops at the first failed change; the
// changes before it stay applied, and a new Diff shows what is left.
func Apply(ctx context.Context, cat catalog.Catalog, p *Plan) error {
	if p.Empty() {
		return nil
	}
	var order []Change
	for _, c := range p.Changes {
		if c.Action != Delete {
			order = append(order, c)
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return kindOrder[order[i].Kind] < kindOrder[order[j].Kind] })
	var dels []Change
	for _, c := range p.Changes {
		if c.Action == Delete {
			dels = append(dels, c)
		}
	}
	sort.SliceStable(dels, func(i, j int) bool { return kindOrder[dels[i].Kind] > kindOrder[dels[j].Kind] })
	order = append(order, dels...)

	for _, c := range order {
		err := applyOne(ctx, cat, c)
		ev := catalog.AuditEvent{Actor: Actor, Action: string(c.Action) + " " + string(c.Kind), Object: c.Name, Outcome: "ok", Detail: detail(c)}
		if err != nil {
			ev.Outcome, ev.Detail = "error", err.Error()
		}
		if _, aerr := cat.AppendAudit(ctx, ev); aerr != nil {
			return errors.Join(err, fmt.Errorf("apply: audit %s %s %s: %w", c.Action, c.Kind, c.Name, aerr))
		}
		if err != nil {
			return fmt.Errorf("apply: %s %s %s: %w", c.Action, c.Kind, c.Name, err)
		}
	}
	return nil
}

func applyOne(ctx context.Context, cat catalog.Catalog, c Change) error {
	if c.Action == Delete {
		switch c.Kind {
		case KindVault:
			return cat.DeleteVault(ctx, c.Name)
		case KindResource:
			return cat.DeleteResource(ctx, c.Name)
		case KindPlan:
			return cat.DeletePlan(ctx, c.Name)
		case KindSelection:
			return cat.DeleteSelection(ctx, c.Name)
		}
		return fmt.Errorf("unknown kind %q", c.Kind)
	}
	switch o := c.obj.(type) {
	case catalog.Vault:
		return cat.PutVault(ctx, o)
	case catalog.Resource:
		return cat.PutResource(ctx, o)
	case catalog.Plan:
		return cat.PutPlan(ctx, o)
	case catalog.Selection:
		return cat.PutSelection(ctx, o)
	}
	return errors.New("the change has no desired object (only a plan returned by Diff can be applied)")
}

// detail summarises an update's fields for the audit event.
func detail(c Change) string {
	if c.Action != Update {
		return ""
	}
	parts := make([]string, 0, len(c.Fields))
	for _, f := range c.Fields {
		parts = append(parts, f.Name+": "+show(f.Old)+" → "+show(f.New))
	}
	return strings.Join(parts, "; ")
}

func show(v string) string {
	if v == "" {
		return "(unset)"
	}
	return v
}

var symbols = map[Action]string{Create: "+", Update: "~", Delete: "-"}

// Format prints the plan Terraform-style: one "+ KIND NAME" line per create,
// one "~ KIND NAME: FIELD OLD → NEW" line per changed field, one
// "- KIND NAME" line per delete, then the summary "Plan: N to create, M to
// change, K to delete." (or "No changes." for an empty plan) and the seed
// module's outputs of each environment preset.
func Format(w io.Writer, p *Plan, outputs map[string]config.Outputs) error {
	var b strings.Builder
	if p.Empty() {
		b.WriteString("No changes. The catalog matches the configuration.\n")
	} else {
		for _, c := range p.Changes {
			if c.Action == Update {
				for _, f := range c.Fields {
					fmt.Fprintf(&b, "~ %s %s: %s %s → %s\n", c.Kind, c.Name, f.Name, show(f.Old), show(f.New))
				}
				continue
			}
			fmt.Fprintf(&b, "%s %s %s\n", symbols[c.Action], c.Kind, c.Name)
		}
		cr, up, del := p.Counts()
		fmt.Fprintf(&b, "\nPlan: %d to create, %d to change, %d to delete.\n", cr, up, del)
	}
	if len(outputs) > 0 {
		b.WriteString("\nOutputs:\n")
		envs := make([]string, 0, len(outputs))
		for e := range outputs {
			envs = append(envs, e)
		}
		sort.Strings(envs)
		for _, e := range envs {
			o := outputs[e]
			line := func(k, v string) { fmt.Fprintf(&b, "  %s.%s = %q\n", e, k, v) }
			line("backup_vault_name", o.BackupVaultName)
			line("backup_vault_arn", o.BackupVaultARN)
			line("secondary_backup_vault_arn", o.SecondaryBackupVaultARN)
			plans := make([]string, 0, len(o.BackupPlanARNs))
			for pn := range o.BackupPlanARNs {
				plans = append(plans, pn)
			}
			sort.Strings(plans)
			for _, pn := range plans {
				line("backup_plan_arns["+pn+"]", o.BackupPlanARNs[pn])
			}
			line("backup_sns_topic_arn", o.BackupSNSTopicARN)
			line("kms_key_arn", o.KMSKeyARN)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
