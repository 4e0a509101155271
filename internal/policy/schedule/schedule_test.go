package schedule

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func utc(y int, mo time.Month, d, h, mi int) time.Time {
	return time.Date(y, mo, d, h, mi, 0, 0, time.UTC)
}

func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return loc
}

func mustParse(t testing.TB, expr string, loc *time.Location) Schedule {
	t.Helper()
	s, err := Parse(expr, loc)
	if err != nil {
		t.Fatalf("Parse(%q): %v", expr, err)
	}
	return s
}

// fires returns the first n fire times strictly after from.
func fires(s Schedule, from time.Time, n int) []time.Time {
	var out []time.Time
	for t := from; len(out) < n; {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func sameTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestNextUTC(t *testing.T) {
	tests := []struct {
		expr string
		from time.Time
		want []time.Time
	}{
		// The seed's schedules.
		{"cron(0 22 * * ? *)", utc(2026, 3, 10, 12, 0), []time.Time{utc(2026, 3, 10, 22, 0), utc(2026, 3, 11, 22, 0), utc(2026, 3, 12, 22, 0)}},
		{"cron(0 22 * * ? *)", utc(2026, 12, 31, 22, 0), []time.Time{utc(2027, 1, 1, 22, 0)}},
		{"cron(0 0 ? * SUN *)", utc(2026, 3, 10, 12, 0), []time.Time{utc(2026, 3, 15, 0, 0), utc(2026, 3, 22, 0, 0), utc(2026, 3, 29, 0, 0)}},
		{"cron(0 0 1 * ? *)", utc(2026, 1, 15, 0, 0), []time.Time{utc(2026, 2, 1, 0, 0), utc(2026, 3, 1, 0, 0)}},
		{"cron(0 0 1 * ? *)", utc(2026, 12, 1, 0, 0), []time.Time{utc(2027, 1, 1, 0, 0)}},
		{"cron(0 * * * ? *)", utc(2026, 3, 10, 10, 30), []time.Time{utc(2026, 3, 10, 11, 0), utc(2026, 3, 10, 12, 0)}},
		{"cron(0 * * * ? *)", utc(2026, 3, 10, 23, 0), []time.Time{utc(2026, 3, 11, 0, 0)}},
		{"rate(1 hour)", utc(2026, 3, 10, 10, 30), []time.Time{utc(2026, 3, 10, 11, 0), utc(2026, 3, 10, 12, 0)}},
		{"rate(24 hours)", utc(2026, 3, 10, 10, 30), []time.Time{utc(2026, 3, 11, 0, 0), utc(2026, 3, 12, 0, 0)}},
		{"rate(1 day)", utc(2026, 3, 10, 0, 0), []time.Time{utc(2026, 3, 11, 0, 0)}},
		{"rate(30 minutes)", utc(2026, 3, 10, 10, 29), []time.Time{utc(2026, 3, 10, 10, 30), utc(2026, 3, 10, 11, 0)}},
		{"rate(12 hours)", utc(2026, 3, 10, 10, 0), []time.Time{utc(2026, 3, 10, 12, 0), utc(2026, 3, 11, 0, 0)}},
		// 2026-01-01 is a whole number of weeks after the epoch (a Thursday).
		{"rate(7 days)", utc(2025, 12, 31, 0, 0), []time.Time{utc(2026, 1, 1, 0, 0), utc(2026, 1, 8, 0, 0)}},
		{"rate(1 minute)", time.Date(2026, 3, 10, 10, 0, 30, 0, time.UTC), []time.Time{utc(2026, 3, 10, 10, 1)}},
		{"rate(1 hour)", time.Date(1969, 12, 31, 22, 30, 0, 0, time.UTC), []time.Time{utc(1969, 12, 31, 23, 0), utc(1970, 1, 1, 0, 0)}},

		// L in day-of-month: last day, including leap February.
		{"cron(0 0 L * ? *)", utc(2026, 2, 10, 0, 0), []time.Time{utc(2026, 2, 28, 0, 0), utc(2026, 3, 31, 0, 0), utc(2026, 4, 30, 0, 0)}},
		{"cron(0 0 L 2 ? *)", utc(2027, 3, 1, 0, 0), []time.Time{utc(2028, 2, 29, 0, 0), utc(2029, 2, 28, 0, 0)}},
		// W: nearest weekday, never leaving the month.
		{"cron(0 9 15W * ? *)", utc(2026, 3, 1, 0, 0), []time.Time{utc(2026, 3, 16, 9, 0), utc(2026, 4, 15, 9, 0)}}, // Sun 15 Mar -> Mon 16; Wed 15 Apr
		{"cron(0 9 15W * ? *)", utc(2026, 8, 1, 0, 0), []time.Time{utc(2026, 8, 14, 9, 0)}},                         // Sat 15 Aug -> Fri 14
		{"cron(0 9 1W * ? *)", utc(2026, 7, 31, 0, 0), []time.Time{utc(2026, 8, 3, 9, 0)}},                          // Sat 1 Aug -> Mon 3, not Fri 31 Jul
		{"cron(0 9 31W * ? *)", utc(2026, 5, 1, 0, 0), []time.Time{utc(2026, 5, 29, 9, 0), utc(2026, 7, 31, 9, 0)}}, // Sun 31 May -> Fri 29; no 31st in June
		{"cron(0 9 3w * ? *)", utc(2026, 3, 1, 0, 0), []time.Time{utc(2026, 3, 3, 9, 0)}},
		// L and # in day-of-week.
		{"cron(0 0 ? * 5L *)", utc(2026, 3, 1, 0, 0), []time.Time{utc(2026, 3, 26, 0, 0), utc(2026, 4, 30, 0, 0)}},  // last Thursday
		{"cron(0 0 ? * thuL *)", utc(2026, 3, 1, 0, 0), []time.Time{utc(2026, 3, 26, 0, 0)}},                        // by name
		{"cron(0 0 ? * 3#2 *)", utc(2026, 3, 1, 0, 0), []time.Time{utc(2026, 3, 10, 0, 0), utc(2026, 4, 14, 0, 0)}}, // second Tuesday
		{"cron(0 0 ? * TUE#2 *)", utc(2026, 3, 10, 0, 0), []time.Time{utc(2026, 4, 14, 0, 0)}},                      // strictly after
		{"cron(0 0 ? * 1#5 *)", utc(2026, 3, 1, 0, 0), []time.Time{utc(2026, 3, 29, 0, 0), utc(2026, 5, 31, 0, 0)}}, // fifth Sunday
		{"cron(0 0 ? * L *)", utc(2026, 3, 10, 0, 0), []time.Time{utc(2026, 3, 14, 0, 0), utc(2026, 3, 21, 0, 0)}},  // L alone = Saturday
		{"cron(0 8,12,18 ? * MON-FRI *)", utc(2026, 3, 13, 13, 0), []time.Time{utc(2026, 3, 13, 18, 0), utc(2026, 3, 16, 8, 0)}},
		{"cron(0 0 ? * mon,wed,FRI *)", utc(2026, 3, 10, 0, 0), []time.Time{utc(2026, 3, 11, 0, 0), utc(2026, 3, 13, 0, 0), utc(2026, 3, 16, 0, 0)}},
		{"cron(0 0 ? * 1,7 *)", utc(2026, 3, 10, 0, 0), []time.Time{utc(2026, 3, 14, 0, 0), utc(2026, 3, 15, 0, 0)}}, // 1 = Sunday, 7 = Saturday
		// Years.
		{"cron(0 0 1 1 ? 2027-2028)", utc(2026, 6, 1, 0, 0), []time.Time{utc(2027, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0)}},
		{"cron(0 0 1 1 ? 2026,2030)", utc(2026, 6, 1, 0, 0), []time.Time{utc(2030, 1, 1, 0, 0)}},
		{"cron(0 0 1 1 ? 2020/5)", utc(2026, 6, 1, 0, 0), []time.Time{utc(2030, 1, 1, 0, 0), utc(2035, 1, 1, 0, 0)}},
		{"cron(0 0 1 1 ? 2020)", utc(2026, 6, 1, 0, 0), nil},
		{"cron(59 23 31 12 ? 2199)", utc(2199, 12, 31, 23, 59), nil},
		{"cron(0 0 1 1 ? *)", utc(1900, 6, 1, 0, 0), []time.Time{utc(1970, 1, 1, 0, 0)}},
		{"cron(0 0 29 2 ? *)", utc(2026, 1, 1, 0, 0), []time.Time{utc(2028, 2, 29, 0, 0), utc(2032, 2, 29, 0, 0)}},
		// Steps, ranges, lists, names.
		{"cron(10-50/20 * * * ? *)", utc(2026, 3, 10, 10, 0), []time.Time{utc(2026, 3, 10, 10, 10), utc(2026, 3, 10, 10, 30), utc(2026, 3, 10, 10, 50), utc(2026, 3, 10, 11, 10)}},
		{"cron(0 */6 * * ? *)", utc(2026, 3, 10, 7, 0), []time.Time{utc(2026, 3, 10, 12, 0), utc(2026, 3, 10, 18, 0), utc(2026, 3, 11, 0, 0)}},
		{"cron(1/10 * * * ? *)", utc(2026, 3, 10, 10, 51), []time.Time{utc(2026, 3, 10, 11, 1), utc(2026, 3, 10, 11, 11)}},
		{"cron(0 0 1 1/4 ? *)", utc(2026, 1, 1, 0, 0), []time.Time{utc(2026, 5, 1, 0, 0), utc(2026, 9, 1, 0, 0), utc(2027, 1, 1, 0, 0)}},
		{"cron(0 0 1 jan,Jul ? *)", utc(2026, 1, 1, 0, 0), []time.Time{utc(2026, 7, 1, 0, 0), utc(2027, 1, 1, 0, 0)}},
		{"cron(0 0 1 FEB-APR ? *)", utc(2026, 1, 1, 0, 0), []time.Time{utc(2026, 2, 1, 0, 0), utc(2026, 3, 1, 0, 0), utc(2026, 4, 1, 0, 0), utc(2027, 2, 1, 0, 0)}},
		{"cron(0 0 1,15 * ? *)", utc(2026, 1, 1, 0, 0), []time.Time{utc(2026, 1, 15, 0, 0), utc(2026, 2, 1, 0, 0)}},
		{"cron(0 0 10-12 * ? *)", utc(2026, 1, 11, 0, 0), []time.Time{utc(2026, 1, 12, 0, 0), utc(2026, 2, 10, 0, 0)}},
		{"cron(0 0 1/10 * ? *)", utc(2026, 1, 1, 0, 0), []time.Time{utc(2026, 1, 11, 0, 0), utc(2026, 1, 21, 0, 0), utc(2026, 1, 31, 0, 0), utc(2026, 2, 1, 0, 0)}},
		{"cron(15 12 * * ? *)", utc(2026, 1, 1, 12, 15), []time.Time{utc(2026, 1, 2, 12, 15)}},
		{"cron(15 * ? * * *)", utc(2026, 1, 1, 12, 15), []time.Time{utc(2026, 1, 1, 13, 15)}},
		{"cron(0 0 31 * ? *)", utc(2026, 1, 31, 0, 0), []time.Time{utc(2026, 3, 31, 0, 0), utc(2026, 5, 31, 0, 0)}},
	}
	complete := map[string]bool{
		"cron(0 0 1 1 ? 2027-2028)": true,
		"cron(0 0 1 1 ? 2026,2030)": true,
		"cron(0 0 1 1 ? 2020)":      true,
		"cron(59 23 31 12 ? 2199)":  true,
	}
	for _, tc := range tests {
		s := mustParse(t, tc.expr, nil)
		// One fire more than listed is requested for year-bounded schedules,
		// whose list is complete, so an extra fire is caught.
		n := len(tc.want)
		if complete[tc.expr] {
			n++
		}
		if got := fires(s, tc.from, n); !sameTimes(got, tc.want) {
			t.Errorf("%s from %v: got %v, want %v", tc.expr, tc.from, got, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"cron(0 22 * * ? *)", "cron(0 22 * * ? *)"},
		{"  cron(0   22 *\t* ? *)  ", "cron(0 22 * * ? *)"},
		{"cron(0 0 1 jan,Jul ? *)", "cron(0 0 1 JAN,JUL ? *)"},
		{"cron(0 0 ? * mon-fri *)", "cron(0 0 ? * MON-FRI *)"},
		{"cron(0 9 15w * ? *)", "cron(0 9 15W * ? *)"},
		{"rate(1 hour)", "rate(1 hour)"},
		{"rate(012 hours)", "rate(12 hours)"},
		{" rate( 30  minutes ) ", "rate(30 minutes)"},
	}
	for _, tc := range tests {
		if got := mustParse(t, tc.in, nil).String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		expr  string
		field string   // ParseError.Field
		want  []string // substrings of the message besides the expression
	}{
		// Shape.
		{"", "", []string{"expected"}},
		{"0 22 * * ? *", "", []string{"expected"}},
		{"cron 0 22 * * ? *", "", []string{"expected"}},
		{"CRON(0 22 * * ? *)", "", []string{"expected"}},
		{"cron(0 22 * * ?)", "", []string{"6 fields", "got 5"}},
		{"cron(0 22 * * ? * *)", "", []string{"6 fields", "got 7"}},
		{"cron()", "", []string{"got 0"}},
		{"cron(0 22 * * ? *", "", []string{"expected"}},
		// Day-of-month / day-of-week exclusivity.
		{"cron(0 0 1 * MON *)", "day-of-month/day-of-week", []string{`"1"`, `"MON"`, "?"}},
		{"cron(0 0 * * * *)", "day-of-month/day-of-week", []string{`"*"`}},
		{"cron(0 0 ? * ? *)", "day-of-month/day-of-week", []string{"both"}},
		// Ranges.
		{"cron(0 25 * * ? *)", "hours", []string{"25 is out of range 0-23"}},
		{"cron(60 0 * * ? *)", "minutes", []string{"60 is out of range 0-59"}},
		{"cron(0 0 0 * ? *)", "day-of-month", []string{"0 is out of range 1-31"}},
		{"cron(0 0 32 * ? *)", "day-of-month", []string{"32 is out of range 1-31"}},
		{"cron(0 0 1 13 ? *)", "month", []string{"13 is out of range 1-12"}},
		{"cron(0 0 1 0 ? *)", "month", []string{"0 is out of range 1-12"}},
		{"cron(0 0 ? * 0 *)", "day-of-week", []string{"0 is out of range 1-7"}},
		{"cron(0 0 ? * 8 *)", "day-of-week", []string{"8 is out of range 1-7"}},
		{"cron(0 0 1 * ? 1969)", "year", []string{"1969 is out of range 1970-2199"}},
		{"cron(0 0 1 * ? 2200)", "year", []string{"2200 is out of range 1970-2199"}},
		{"cron(0 0 1 * ? 99999999999999999999)", "year", []string{"out of range"}},
		{"cron(5-1 * * * ? *)", "minutes", []string{`"5-1"`, "reversed"}},
		{"cron(0 0 ? * FRI-MON *)", "day-of-week", []string{`"FRI-MON"`, "reversed"}},
		{"cron(0 0 1 1-13 ? *)", "month", []string{"13 is out of range"}},
		// Steps.
		{"cron(0/0 * * * ? *)", "minutes", []string{`step "0" in "0/0"`, "between 1 and 59"}},
		{"cron(0/60 * * * ? *)", "minutes", []string{`"0/60"`}},
		{"cron(*/x * * * ? *)", "minutes", []string{`step "x"`}},
		{"cron(*/-1 * * * ? *)", "minutes", []string{`step "-1"`}},
		{"cron(5/ * * * ? *)", "minutes", []string{`step ""`}},
		{"cron(/5 * * * ? *)", "minutes", []string{"missing value"}},
		{"cron(0 0/24 * * ? *)", "hours", []string{"between 1 and 23"}},
		{"cron(0 0 1 */12 ? *)", "month", []string{"between 1 and 11"}},
		{"cron(0 0 ? * */2 *)", "day-of-week", []string{`"*/2"`, `"/" is not allowed`}},
		{"cron(0 0 ? * 1/2 *)", "day-of-week", []string{`"/" is not allowed`}},
		// Junk.
		{"cron(x 0 * * ? *)", "minutes", []string{`"x" is not a number`}},
		{"cron(0 0 ? * funday *)", "day-of-week", []string{`"funday" is not a number 1-7 or a name`}},
		{"cron(0 0 lw * ? *)", "day-of-month", []string{`"lw" is not supported`}},
		{"cron(0 0 31W 2,4 ? *)", "day-of-month", []string{`"31W" never occurs`}},
		{"cron(0 0 * FOO ? *)", "month", []string{`"FOO"`}},
		{"cron(0 0 ? * FUNDAY *)", "day-of-week", []string{`"FUNDAY"`}},
		{"cron(0 0 * MON ? *)", "month", []string{`"MON"`}},
		{"cron(0 0 ? * JAN *)", "day-of-week", []string{`"JAN"`}},
		{"cron(1,,2 0 * * ? *)", "minutes", []string{"empty list item"}},
		{"cron(1, 0 * * ? *)", "minutes", []string{"empty list item"}},
		{"cron(-1 0 * * ? *)", "minutes", []string{"missing value"}},
		{"cron(+1 0 * * ? *)", "minutes", []string{`"+1"`}},
		{"cron(1.5 0 * * ? *)", "minutes", []string{`"1.5"`}},
		{"cron(*-5 0 * * ? *)", "minutes", []string{`"*"`}},
		{"cron(? 0 * * ? *)", "minutes", []string{`"?" is only allowed in day-of-month or day-of-week`}},
		{"cron(0 0 1,? * MON *)", "day-of-month", []string{`"?" must be the whole field`}},
		// L, W, #.
		{"cron(0 0 L-3 * ? *)", "day-of-month", []string{`"L-3"`, "not supported"}},
		{"cron(0 0 LW * ? *)", "day-of-month", []string{`"LW"`, "not supported"}},
		{"cron(0 0 W * ? *)", "day-of-month", []string{`"W"`, "missing value"}},
		{"cron(0 0 32W * ? *)", "day-of-month", []string{"32 is out of range"}},
		{"cron(0 0 1-5W * ? *)", "day-of-month", []string{`"1-5W"`}},
		{"cron(0 0 1,15W * ? *)", "day-of-month", []string{`"1,15W"`, "whole day-of-month field"}},
		{"cron(0 0 1,L * ? *)", "day-of-month", []string{`"1,L"`, "whole day-of-month field"}},
		{"cron(0 0 L * L *)", "day-of-month/day-of-week", nil},
		{"cron(0 0 ? * 3#1,6#3 *)", "day-of-week", []string{`"3#1,6#3"`, "single expression"}},
		{"cron(0 0 ? * 3#6 *)", "day-of-week", []string{`"3#6"`, "1-5"}},
		{"cron(0 0 ? * 3#0 *)", "day-of-week", []string{`"3#0"`, "1-5"}},
		{"cron(0 0 ? * 3# *)", "day-of-week", []string{`"3#"`}},
		{"cron(0 0 ? * 8#1 *)", "day-of-week", []string{"8 is out of range"}},
		{"cron(0 0 ? * 8L *)", "day-of-week", []string{"8 is out of range"}},
		{"cron(0 0 ? * 1,5L *)", "day-of-week", []string{`"1,5L"`, "whole day-of-week field"}},
		{"cron(0 0 ? * 1-5L *)", "day-of-week", []string{`"1-5L"`, "whole day-of-week field"}},
		{"cron(0 L * * ? *)", "hours", []string{`"L" is not a number`}},
		{"cron(0 0 15W ? * *)", "month", []string{`"?" is only allowed`}},
		// Days that never exist.
		{"cron(0 0 30 2 ? *)", "day-of-month", []string{`"30" never occurs in month "2"`}},
		{"cron(0 0 30,31 FEB ? *)", "day-of-month", []string{`"30,31"`}},
		{"cron(0 0 31 APR,JUN,SEP,NOV ? *)", "day-of-month", []string{`"31"`}},
		{"cron(0 0 30W 2 ? *)", "day-of-month", []string{`"30W"`}},
		{"cron(0 0 29 2 ? 2025-2027)", "day-of-month", []string{`"29"`}},
		{"cron(0 0 29 2 ? 2100-2103)", "day-of-month", []string{`"29"`}}, // 2100 is not leap
		// Rate.
		{"rate(1 hours)", "unit", []string{`"hours" must be singular ("hour")`}},
		{"rate(1 days)", "unit", []string{`"days" must be singular`}},
		{"rate(2 hour)", "unit", []string{`"hour" must be plural ("hours")`}},
		{"rate(5 minute)", "unit", []string{`"minute" must be plural`}},
		{"rate(0 hours)", "value", []string{`"0" must be positive`}},
		{"rate(00 hours)", "value", []string{`"00" must be positive`}},
		{"rate(-1 hours)", "value", []string{`"-1" is not a positive integer`}},
		{"rate(1.5 hours)", "value", []string{`"1.5"`}},
		{"rate(x hours)", "value", []string{`"x"`}},
		{"rate(2 weeks)", "unit", []string{`"weeks" must be one of`}},
		{"rate(2 Hours)", "unit", []string{`"Hours"`}},
		{"rate(1 hour 2)", "", []string{"expected rate(value unit)"}},
		{"rate(hour)", "", []string{"expected rate(value unit)"}},
		{"rate()", "", []string{"expected rate(value unit)"}},
		{"rate(99999999999999999999 days)", "value", []string{"too large"}},
		{"rate(9999999999999 days)", "value", []string{"too long"}},
	}
	for _, tc := range tests {
		s, err := Parse(tc.expr, nil)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", tc.expr, s)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) error %T is not a *ParseError", tc.expr, err)
			continue
		}
		if pe.Field != tc.field {
			t.Errorf("Parse(%q) field = %q, want %q (%v)", tc.expr, pe.Field, tc.field, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, tc.expr+": ") {
			t.Errorf("Parse(%q) error %q does not start with the expression", tc.expr, msg)
		}
		if tc.field != "" && !strings.Contains(msg, ": "+tc.field+": ") {
			t.Errorf("Parse(%q) error %q does not name field %q", tc.expr, msg, tc.field)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("Parse(%q) error %q lacks %q", tc.expr, msg, w)
			}
		}
	}
}

func TestParseErrorExactMessage(t *testing.T) {
	_, err := Parse("cron(0 25 * * ? *)", nil)
	const want = "cron(0 25 * * ? *): hours: 25 is out of range 0-23"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

// TestNextStrictlyAfter checks Next(f) > f at fire times and that
// Next(f-1ns) == f, for schedules in several zones.
func TestNextStrictlyAfter(t *testing.T) {
	exprs := []string{"cron(0 22 * * ? *)", "cron(0 0 ? * SUN *)", "cron(0 0 1 * ? *)", "cron(0 * * * ? *)",
		"cron(30 2 * * ? *)", "cron(0/15 * * * ? *)", "rate(1 hour)", "rate(24 hours)", "rate(30 minutes)", "cron(0 0 L * ? *)"}
	locs := []*time.Location{time.UTC, mustLoad(t, "Europe/Paris"), mustLoad(t, "America/New_York"), mustLoad(t, "Asia/Kolkata")}
	from := utc(2026, 1, 1, 0, 0)
	for _, loc := range locs {
		for _, expr := range exprs {
			s := mustParse(t, expr, loc)
			prev := from
			for i := 0; i < 400; i++ {
				f := s.Next(prev)
				if !f.After(prev) {
					t.Fatalf("%s in %v: Next(%v) = %v, not after", expr, loc, prev, f)
				}
				if again := s.Next(f.Add(-time.Nanosecond)); !again.Equal(f) {
					t.Fatalf("%s in %v: Next(%v - 1ns) = %v, want %v", expr, loc, f, again, f)
				}
				if mid := s.Next(f.Add(-time.Second / 2)); !mid.Equal(f) {
					t.Fatalf("%s in %v: Next(%v - 0.5s) = %v, want %v", expr, loc, f, mid, f)
				}
				prev = f
			}
		}
	}
}

func TestEvery15Minutes(t *testing.T) {
	for _, loc := range []*time.Location{time.UTC, mustLoad(t, "Asia/Kathmandu")} {
		s := mustParse(t, "cron(0/15 * * * ? *)", loc)
		prev := s.Next(time.Date(2026, 6, 30, 23, 7, 12, 345, time.UTC))
		if m := prev.In(loc).Minute(); m%15 != 0 || prev.Second() != 0 {
			t.Fatalf("%v: first fire %v is not on a quarter hour", loc, prev)
		}
		for i := 0; i < 1000; i++ {
			next := s.Next(prev)
			if gap := next.Sub(prev); gap != 15*time.Minute {
				t.Fatalf("%v: fire %d: gap %v between %v and %v, want 15m", loc, i, gap, prev, next)
			}
			prev = next
		}
	}
}

func TestDST(t *testing.T) {
	paris := mustLoad(t, "Europe/Paris")
	ny := mustLoad(t, "America/New_York")
	tests := []struct {
		name string
		expr string
		loc  *time.Location
		from time.Time
		want []time.Time // in UTC
	}{
		// Paris springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST.
		{"paris spring daily 02:30 moves to 03:00 CEST", "cron(30 2 * * ? *)", paris, utc(2026, 3, 27, 12, 0),
			[]time.Time{utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)}},
		{"paris spring hourly", "cron(0 * * * ? *)", paris, utc(2026, 3, 28, 22, 30),
			[]time.Time{utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0)}},
		{"paris spring hourly at :30", "cron(30 * * * ? *)", paris, utc(2026, 3, 28, 23, 45),
			[]time.Time{utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30)}},
		{"paris spring several gap times fire once", "cron(0/15 2 * * ? *)", paris, utc(2026, 3, 28, 12, 0),
			[]time.Time{utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 0, 15)}},
		// Paris falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
		{"paris fall daily 02:30 fires at first occurrence", "cron(30 2 * * ? *)", paris, utc(2026, 10, 23, 12, 0),
			[]time.Time{utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)}},
		{"paris fall hourly skips repeated 02:00", "cron(0 * * * ? *)", paris, utc(2026, 10, 24, 22, 30),
			[]time.Time{utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 3, 0)}},
		// From inside the second 02:xx (01:30 UTC = 02:30 CET), the next fire is 03:00 CET.
		{"paris fall from the repeated hour", "cron(0/15 * * * ? *)", paris, utc(2026, 10, 25, 1, 30),
			[]time.Time{utc(2026, 10, 25, 2, 0), utc(2026, 10, 25, 2, 15)}},
		// New York springs forward on 2026-03-08 at 02:00 EST (07:00 UTC) to 03:00 EDT.
		{"new york spring daily 02:30 moves to 03:00 EDT", "cron(30 2 * * ? *)", ny, utc(2026, 3, 6, 12, 0),
			[]time.Time{utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)}},
		{"new york spring hourly", "cron(0 * * * ? *)", ny, utc(2026, 3, 8, 5, 30),
			[]time.Time{utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 8, 0)}},
		// New York falls back on 2026-11-01 at 02:00 EDT (06:00 UTC) to 01:00 EST.
		{"new york fall daily 02:30 is unambiguous", "cron(30 2 * * ? *)", ny, utc(2026, 10, 30, 12, 0),
			[]time.Time{utc(2026, 10, 31, 6, 30), utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)}},
		{"new york fall daily 01:30 fires at first occurrence", "cron(30 1 * * ? *)", ny, utc(2026, 10, 30, 12, 0),
			[]time.Time{utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)}},
		{"new york fall hourly skips repeated 01:00", "cron(0 * * * ? *)", ny, utc(2026, 11, 1, 3, 30),
			[]time.Time{utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 7, 0), utc(2026, 11, 1, 8, 0)}},
		// Rates ignore DST.
		{"rate across paris spring", "rate(1 hour)", paris, utc(2026, 3, 28, 23, 30),
			[]time.Time{utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0)}},
		{"rate across new york fall", "rate(1 hour)", ny, utc(2026, 11, 1, 4, 30),
			[]time.Time{utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 7, 0)}},
	}
	for _, tc := range tests {
		s := mustParse(t, tc.expr, tc.loc)
		got := fires(s, tc.from, len(tc.want))
		if !sameTimes(got, tc.want) {
			t.Errorf("%s: %s from %v: got %v, want %v", tc.name, tc.expr, tc.from, got, tc.want)
		}
		for _, f := range got {
			if f.Location() != tc.loc {
				t.Errorf("%s: fire %v is in %v, want %v", tc.name, f, f.Location(), tc.loc)
			}
		}
	}
}

