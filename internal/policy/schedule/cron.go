package schedule

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

const (
	minYear = 1970
	maxYear = 2199
)

// bitset holds up to 256 small integers, stored as value-min of their field.
type bitset [4]uint64

func (b *bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }
func (b *bitset) has(i int) bool { return i >= 0 && i < 256 && b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b *bitset) empty() bool    { return b[0]|b[1]|b[2]|b[3] == 0 }

// next returns the smallest member >= i, or -1.
func (b *bitset) next(i int) int {
	if i < 0 {
		i = 0
	}
	for w := i >> 6; w < 4; w++ {
		word := b[w]
		if w == i>>6 {
			word &= ^uint64(0) << (uint(i) & 63)
		}
		if word != 0 {
			return w<<6 + bits.TrailingZeros64(word)
		}
	}
	return -1
}

type field struct {
	name     string
	min, max int
	names    map[string]int
	noStep   bool // "/" not allowed (day-of-week)
}

var (
	monthNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12}
	dayNames   = map[string]int{"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}

	fMinutes = field{name: "minutes", min: 0, max: 59}
	fHours   = field{name: "hours", min: 0, max: 23}
	fDOM     = field{name: "day-of-month", min: 1, max: 31}
	fMonth   = field{name: "month", min: 1, max: 12, names: monthNames}
	fDOW     = field{name: "day-of-week", min: 1, max: 7, names: dayNames, noStep: true}
	fYear    = field{name: "year", min: minYear, max: maxYear}
)

// cronSchedule is a parsed cron(...) expression.
type cronSchedule struct {
	expr string
	loc  *time.Location

	minutes, hours, months, years bitset // offset by the field's min

	domAny  bool   // day-of-month is "?"
	domDays bitset // plain days (offset 1)
	domLast bool   // "L"
	domNear int    // "nW": n, or 0

	dowAny     bool   // day-of-week is "?"
	dowDays    bitset // plain days 1-7 (offset 1)
	dowLast    int    // "nL": weekday n (1-7), or 0
	dowNth     int    // "n#k": k (1-5), or 0
	dowNthDays int    // "n#k": n
}

func (c *cronSchedule) String() string { return c.expr }

func parseCron(expr, inner string, loc *time.Location) (*cronSchedule, error) {
	fail := func(f, format string, args ...any) error {
		return &ParseError{Expr: expr, Field: f, Msg: fmt.Sprintf(format, args...)}
	}
	fs := strings.Fields(inner)
	if len(fs) != 6 {
		return nil, fail("", "expected 6 fields (Minutes Hours Day-of-month Month Day-of-week Year), got %d", len(fs))
	}
	c := &cronSchedule{expr: "cron(" + strings.ToUpper(strings.Join(fs, " ")) + ")", loc: loc}
	var err error
	if c.minutes, err = parseList(fMinutes, fs[0]); err != nil {
		return nil, fail(fMinutes.name, "%s", err)
	}
	if c.hours, err = parseList(fHours, fs[1]); err != nil {
		return nil, fail(fHours.name, "%s", err)
	}
	if err = c.parseDOM(fs[2]); err != nil {
		return nil, fail(fDOM.name, "%s", err)
	}
	if c.months, err = parseList(fMonth, fs[3]); err != nil {
		return nil, fail(fMonth.name, "%s", err)
	}
	if err = c.parseDOW(fs[4]); err != nil {
		return nil, fail(fDOW.name, "%s", err)
	}
	if c.years, err = parseList(fYear, fs[5]); err != nil {
		return nil, fail(fYear.name, "%s", err)
	}
	switch {
	case c.domAny && c.dowAny:
		return nil, fail("day-of-month/day-of-week", `"?" is in both; use "?" in exactly one of them`)
	case !c.domAny && !c.dowAny:
		return nil, fail("day-of-month/day-of-week", `%q and %q are both specified; AWS requires "?" in one of them`, fs[2], fs[4])
	}
	if !c.domAny && !c.domLast {
		// Reject day-of-month values that no selected month ever has.
		longest := 0
		for m := 1; m <= 12; m++ {
			if c.months.has(m - 1) {
				longest = max(longest, c.longestMonth(m))
			}
		}
		first := c.domDays.next(0) + 1
		if c.domNear != 0 {
			first = c.domNear
		}
		if first > longest {
			return nil, fail(fDOM.name, "%q never occurs in month %q", fs[2], fs[3])
		}
	}
	return c, nil
}

