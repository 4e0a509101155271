package config

import (
	"fmt"
	"math/big"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// Load parses and validates the given files as one configuration. Names must
// be unique across all files.
func Load(files ...string) (*Config, hcl.Diagnostics) {
	cfg := &Config{}
	var diags hcl.Diagnostics
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read configuration file",
				Detail:   fmt.Sprintf("%v; check the path given to coffre", err),
			})
			continue
		}
		c, d := parseFile(src, f)
		diags = append(diags, d...)
		cfg.merge(c)
	}
	diags = append(diags, cfg.checkDuplicates()...)
	return cfg, diags
}

// Parse parses and validates one configuration file's contents; filename is
// used in diagnostics.
func Parse(src []byte, filename string) (*Config, hcl.Diagnostics) {
	cfg, diags := parseFile(src, filename)
	diags = append(diags, cfg.checkDuplicates()...)
	return cfg, diags
}

func (c *Config) merge(o *Config) {
	c.Vaults = append(c.Vaults, o.Vaults...)
	c.Resources = append(c.Resources, o.Resources...)
	c.Plans = append(c.Plans, o.Plans...)
	c.Notifications = append(c.Notifications, o.Notifications...)
	c.Environments = append(c.Environments, o.Environments...)
}

var rootSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "vault", LabelNames: []string{"name"}},
	{Type: "resource", LabelNames: []string{"type", "name"}},
	{Type: "plan", LabelNames: []string{"name"}},
	{Type: "notification", LabelNames: []string{"name"}},
	{Type: "environment", LabelNames: []string{"name"}},
}}

func parseFile(src []byte, filename string) (*Config, hcl.Diagnostics) {
	cfg := &Config{}
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return cfg, diags
	}
	content, d := file.Body.Content(rootSchema)
	diags = append(diags, d...)
	dc := &decoder{ctx: evalContext()}
	for _, b := range content.Blocks {
		switch b.Type {
		case "vault":
			if v := dc.vault(b); v != nil {
				cfg.Vaults = append(cfg.Vaults, v)
			}
		case "resource":
			if r := dc.resource(b); r != nil {
				cfg.Resources = append(cfg.Resources, r)
			}
		case "plan":
			if p := dc.plan(b); p != nil {
				cfg.Plans = append(cfg.Plans, p)
			}
		case "notification":
			if n := dc.notification(b); n != nil {
				cfg.Notifications = append(cfg.Notifications, n)
			}
		case "environment":
			if e := dc.environment(b); e != nil {
				cfg.Environments = append(cfg.Environments, e)
			}
		}
	}
	diags = append(diags, dc.diags...)
	for _, p := range cfg.Plans {
		for _, r := range p.Rules {
			diags = append(diags, validateRule(p.Name, r)...)
		}
	}
	for _, v := range cfg.Vaults {
		diags = append(diags, validateVault(v)...)
	}
	return cfg, diags
}

// evalContext provides the env and file functions. They return reference
// values ("env:NAME", "file:PATH"), never the secret itself.
func evalContext() *hcl.EvalContext {
	return &hcl.EvalContext{Functions: map[string]function.Function{
		"env":  refFunc("env"),
		"file": refFunc("file"),
	}}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func refFunc(kind string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			s := args[0].AsString()
			switch {
			case kind == "env" && !envName.MatchString(s):
				return cty.NilVal, function.NewArgErrorf(0, "%q is not an environment variable name", s)
			case kind == "file" && s == "":
				return cty.NilVal, function.NewArgErrorf(0, "the file path is empty")
			}
			return cty.StringVal(kind + ":" + s), nil
		},
	})
}

// decoder accumulates diagnostics while decoding blocks.
type decoder struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &r,
	})
}

func diag(rng hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: &r}
}

func origin(r hcl.Range) string { return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line) }

// content decodes a block body against a schema, recording the range of
// every attribute present under its name.
func (d *decoder) content(body hcl.Body, schema *hcl.BodySchema, ranges map[string]hcl.Range) *hcl.BodyContent {
	c, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)
	for name, a := range c.Attributes {
		if ranges != nil {
			ranges[name] = a.Expr.Range()
		}
	}
	return c
}