// TestDSTNoDuplicateOrMissingWallTimes walks a year of an hourly and a daily
// schedule in each zone: every selected wall-clock time of every day fires
// exactly once (moved to the end of a gap if it does not exist).
func TestDSTNoDuplicateOrMissingWallTimes(t *testing.T) {
	for _, name := range []string{"Europe/Paris", "America/New_York"} {
		loc := mustLoad(t, name)
		for _, tc := range []struct {
			expr    string
			perDay  int
			wallMin int // minute of the hour every fire is scheduled at
		}{{"cron(0 * * * ? *)", 24, 0}, {"cron(30 2 * * ? *)", 1, 30}} {
			s := mustParse(t, tc.expr, loc)
			from := time.Date(2026, 1, 1, 0, 0, 0, 0, loc).Add(-time.Nanosecond)
			end := time.Date(2027, 1, 1, 0, 0, 0, 0, loc)
			perDay := map[string]int{}
			seen := map[time.Time]bool{}
			prev := from
			for {
				f := s.Next(prev)
				if !f.Before(end) {
					break
				}
				if seen[f] {
					t.Fatalf("%s %s: duplicate fire %v", name, tc.expr, f)
				}
				seen[f] = true
				lf := f.In(loc)
				if lf.Minute() != tc.wallMin && lf.Minute() != 0 {
					t.Errorf("%s %s: fire at unexpected wall time %v", name, tc.expr, lf)
				}
				perDay[lf.Format("2006-01-02")]++
				prev = f
			}
			if len(perDay) != 365 {
				t.Errorf("%s %s: fires on %d days, want 365", name, tc.expr, len(perDay))
			}
			short := 0
			for day, n := range perDay {
				if n == tc.perDay {
					continue
				}
				// Hourly: 23 wall hours on the spring-forward day (its
				// missing hour collapses onto the next one).
				if tc.perDay == 24 && n == 23 {
					short++
					continue
				}
				t.Errorf("%s %s: %s has %d fires, want %d", name, tc.expr, day, n, tc.perDay)
			}
			if tc.perDay == 24 && short != 1 {
				t.Errorf("%s %s: %d short days, want exactly 1 (spring forward)", name, tc.expr, short)
			}
		}
	}
}