// longestMonth is the most days month m has in any selected year.
func (c *cronSchedule) longestMonth(m int) int {
	if m != 2 {
		return daysIn(2001, m)
	}
	for y := c.years.next(0); y >= 0; y = c.years.next(y + 1) {
		if daysIn(y+minYear, 2) == 29 {
			return 29
		}
	}
	return 28
}

func (c *cronSchedule) parseDOM(s string) error {
	u := strings.ToUpper(s)
	if strings.Contains(u, ",") {
		for item := range strings.SplitSeq(u, ",") {
			if strings.HasPrefix(item, "L") || strings.HasSuffix(item, "W") {
				return fmt.Errorf(`%q: "L" and "nW" must be the whole day-of-month field`, s)
			}
		}
	}
	switch {
	case u == "?":
		c.domAny = true
		return nil
	case u == "L":
		c.domLast = true
		return nil
	case u == "LW":
		return fmt.Errorf(`%q is not supported: AWS documents only "L" and "nW"`, s)
	case strings.HasPrefix(u, "L-"):
		return fmt.Errorf(`%q is not supported: AWS documents no "L-n" offset`, s)
	case strings.HasSuffix(u, "W"):
		n, err := number(fDOM, s[:len(s)-1])
		if err != nil {
			return fmt.Errorf(`%q: "W" takes a single day, e.g. 15W: %v`, s, err)
		}
		c.domNear = n
		return nil
	}
	var err error
	c.domDays, err = parseList(fDOM, s)
	return err
}

func (c *cronSchedule) parseDOW(s string) error {
	u := strings.ToUpper(s)
	switch {
	case u == "?":
		c.dowAny = true
		return nil
	case strings.Contains(s, "#"):
		if strings.Contains(s, ",") {
			return fmt.Errorf(`%q: with "#", day-of-week must hold a single expression`, s)
		}
		d, k, _ := strings.Cut(s, "#")
		n, err := value(fDOW, d)
		if err != nil {
			return fmt.Errorf(`%q: %v`, s, err)
		}
		if !digits(k) || len(k) > 1 || k < "1" || k > "5" {
			return fmt.Errorf(`%q: the instance after "#" must be 1-5`, s)
		}
		c.dowNthDays, c.dowNth = n, int(k[0]-'0')
		return nil
	case u == "L":
		c.dowDays.set(7 - 1) // last day of the week: Saturday
		return nil
	case strings.HasSuffix(u, "L") && !strings.ContainsAny(s, ",-/*"):
		n, err := value(fDOW, s[:len(s)-1])
		if err != nil {
			return fmt.Errorf(`%q: %v`, s, err)
		}
		c.dowLast = n
		return nil
	}
	for item := range strings.SplitSeq(u, ",") {
		if strings.HasSuffix(item, "L") {
			return fmt.Errorf(`%q: "L" and "nL" must be the whole day-of-week field`, s)
		}
	}
	var err error
	c.dowDays, err = parseList(fDOW, s)
	return err
}