// value evaluates an attribute; ok is false when it is absent, null or in
// error.
func (d *decoder) value(attrs hcl.Attributes, name string, want cty.Type) (cty.Value, bool) {
	a, ok := attrs[name]
	if !ok {
		return cty.NilVal, false
	}
	v, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || v.IsNull() {
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, want)
	if err != nil {
		d.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s: %s expected: %v", name, want.FriendlyName(), err)
		return cty.NilVal, false
	}
	if !cv.IsWhollyKnown() {
		d.errorf(a.Expr.Range(), "Unknown value", "%s: the value must be known when the configuration is loaded", name)
		return cty.NilVal, false
	}
	return cv, true
}

func (d *decoder) str(attrs hcl.Attributes, name string, dst *string) bool {
	v, ok := d.value(attrs, name, cty.String)
	if ok {
		*dst = v.AsString()
	}
	return ok
}

func (d *decoder) boolean(attrs hcl.Attributes, name string, dst *bool) bool {
	v, ok := d.value(attrs, name, cty.Bool)
	if ok {
		*dst = v.True()
	}
	return ok
}

// posInt decodes a positive whole number (days or minutes).
func (d *decoder) posInt(attrs hcl.Attributes, name string, dst *int) bool {
	v, ok := d.value(attrs, name, cty.Number)
	if !ok {
		return false
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || n < 1 || n > 100_000_000 {
		d.errorf(attrs[name].Expr.Range(), "Invalid number", "%s must be a whole number from 1 to 100000000, not %s", name, bf.Text('g', 10))
		return false
	}
	*dst = int(n)
	return true
}

func (d *decoder) strList(attrs hcl.Attributes, name string, dst *[]string) bool {
	v, ok := d.value(attrs, name, cty.List(cty.String))
	if !ok {
		return false
	}
	out := []string{}
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			d.errorf(attrs[name].Expr.Range(), "Invalid list element", "%s must not contain null", name)
			return false
		}
		out = append(out, e.AsString())
	}
	*dst = out
	return true
}

func (d *decoder) strMap(attrs hcl.Attributes, name string, dst *map[string]string) bool {
	v, ok := d.value(attrs, name, cty.Map(cty.String))
	if !ok {
		return false
	}
	out := map[string]string{}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if e.IsNull() {
			d.errorf(attrs[name].Expr.Range(), "Invalid map element", "%s[%q] must not be null", name, k.AsString())
			return false
		}
		out[k.AsString()] = e.AsString()
	}
	*dst = out
	return true
}

func (d *decoder) atMostOne(blocks hcl.Blocks, typ, where string) *hcl.Block {
	if len(blocks) > 1 {
		d.errorf(blocks[1].DefRange, "Duplicate block", "%s: only one %s block is allowed (the first is at %s)", where, typ, origin(blocks[0].DefRange))
	}
	if len(blocks) == 0 {
		return nil
	}
	return blocks[0]
}

var vaultSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "location", Required: true}, {Name: "kms_key"}, {Name: "region"}, {Name: "tags"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "lock"}},
}

var lockSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "mode", Required: true}, {Name: "min_retention_days"}, {Name: "max_retention_days"},
}}

func (d *decoder) vault(b *hcl.Block) *Vault {
	v := &Vault{Name: b.Labels[0], Origin: origin(b.DefRange), decl: b.DefRange, ranges: map[string]hcl.Range{}}
	c := d.content(b.Body, vaultSchema, v.ranges)
	d.str(c.Attributes, "location", &v.Location)
	d.str(c.Attributes, "kms_key", &v.KMSKey)
	d.str(c.Attributes, "region", &v.Region)
	d.strMap(c.Attributes, "tags", &v.Tags)
	if lb := d.atMostOne(c.Blocks.OfType("lock"), "lock", fmt.Sprintf("vault %q", v.Name)); lb != nil {
		v.Lock = &Lock{}
		v.ranges["lock"] = lb.DefRange
		lc := d.content(lb.Body, lockSchema, nil)
		d.str(lc.Attributes, "mode", &v.Lock.Mode)
		d.posInt(lc.Attributes, "min_retention_days", &v.Lock.MinRetentionDays)
		d.posInt(lc.Attributes, "max_retention_days", &v.Lock.MaxRetentionDays)
	}
	return v
}

var resourceSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "id"}, {Name: "settings"}, {Name: "tags"}}}

// secretKeys are the setting names (or "_name" suffixes) whose values must
// be given by reference.
var secretKeys = []string{"password", "secret", "token", "key"}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretKeys {
		if k == s || strings.HasSuffix(k, "_"+s) {
			return true
		}
	}
	return false
}

func (d *decoder) resource(b *hcl.Block) *Resource {
	r := &Resource{Type: b.Labels[0], Name: b.Labels[1], Origin: origin(b.DefRange), decl: b.DefRange, ranges: map[string]hcl.Range{}}
	where := fmt.Sprintf("resource %q %q", r.Type, r.Name)
	if !validResourceType(r.Type) {
		d.errorf(b.LabelRanges[0], "Unknown resource type", "%s: unknown resource type %q; use one of %s", where, r.Type, strings.Join(ResourceTypes, ", "))
	}
	c := d.content(b.Body, resourceSchema, r.ranges)
	d.str(c.Attributes, "id", &r.ID)
	d.strMap(c.Attributes, "tags", &r.Tags)
	if a, ok := c.Attributes["settings"]; ok {
		d.settings(r, a, where)
	}
	return r
}

func validResourceType(t string) bool {
	for _, x := range ResourceTypes {
		if x == t {
			return true
		}
	}
	return false
}

// settings decodes a resource's settings object. Secret keys must be given
// by a direct env() or file() call; any value given that way is recorded as
// a SecretRef.
func (d *decoder) settings(r *Resource, a *hcl.Attribute, where string) {
	obj, ok := a.Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		d.errorf(a.Expr.Range(), "Invalid settings", "%s: settings must be an object written in place, like { host = \"db\", password = env(\"PGPASSWORD\") }", where)
		return
	}
	r.Settings = map[string]string{}
	for _, item := range obj.Items {
		kv, diags := item.KeyExpr.Value(nil)
		d.diags = append(d.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		if kv.IsNull() || kv.Type() != cty.String {
			d.errorf(item.KeyExpr.Range(), "Invalid settings key", "%s: settings keys must be names or strings", where)
			continue
		}
		key := kv.AsString()
		if _, dup := r.Settings[key]; dup {
			d.errorf(item.KeyExpr.Range(), "Duplicate setting", "%s: settings.%s is set twice", where, key)
			continue
		}
		call, isCall := item.ValueExpr.(*hclsyntax.FunctionCallExpr)
		isRef := isCall && (call.Name == "env" || call.Name == "file")
		if isSecretKey(key) && !isRef {
			d.errorf(item.ValueExpr.Range(), "Literal secret", "%s: settings.%s is a secret and must not be written in the configuration; use env(\"…\") or file(\"…\")", where, key)
			continue
		}
		v, diags := item.ValueExpr.Value(d.ctx)
		d.diags = append(d.diags, diags...)
		if diags.HasErrors() {
			continue
		}
		sv, err := convert.Convert(v, cty.String)
		if err != nil || sv.IsNull() || !sv.IsWhollyKnown() {
			d.errorf(item.ValueExpr.Range(), "Invalid setting", "%s: settings.%s must be a string, number or bool", where, key)
			continue
		}
		r.Settings[key] = sv.AsString()
		if isRef {
			if r.Secrets == nil {
				r.Secrets = map[string]SecretRef{}
			}
			r.Secrets[key] = SecretRef{Kind: call.Name, Name: strings.TrimPrefix(sv.AsString(), call.Name+":")}
		}
	}
}

var planSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "region"}, {Name: "tags"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "rule", LabelNames: []string{"name"}},
		{Type: "selection", LabelNames: []string{"name"}},
	},
}

var ruleSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "schedule", Required: true}, {Name: "timezone"},
		{Name: "start_window_minutes"}, {Name: "completion_window_minutes"},
		{Name: "target_vault", Required: true}, {Name: "continuous_backup"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "lifecycle"}, {Type: "copy_action"}},
}

var lifecycleSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "move_to_cold_storage_after_days"}, {Name: "delete_after_days"},
}}

var copySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "destination_vault", Required: true}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "lifecycle"}},
}

var selectionSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "resources"}, {Name: "not_resources"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "condition"}},
}

var conditionOps = []string{"string_equals", "string_not_equals", "string_like", "string_not_like"}

var conditionSchema = func() *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, op := range conditionOps {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: op})
	}
	return s
}()

func (d *decoder) plan(b *hcl.Block) *Plan {
	p := &Plan{Name: b.Labels[0], Origin: origin(b.DefRange), decl: b.DefRange, ranges: map[string]hcl.Range{},
		Rules: []*Rule{}, Selections: []*Selection{}}
	c := d.content(b.Body, planSchema, p.ranges)
	d.str(c.Attributes, "region", &p.Region)
	d.strMap(c.Attributes, "tags", &p.Tags)
	rules := map[string]hcl.Range{}
	sels := map[string]hcl.Range{}
	for _, rb := range c.Blocks {
		name := rb.Labels[0]
		switch rb.Type {
		case "rule":
			if first, dup := rules[name]; dup {
				d.errorf(rb.DefRange, "Duplicate rule", "plan %q: rule %q is already declared at %s", p.Name, name, origin(first))
				continue
			}
			rules[name] = rb.DefRange
			p.Rules = append(p.Rules, d.rule(p.Name, rb))
		case "selection":
			if first, dup := sels[name]; dup {
				d.errorf(rb.DefRange, "Duplicate selection", "plan %q: selection %q is already declared at %s", p.Name, name, origin(first))
				continue
			}
			sels[name] = rb.DefRange
			p.Selections = append(p.Selections, d.selection(rb))
		}
	}
	if len(p.Rules) == 0 {
		d.errorf(b.DefRange, "Plan without rules", "plan %q: a plan needs at least one rule block", p.Name)
	}
	return p
}

func (d *decoder) rule(plan string, b *hcl.Block) *Rule {
	r := &Rule{Name: b.Labels[0], decl: b.DefRange, ranges: map[string]hcl.Range{}}
	c := d.content(b.Body, ruleSchema, r.ranges)
	d.str(c.Attributes, "schedule", &r.Schedule)
	d.str(c.Attributes, "timezone", &r.Timezone)
	d.posInt(c.Attributes, "start_window_minutes", &r.StartWindowMinutes)
	d.posInt(c.Attributes, "completion_window_minutes", &r.CompletionWindowMinutes)
	d.str(c.Attributes, "target_vault", &r.TargetVault)
	d.boolean(c.Attributes, "continuous_backup", &r.ContinuousBackup)
	where := fmt.Sprintf("plan %q rule %q", plan, r.Name)
	if lb := d.atMostOne(c.Blocks.OfType("lifecycle"), "lifecycle", where); lb != nil {
		r.Lifecycle = d.lifecycle(lb)
		r.ranges["lifecycle"] = lb.DefRange
	}
	for _, cb := range c.Blocks.OfType("copy_action") {
		ca := &CopyAction{decl: cb.DefRange, ranges: map[string]hcl.Range{}}
		cc := d.content(cb.Body, copySchema, ca.ranges)
		d.str(cc.Attributes, "destination_vault", &ca.DestinationVault)
		if lb := d.atMostOne(cc.Blocks.OfType("lifecycle"), "lifecycle", where+" copy_action"); lb != nil {
			ca.Lifecycle = d.lifecycle(lb)
			ca.ranges["lifecycle"] = lb.DefRange
		}
		r.CopyActions = append(r.CopyActions, ca)
	}
	normalizeRule(r)
	return r
}

// normalizeRule fills defaults: UTC, AWS Backup's default windows.
func normalizeRule(r *Rule) {
	if r.Timezone == "" {
		r.Timezone = "UTC"
	}
	if r.StartWindowMinutes == 0 {
		r.StartWindowMinutes = DefaultStartWindowMinutes
	}
	if r.CompletionWindowMinutes == 0 {
		r.CompletionWindowMinutes = DefaultCompletionWindowMinutes
	}
}

