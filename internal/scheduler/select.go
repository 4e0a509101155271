package scheduler

import (
	"strings"

	"github.com/coffre/coffre/internal/catalog"
)

// Selects reports whether selection s selects resource r, with AWS Backup
// semantics:
//   - r.ID matches one of s.Resources: exactly, or by prefix when the pattern
//     ends with "*" ("*" alone matches every resource). A selection with no
//     Resources but at least one condition selects every resource (the
//     configuration allows condition-only selections); a selection with
//     neither selects nothing;
//   - r.ID matches none of s.NotResources (same matching);
//   - every condition holds on r.Tags (conditions are ANDed). The key may be
//     given bare ("env") or AWS-style ("aws:ResourceTag/env"). StringEquals
//     and StringLike need the tag to be present; StringNotEquals and
//     StringNotLike hold when it is absent (IAM condition semantics).
//     StringLike values use "*" (any run of characters, possibly empty) and
//     "?" (exactly one character) as wildcards.
func Selects(s catalog.Selection, r catalog.Resource) bool {
	switch {
	case len(s.Resources) == 0 && len(s.Conditions) == 0:
		return false
	case len(s.Resources) > 0 && !matchAny(s.Resources, r.ID):
		return false
	case matchAny(s.NotResources, r.ID):
		return false
	}
	for _, c := range s.Conditions {
		if !conditionHolds(c, r.Tags) {
			return false
		}
	}
	return true
}

func matchAny(patterns []string, id string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(id, prefix) {
				return true
			}
		} else if p == id {
			return true
		}
	}
	return false
}

func conditionHolds(c catalog.Condition, tags map[string]string) bool {
	key := strings.TrimPrefix(c.Key, "aws:ResourceTag/")
	v, ok := tags[key]
	switch c.Op {
	case catalog.StringEquals:
		return ok && v == c.Value
	case catalog.StringNotEquals:
		return !ok || v != c.Value
	case catalog.StringLike:
		return ok && like(c.Value, v)
	case catalog.StringNotLike:
		return !ok || !like(c.Value, v)
	}
	return false // unknown operators never hold (the catalog refuses them)
}

// like matches s against pattern with "*" and "?" wildcards.
func like(pattern, s string) bool {
	p, t := []rune(pattern), []rune(s)
	pi, ti := 0, 0
	star, mark := -1, 0
	for ti < len(t) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ti
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == t[ti]):
			pi++
			ti++
		case star >= 0:
			pi = star + 1
			mark++
			ti = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