func TestMinIntervalAndCheckFrequency(t *testing.T) {
	paris := mustLoad(t, "Europe/Paris")
	from := utc(2026, 1, 1, 0, 0)
	tests := []struct {
		expr    string
		loc     *time.Location
		horizon time.Duration
		wantMin time.Duration
		wantErr bool // CheckFrequency with a 1h minimum
	}{
		{"rate(30 minutes)", nil, 48 * time.Hour, 30 * time.Minute, true},
		{"rate(1 hour)", nil, 48 * time.Hour, time.Hour, false},
		{"rate(24 hours)", nil, 48 * time.Hour, 24 * time.Hour, false},
		{"cron(0 * * * ? *)", nil, 48 * time.Hour, time.Hour, false},
		{"cron(0,30 * * * ? *)", nil, 48 * time.Hour, 30 * time.Minute, true},
		{"cron(0,59 * * * ? *)", nil, 48 * time.Hour, time.Minute, true},
		{"cron(0 22 * * ? *)", nil, 48 * time.Hour, 24 * time.Hour, false},
		{"cron(0 0 ? * SUN *)", nil, 30 * 24 * time.Hour, 7 * 24 * time.Hour, false},
		{"cron(0 0 1 * ? *)", nil, 366 * 24 * time.Hour, 28 * 24 * time.Hour, false},
		{"cron(0 0 1 1 ? *)", nil, 24 * time.Hour, 0, false}, // one fire only
		{"cron(0 0 1 1 ? 2020)", nil, 24 * time.Hour, 0, false},
		{"cron(0 8,9 * * ? *)", nil, 48 * time.Hour, time.Hour, false},
		// Paris: 02:30 and 03:30 collapse to 30 minutes of elapsed time on
		// 2026-03-29 (MinInterval), but the expression is hourly (CheckFrequency).
		{"cron(30 * * * ? *)", paris, 365 * 24 * time.Hour, 30 * time.Minute, false},
		{"cron(0 * * * ? *)", paris, 365 * 24 * time.Hour, time.Hour, false},
		{"cron(0,30 * * * ? *)", paris, 365 * 24 * time.Hour, 30 * time.Minute, true},
	}
	for _, tc := range tests {
		s := mustParse(t, tc.expr, tc.loc)
		if got := MinInterval(s, from, tc.horizon); got != tc.wantMin {
			t.Errorf("MinInterval(%s, %v) = %v, want %v", tc.expr, tc.horizon, got, tc.wantMin)
		}
		err := CheckFrequency(s, from, time.Hour)
		if (err != nil) != tc.wantErr {
			t.Errorf("CheckFrequency(%s, 1h) = %v, want error %v", tc.expr, err, tc.wantErr)
		}
		if err != nil {
			var fe *FrequencyError
			if !errors.As(err, &fe) || fe.Gap >= time.Hour || fe.Min != time.Hour || fe.Expr != s.String() {
				t.Errorf("CheckFrequency(%s): error %#v", tc.expr, err)
			}
			if !strings.Contains(err.Error(), s.String()) || !strings.Contains(err.Error(), fe.Gap.String()) {
				t.Errorf("CheckFrequency(%s): error %q does not name the expression and gap", tc.expr, err)
			}
		}
	}
}