func (d *decoder) lifecycle(b *hcl.Block) *Lifecycle {
	l := &Lifecycle{}
	c := d.content(b.Body, lifecycleSchema, nil)
	d.posInt(c.Attributes, "move_to_cold_storage_after_days", &l.MoveToColdStorageAfterDays)
	d.posInt(c.Attributes, "delete_after_days", &l.DeleteAfterDays)
	return l
}

func (d *decoder) selection(b *hcl.Block) *Selection {
	s := &Selection{Name: b.Labels[0], decl: b.DefRange}
	c := d.content(b.Body, selectionSchema, nil)
	d.strList(c.Attributes, "resources", &s.Resources)
	d.strList(c.Attributes, "not_resources", &s.NotResources)
	for _, cb := range c.Blocks {
		cc := d.content(cb.Body, conditionSchema, nil)
		for _, op := range conditionOps {
			var m map[string]string
			if d.strMap(cc.Attributes, op, &m) {
				for k, v := range m {
					s.Conditions = append(s.Conditions, Condition{Op: op, Key: k, Value: v})
				}
			}
		}
	}
	sort.Slice(s.Conditions, func(i, j int) bool {
		a, b := s.Conditions[i], s.Conditions[j]
		if a.Op != b.Op {
			return a.Op < b.Op
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Value < b.Value
	})
	if len(s.Resources) == 0 && len(s.Conditions) == 0 {
		d.errorf(b.DefRange, "Empty selection", "selection %q selects nothing: set resources or a condition block", s.Name)
	}
	return s
}

var notificationSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "events", Required: true}, {Name: "email"}, {Name: "webhook"}, {Name: "region"},
}}

// Events are the backup vault events a notification may subscribe to (AWS
// Backup's BackupVaultEvents).
var Events = []string{
	"BACKUP_JOB_STARTED", "BACKUP_JOB_COMPLETED", "BACKUP_JOB_SUCCESSFUL", "BACKUP_JOB_FAILED", "BACKUP_JOB_EXPIRED",
	"COPY_JOB_STARTED", "COPY_JOB_SUCCESSFUL", "COPY_JOB_FAILED",
	"RESTORE_JOB_STARTED", "RESTORE_JOB_COMPLETED", "RESTORE_JOB_SUCCESSFUL", "RESTORE_JOB_FAILED",
	"RECOVERY_POINT_MODIFIED", "BACKUP_PLAN_CREATED", "BACKUP_PLAN_MODIFIED",
	"S3_BACKUP_OBJECT_FAILED", "S3_RESTORE_OBJECT_FAILED",
}

func (d *decoder) notification(b *hcl.Block) *Notification {
	n := &Notification{Name: b.Labels[0], Origin: origin(b.DefRange), decl: b.DefRange, ranges: map[string]hcl.Range{}}
	c := d.content(b.Body, notificationSchema, n.ranges)
	d.strList(c.Attributes, "events", &n.Events)
	d.str(c.Attributes, "email", &n.Email)
	d.str(c.Attributes, "webhook", &n.Webhook)
	d.str(c.Attributes, "region", &n.Region)
	where := fmt.Sprintf("notification %q", n.Name)
	for _, e := range n.Events {
		if !contains(Events, e) {
			d.errorf(n.ranges["events"], "Unknown event", "%s: unknown event %q; use one of %s", where, e, strings.Join(Events, ", "))
		}
	}
	if n.Email != "" && !strings.Contains(n.Email, "@") {
		d.errorf(n.ranges["email"], "Invalid email", "%s: %q is not an email address", where, n.Email)
	}
	if n.Webhook != "" && !strings.HasPrefix(n.Webhook, "https://") && !strings.HasPrefix(n.Webhook, "http://") {
		d.errorf(n.ranges["webhook"], "Invalid webhook", "%s: webhook %q must be an http:// or https:// URL", where, n.Webhook)
	}
	if n.Email == "" && n.Webhook == "" {
		d.errorf(b.DefRange, "Notification without target", "%s: set email or webhook", where)
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