// parseList parses a list of "*", "v", "a-b", "*/n", "a/n" and "a-b/n".
func parseList(f field, s string) (bitset, error) {
	var b bitset
	for item := range strings.SplitSeq(s, ",") {
		if item == "" {
			return b, fmt.Errorf("empty list item in %q", s)
		}
		if strings.Contains(item, "?") {
			if f.name == fDOM.name || f.name == fDOW.name {
				return b, fmt.Errorf(`%q: "?" must be the whole field`, item)
			}
			return b, fmt.Errorf(`%q: "?" is only allowed in day-of-month or day-of-week`, item)
		}
		base, stepText, hasStep := strings.Cut(item, "/")
		if hasStep && f.noStep {
			return b, fmt.Errorf(`%q: "/" is not allowed in %s`, item, f.name)
		}
		var lo, hi int
		if base == "*" {
			lo, hi = f.min, f.max
		} else if a, z, isRange := strings.Cut(base, "-"); isRange {
			var err error
			if lo, err = value(f, a); err != nil {
				return b, err
			}
			if hi, err = value(f, z); err != nil {
				return b, err
			}
			if lo > hi {
				return b, fmt.Errorf("range %q is reversed (ranges must not wrap)", base)
			}
		} else {
			var err error
			if lo, err = value(f, base); err != nil {
				return b, err
			}
			hi = lo
			if hasStep {
				hi = f.max
			}
		}
		step := 1
		if hasStep {
			limit := f.max - f.min
			n, err := strconv.Atoi(stepText)
			if !digits(stepText) || err != nil || n < 1 || n > limit {
				return b, fmt.Errorf("step %q in %q must be between 1 and %d", stepText, item, limit)
			}
			step = n
		}
		for v := lo; v <= hi; v += step {
			b.set(v - f.min)
		}
	}
	return b, nil
}

// value parses a number or a case-insensitive name.
func value(f field, s string) (int, error) {
	if n, ok := f.names[strings.ToUpper(s)]; ok {
		return n, nil
	}
	return number(f, s)
}

