package config

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
)

// Expand expands the environment presets and applies the explicit blocks:
// an explicit vault, plan or notification with the same name as a preset
// one replaces it entirely (the whole block, not attribute by attribute).
// It then validates the preset rules like explicit ones and checks what
// needs the whole set: target and copy vaults exist, retentions fit vault
// locks. Two presets producing the same name is an error. The Config is not
// modified.
func (c *Config) Expand() (*Resolved, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	res := &Resolved{
		Vaults: []*Vault{}, Resources: []*Resource{}, Plans: []*Plan{}, Notifications: []*Notification{},
		KMSKeys: []*KMSKey{}, RestoreTests: []*RestoreTest{}, outputs: map[string]*envOutputs{},
	}
	vaults := map[string]*Vault{}
	plans := map[string]*Plan{}
	notes := map[string]*Notification{}
	tests := map[string]*RestoreTest{}
	keys := map[string]*KMSKey{}
	owner := map[string]string{} // "kind name" -> environment that produced it

	claim := func(kind, name string, e *Environment) bool {
		k := kind + " " + name
		if prev, ok := owner[k]; ok {
			diags = append(diags, diag(e.decl, "Duplicate "+kind, "environment %q: %s %q is also produced by environment %q; give the environments different names or backup_vault_name", e.Name, kind, name, prev))
			return false
		}
		owner[k] = e.Name
		return true
	}
	for _, e := range c.Environments {
		p := e.expand()
		diags = append(diags, p.diags...)
		if p.out != nil {
			res.outputs[e.Name] = p.out
		}
		for _, v := range p.vaults {
			if claim("vault", v.Name, e) {
				vaults[v.Name] = v
			}
		}
		for _, pl := range p.plans {
			if claim("plan", pl.Name, e) {
				plans[pl.Name] = pl
			}
		}
		for _, n := range p.notes {
			if claim("notification", n.Name, e) {
				notes[n.Name] = n
			}
		}
		for _, k := range p.keys {
			if claim("kms key", k.ID, e) {
				keys[k.ID] = k
			}
		}
		for _, t := range p.tests {
			if claim("restore test", t.Name, e) {
				tests[t.Name] = t
			}
		}
	}
	// Preset rules are checked here; explicit ones were checked by Parse.
	for _, pl := range plans {
		for _, r := range pl.Rules {
			diags = append(diags, validateRule(pl.Name, r)...)
		}
	}
	for _, v := range c.Vaults {
		vaults[v.Name] = v
	}
	for _, p := range c.Plans {
		plans[p.Name] = p
	}
	for _, n := range c.Notifications {
		notes[n.Name] = n
	}

	for _, name := range sortedKeys(vaults) {
		v := *vaults[name]
		v.ARN = VaultARN(v.Region, v.Name)
		res.Vaults = append(res.Vaults, &v)
	}
	for _, name := range sortedKeys(plans) {
		p := *plans[name]
		p.ARN = PlanARN(p.Region, p.Name)
		res.Plans = append(res.Plans, &p)
	}
	for _, name := range sortedKeys(notes) {
		n := *notes[name]
		n.ARN = TopicARN(n.Region, n.Name)
		res.Notifications = append(res.Notifications, &n)
	}
	for _, name := range sortedKeys(keys) {
		k := *keys[name]
		res.KMSKeys = append(res.KMSKeys, &k)
	}
	for _, name := range sortedKeys(tests) {
		t := *tests[name]
		res.RestoreTests = append(res.RestoreTests, &t)
	}
	for _, r := range c.Resources {
		cp := *r
		cp.ID = ResourceID(r)
		res.Resources = append(res.Resources, &cp)
	}
	sort.Slice(res.Resources, func(i, j int) bool {
		a, b := res.Resources[i], res.Resources[j]
		return fmt.Sprint(a.Type, " ", a.Name) < fmt.Sprint(b.Type, " ", b.Name)
	})
	diags = append(diags, res.checkReferences()...)
	return res, diags
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