func TestMinIntervalWindowEnds(t *testing.T) {
	s := mustParse(t, "cron(0 0,12 * * ? *)", nil)
	from := utc(2026, 1, 1, 12, 0)
	// Fires at from and at from+12h are both inside [from, from+12h].
	if got := MinInterval(s, from, 12*time.Hour); got != 12*time.Hour {
		t.Errorf("closed window: got %v, want 12h", got)
	}
	if got := MinInterval(s, from, 12*time.Hour-time.Nanosecond); got != 0 {
		t.Errorf("window with one fire: got %v, want 0", got)
	}
	// Fires stop: CheckFrequency does not fail a schedule whose fires run out.
	if err := CheckFrequency(mustParse(t, "cron(0 0 1 1 ? 2026-2027)", nil), from, 24*time.Hour); err != nil {
		t.Errorf("yearly within one year: %v", err)
	}
	if err := CheckFrequency(mustParse(t, "cron(0 0 1 1 ? 2026-2027)", nil), utc(2025, 6, 1, 0, 0), 366*24*time.Hour); err != nil {
		t.Errorf("one fire in window: %v", err)
	}
	if err := CheckFrequency(s, from, 13*time.Hour); err == nil {
		t.Errorf("twice-daily schedule passed a 13h minimum")
	}
}