func number(f field, s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing value")
	}
	if !digits(s) {
		if f.names != nil {
			return 0, fmt.Errorf("%q is not a number %d-%d or a name", s, f.min, f.max)
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < f.min || n > f.max {
		return 0, fmt.Errorf("%s is out of range %d-%d", s, f.min, f.max)
	}
	return n, nil
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// weekday returns 1 (Sunday) to 7 (Saturday).
func weekday(y, m, d int) int {
	return int(time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Weekday()) + 1
}

// dayMatches reports whether day d of month m of year y is selected.
func (c *cronSchedule) dayMatches(y, m, d int) bool {
	dim := daysIn(y, m)
	if !c.domAny {
		switch {
		case c.domLast:
			return d == dim
		case c.domNear != 0:
			return d == nearestWeekday(y, m, c.domNear, dim)
		}
		return c.domDays.has(d - 1)
	}
	wd := weekday(y, m, d)
	switch {
	case c.dowLast != 0:
		return wd == c.dowLast && d+7 > dim
	case c.dowNth != 0:
		return wd == c.dowNthDays && (d-1)/7+1 == c.dowNth
	}
	return c.dowDays.has(wd - 1)
}

// nearestWeekday is the Monday-Friday nearest day n of the month, without
// leaving the month; 0 if the month has no day n.
func nearestWeekday(y, m, n, dim int) int {
	if n > dim {
		return 0
	}
	switch weekday(y, m, n) {
	case 7: // Saturday: Friday before, or Monday after if n is the 1st
		if n == 1 {
			return n + 2
		}
		return n - 1
	case 1: // Sunday: Monday after, or Friday before if n is the last day
		if n == dim {
			return n - 2
		}
		return n + 1
	}
	return n
}

// wall is a wall-clock minute, unattached to any time zone.
type wall struct{ y, mo, d, h, mi int }

func (w wall) before(v wall) bool {
	a := [5]int{w.y, w.mo, w.d, w.h, w.mi}
	b := [5]int{v.y, v.mo, v.d, v.h, v.mi}
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func wallOf(t time.Time) wall {
	y, mo, d := t.Date()
	h, mi, _ := t.Clock()
	return wall{y, int(mo), d, h, mi}
}

// nextWall returns the first wall-clock minute >= w (w may overflow by one
// unit in any field) that the expression selects. It steps by year, month,
// day, hour and minute fields, so it never scans minute by minute.
func (c *cronSchedule) nextWall(w wall) (wall, bool) {
	y, mo, d, h, mi := w.y, w.mo, w.d, w.h, w.mi
	for {
		if mi > 59 {
			mi = 0
			h++
		}
		if h > 23 {
			h = 0
			d++
		}
		if mo > 12 {
			mo = 1
			y++
		}
		if y > maxYear {
			return wall{}, false
		}
		if d > daysIn(y, mo) {
			d, h, mi = 1, 0, 0
			mo++
			continue
		}
		if !c.years.has(y - minYear) {
			ny := c.years.next(max(y-minYear, 0))
			if ny < 0 {
				return wall{}, false
			}
			y, mo, d, h, mi = ny+minYear, 1, 1, 0, 0
			continue
		}
		if !c.months.has(mo - 1) {
			nm := c.months.next(mo - 1)
			if nm < 0 {
				y, mo, d, h, mi = y+1, 1, 1, 0, 0
			} else {
				mo, d, h, mi = nm+1, 1, 0, 0
			}
			continue
		}
		if !c.dayMatches(y, mo, d) {
			d, h, mi = d+1, 0, 0
			continue
		}
		if !c.hours.has(h) {
			nh := c.hours.next(h)
			if nh < 0 {
				d, h, mi = d+1, 0, 0
				continue
			}
			h, mi = nh, 0
		}
		if !c.minutes.has(mi) {
			nm := c.minutes.next(mi)
			if nm < 0 {
				h, mi = h+1, 0
				continue
			}
			mi = nm
		}
		return wall{y, mo, d, h, mi}, true
	}
}

// Next returns the first fire time strictly after t, in the schedule's
// location, or the zero Time if there is none up to the end of 2199.
//
// Fields are matched against the wall clock of the location. Around DST
// transitions:
//   - a selected wall time that does not exist (spring forward, e.g. 02:30
//     on the last Sunday of March in Europe/Paris) fires at the first valid
//     instant after the gap (03:00 CEST there); several selected times in the
//     same gap fire once, and a fire at the end of the gap that coincides
//     with one of those fires only once;
//   - a selected wall time that occurs twice (fall back) fires once, at its
//     first occurrence.
//
// Note: AWS's EventBridge Scheduler documentation says it skips invocations
// whose wall time does not exist; this package instead moves them to the end
// of the gap so that a daily backup is never lost.
func (c *cronSchedule) Next(t time.Time) time.Time {
	w := wallOf(t.In(c.loc))
	w.mi++ // the first candidate wall minute after t's
	for {
		nw, ok := c.nextWall(w)
		if !ok {
			return time.Time{}
		}
		// resolve is non-decreasing in wall order, and every wall minute
		// before or at t's resolves to t or earlier; so the first selected
		// wall minute resolving after t gives the earliest fire time.
		if r := c.resolve(nw); r.After(t) {
			return r
		}
		w = nw
		w.mi++
	}
}

// resolve maps a wall-clock minute to an instant in c.loc: its first
// occurrence if it exists, else the first valid instant after the gap.
func (c *cronSchedule) resolve(w wall) time.Time {
	r := time.Date(w.y, time.Month(w.mo), w.d, w.h, w.mi, 0, 0, c.loc)
	if c.loc == time.UTC {
		return r
	}
	got := wallOf(r)
	if got == w && r.Second() == 0 {
		// Does w also occur earlier, in the zone before r's (fall back)?
		start, _ := r.ZoneBounds()
		if start.IsZero() {
			return r
		}
		_, offPrev := start.Add(-time.Second).Zone()
		_, offCur := r.Zone()
		if offPrev > offCur {
			e := r.Add(-time.Duration(offPrev-offCur) * time.Second)
			if e.Before(start) && wallOf(e) == w {
				return e
			}
		}
		return r
	}
	// w is in a gap: r is just past it (take its zone's start) or just
	// before it (take its zone's end).
	start, end := r.ZoneBounds()
	if w.before(got) {
		if !start.IsZero() {
			return start
		}
	} else if !end.IsZero() {
		return end
	}
	return r
}
