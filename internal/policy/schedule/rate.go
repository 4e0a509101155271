package schedule

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// rateSchedule is a parsed rate(...) expression.
type rateSchedule struct {
	value  int
	unit   string // as written: minute(s), hour(s) or day(s)
	period int64  // seconds
	loc    *time.Location
}

var rateUnits = map[string]struct {
	seconds  int64
	singular bool
	other    string
}{
	"minute":  {60, true, "minutes"},
	"minutes": {60, false, "minute"},
	"hour":    {3600, true, "hours"},
	"hours":   {3600, false, "hour"},
	"day":     {86400, true, "days"},
	"days":    {86400, false, "day"},
}

func parseRate(expr, inner string, loc *time.Location) (*rateSchedule, error) {
	fail := func(f, format string, args ...any) error {
		return &ParseError{Expr: expr, Field: f, Msg: fmt.Sprintf(format, args...)}
	}
	fs := strings.Fields(inner)
	if len(fs) != 2 {
		return nil, fail("", "expected rate(value unit), e.g. rate(1 hour) or rate(12 hours)")
	}
	v, u := fs[0], fs[1]
	n, err := strconv.Atoi(v)
	if !digits(v) || err != nil {
		if digits(v) {
			return nil, fail("value", "%s is too large", v)
		}
		return nil, fail("value", "%q is not a positive integer", v)
	}
	if n == 0 {
		return nil, fail("value", "%q must be positive", v)
	}
	unit, ok := rateUnits[u]
	if !ok {
		return nil, fail("unit", "%q must be one of minute, minutes, hour, hours, day, days", u)
	}
	if n == 1 && !unit.singular {
		return nil, fail("unit", "%q must be singular (%q) when the value is 1", u, unit.other)
	}
	if n > 1 && unit.singular {
		return nil, fail("unit", "%q must be plural (%q) when the value is greater than 1", u, unit.other)
	}
	if int64(n) > math.MaxInt64/int64(time.Second)/unit.seconds {
		return nil, fail("value", "%s %s is too long", v, u)
	}
	return &rateSchedule{value: n, unit: u, period: int64(n) * unit.seconds, loc: loc}, nil
}

func (r *rateSchedule) String() string { return fmt.Sprintf("rate(%d %s)", r.value, r.unit) }

// Next returns the first fire time strictly after t. A rate schedule fires
// at every multiple of its period since the Unix epoch (1970-01-01T00:00:00
// UTC): rate(1 hour) on the hour, rate(1 day) and rate(24 hours) at 00:00 UTC,
// rate(7 days) on Thursdays at 00:00 UTC. AWS anchors a rate at the rule's
// creation time, which this package does not know; the epoch anchor makes
// fire times a pure function of the expression. DST never applies: the
// period is elapsed time. The result is in the location given to Parse.
func (r *rateSchedule) Next(t time.Time) time.Time {
	s := t.Unix()
	q := s / r.period
	if s%r.period < 0 {
		q-- // floor division for times before the epoch
	}
	if q+1 > math.MaxInt64/r.period {
		return time.Time{}
	}
	return time.Unix((q+1)*r.period, 0).In(r.loc)
}