func TestWindowsValidate(t *testing.T) {
	if DefaultWindows.Start != 480*time.Minute || DefaultWindows.Completion != 10080*time.Minute {
		t.Errorf("DefaultWindows = %+v, want 480 and 10080 minutes", DefaultWindows)
	}
	tests := []struct {
		w    Windows
		want string // "" for valid, else a substring of the error
	}{
		{DefaultWindows, ""},
		{Windows{Start: time.Hour, Completion: 2 * time.Hour}, ""},
		{Windows{Start: 8 * time.Hour, Completion: 9 * time.Hour}, ""},
		{Windows{Start: MaxWindow - time.Hour, Completion: MaxWindow}, ""},
		{Windows{Start: 59 * time.Minute, Completion: 7 * 24 * time.Hour}, "start window of 59 minutes is below the minimum of 60"},
		{Windows{Start: 0, Completion: 7 * 24 * time.Hour}, "start window of 0 minutes"},
		{Windows{Start: -time.Hour, Completion: 7 * 24 * time.Hour}, "start window of -60 minutes"},
		{Windows{Start: time.Hour, Completion: 119 * time.Minute}, "completion window of 119 minutes must be at least the start window (60 minutes) plus 60"},
		{Windows{Start: 8 * time.Hour, Completion: 8 * time.Hour}, "completion window of 480 minutes"},
		{Windows{Start: 8 * time.Hour, Completion: time.Hour}, "completion window"},
		{Windows{Start: 90 * time.Second, Completion: 7 * 24 * time.Hour}, "start window 1m30s is not a whole number of minutes"},
		{Windows{Start: time.Hour, Completion: 2*time.Hour + time.Second}, "completion window 2h0m1s is not a whole number of minutes"},
		{Windows{Start: time.Hour, Completion: MaxWindow + time.Minute}, "exceeds the maximum of 52560000 minutes"},
		{Windows{Start: MaxWindow + time.Minute, Completion: MaxWindow + time.Hour}, "start window of 52560001 minutes exceeds"},
	}
	for _, tc := range tests {
		err := tc.w.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tc.w, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one containing %q", tc.w, err, tc.want)
		}
	}
}

func TestNextTerminates(t *testing.T) {
	// Expressions that parse but rarely or never fire return promptly.
	tests := []struct {
		expr string
		want time.Time // zero: never fires after 2026-01-01
	}{
		{"cron(0 0 ? 2 1#5 *)", utc(2032, 2, 29, 0, 0)}, // fifth Sunday of February
		{"cron(0 0 ? 2 1#5 2027-2031)", time.Time{}},    // none in those years
		{"cron(0 0 L 2 ? 2025)", time.Time{}},           // past year
		{"cron(0 0 29 2 ? 2096-2103)", utc(2096, 2, 29, 0, 0)},
		{"cron(0 0 30 * ? *)", utc(2026, 1, 30, 0, 0)},
	}
	for _, tc := range tests {
		if got := mustParse(t, tc.expr, nil).Next(utc(2026, 1, 1, 0, 0)); !got.Equal(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.expr, got, tc.want)
		}
	}
	for _, at := range []time.Time{{}, utc(2199, 12, 31, 23, 59), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(1<<62, 0)} {
		if got := mustParse(t, "cron(* * * * ? *)", nil).Next(at); !at.IsZero() && !got.IsZero() {
			t.Errorf("Next(%v) = %v, want zero after 2199", at, got)
		}
	}
	if got := mustParse(t, "cron(* * * * ? *)", nil).Next(time.Time{}); !got.Equal(utc(1970, 1, 1, 0, 0)) {
		t.Errorf("Next(zero) = %v, want 1970-01-01", got)
	}
	if got := mustParse(t, "rate(1 day)", nil).Next(time.Unix(math.MaxInt64-100, 0)); !got.IsZero() {
		t.Errorf("rate Next near the end of int64 seconds = %v, want zero", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"cron(0 22 * * ? *)", "cron(0 0 ? * SUN *)", "cron(0 0 1 * ? *)", "cron(0 * * * ? *)",
		"rate(1 hour)", "rate(24 hours)", "cron(0 0 L * ? *)", "cron(0 9 15W * ? *)", "cron(0 0 ? * 5L *)",
		"cron(0 0 ? * 3#2 *)", "cron(0/15 * * * ? 2026-2030)", "cron(10-50/20 */6 1/10 JAN-MAR ? *)",
		"cron(0 0 29 2 ? *)", "cron(0 0 1 1 ? 2020)", "rate(0 hours)", "cron(0 0 LW * ? *)", "",
	} {
		f.Add(seed)
	}
	paris := mustLoad(f, "Europe/Paris")
	times := []time.Time{utc(2026, 3, 29, 0, 59), utc(2026, 10, 25, 0, 30), utc(1969, 12, 31, 23, 59), utc(2199, 12, 31, 23, 0), {}}
	f.Fuzz(func(t *testing.T, expr string) {
		for _, loc := range []*time.Location{nil, paris} {
			s, err := Parse(expr, loc)
			if err != nil {
				var pe *ParseError
				if !errors.As(err, &pe) || s != nil {
					t.Fatalf("Parse(%q): %v, %v", expr, s, err)
				}
				continue
			}
			if _, err := Parse(s.String(), loc); err != nil {
				t.Fatalf("Parse(%q).String() = %q does not parse: %v", expr, s.String(), err)
			}
			for _, at := range times {
				n := s.Next(at)
				if !n.IsZero() && !n.After(at) {
					t.Fatalf("%s: Next(%v) = %v, not after", expr, at, n)
				}
			}
		}
	})
}
