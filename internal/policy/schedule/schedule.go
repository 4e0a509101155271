// Package schedule owns AWS Backup schedule expressions (EventBridge cron and rate syntax), their fire times, frequency checks and backup start/completion windows.
package schedule

import (
	"fmt"
	"strings"
	"time"
)

// Schedule is a parsed schedule expression.
type Schedule interface {
	// Next returns the first fire time strictly after t (in any location), or
	// the zero Time if there is none (e.g. a cron with a past year).
	Next(t time.Time) time.Time
	// String returns the normalised expression, e.g. "cron(0 22 * * ? *)".
	String() string
}

// ParseError reports an invalid schedule expression. Its message names the
// expression, the field and the offending token, e.g.
// "cron(0 25 * * ? *): hours: 25 is out of range 0-23".
type ParseError struct {
	Expr  string // the expression as given to Parse
	Field string // "minutes", "hours", "day-of-month", "month", "day-of-week", "year", "value", "unit", or "" for the whole expression
	Msg   string // what is wrong, quoting the bad token
}

func (e *ParseError) Error() string {
	if e.Field == "" {
		return e.Expr + ": " + e.Msg
	}
	return e.Expr + ": " + e.Field + ": " + e.Msg
}

// Parse parses an AWS Backup schedule expression: "cron(Minutes Hours
// Day-of-month Month Day-of-week Year)" or "rate(N unit)", with the syntax of
// the EventBridge cron and rate expression references. Leading and trailing
// white space is ignored; the keywords "cron" and "rate" are lower case.
//
// Cron fields are evaluated on the wall clock of loc (AWS Backup's
// ScheduleExpressionTimezone); a nil loc means UTC. Rate expressions are
// anchored to the Unix epoch (see Next on a rate schedule) and only use loc
// for the location of the times they return.
//
// Cron syntax, as documented by AWS:
//
//	Field         Values             Wildcards
//	Minutes       0-59               , - * /
//	Hours         0-23               , - * /
//	Day-of-month  1-31               , - * ? / L W
//	Month         1-12 or JAN-DEC    , - * /
//	Day-of-week   1-7 or SUN-SAT     , - * ? L #    (1 = Sunday)
//	Year          1970-2199          , - * /
//
// Choices where the AWS documentation is silent or where this package is
// stricter than some cron dialects:
//   - Exactly one of day-of-month and day-of-week must be "?" (AWS: you cannot
//     specify both; "? ?" is rejected too).
//   - "/" is rejected in day-of-week (it is not in AWS's wildcard list).
//   - "L" in day-of-month is the last day of the month; "nW" is the weekday
//     (Monday-Friday) nearest day n, never crossing into another month, and
//     never firing in a month that has no day n. "L-n" offsets and "LW" are
//     not documented by AWS and are rejected.
//   - "L" alone in day-of-week is the last day of the week (7, Saturday);
//     "nL" is the last weekday n of the month ("5L" = last Thursday); "n#k"
//     is the k-th (1-5) weekday n of the month ("3#2" = second Tuesday).
//   - L, nW, nL and n#k must be the whole field: they cannot be combined in a
//     list (AWS documents this for "#": "3#1,6#3" is invalid).
//   - Names (JAN-DEC, SUN-SAT) are case-insensitive and may appear wherever a
//     number may, including in ranges ("MON-FRI") and before "#" or "L".
//   - Ranges must not wrap: "5-1" and "FRI-MON" are rejected.
//   - A step "/n" must be between 1 and the field's span minus one (59 for
//     minutes, 23 for hours, 30 for day-of-month, 11 for month, 229 for
//     year): a larger step could only ever select its start value.
//   - "a/n" means a, a+n, ... up to the field's maximum; "a-b/n" stops at b.
//   - A day-of-month list that can never match its months (e.g. "30 2",
//     "31 APR,JUN") is rejected; other never-matching expressions (e.g. a
//     past year) parse, and Next returns the zero Time.
//
// Rate syntax: "rate(value unit)" where value is a positive integer and unit
// is minute, hour or day when value is 1, and minutes, hours or days
// otherwise (AWS rejects "rate(1 hours)" and "rate(5 hour)").
//
// Errors are *ParseError values.
func Parse(expr string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := strings.TrimSpace(expr)
	switch {
	case strings.HasPrefix(s, "cron(") && strings.HasSuffix(s, ")"):
		c, err := parseCron(expr, s[len("cron("):len(s)-1], loc)
		if err != nil {
			return nil, err // not a typed nil *cronSchedule
		}
		return c, nil
	case strings.HasPrefix(s, "rate(") && strings.HasSuffix(s, ")"):
		r, err := parseRate(expr, s[len("rate("):len(s)-1], loc)
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	return nil, &ParseError{Expr: expr, Msg: `expected "cron(Minutes Hours Day-of-month Month Day-of-week Year)" or "rate(value unit)"`}
}

// MinInterval returns the smallest gap between consecutive fire times of s
// that fall in [from, from+horizon] (both ends included), measured as
// elapsed time between the instants. It returns 0 when fewer than two fire
// times fall in that interval.
func MinInterval(s Schedule, from time.Time, horizon time.Duration) time.Duration {
	gap, _ := minInterval(s, from, from.Add(horizon))
	return gap
}

// minInterval is MinInterval over [from, end]; ok is false when fewer than
// two fire times fall in it.
func minInterval(s Schedule, from, end time.Time) (gap time.Duration, ok bool) {
	prev := s.Next(from.Add(-time.Nanosecond)) // first fire time >= from
	if prev.IsZero() || prev.After(end) {
		return 0, false
	}
	for {
		next := s.Next(prev)
		if next.IsZero() || next.After(end) {
			return gap, ok
		}
		g := next.Sub(prev)
		if !ok || g < gap {
			gap, ok = g, true
		}
		if g <= 0 { // a Schedule that does not move forward: stop, reporting it
			return gap, ok
		}
		prev = next
	}
}

// FrequencyError reports a schedule that fires more often than allowed.
type FrequencyError struct {
	Expr string        // the schedule's normalised expression
	Gap  time.Duration // the smallest gap found between consecutive fire times
	Min  time.Duration // the configured minimum
}

func (e *FrequencyError) Error() string {
	return fmt.Sprintf("%s: fires as often as every %v, more often than the minimum interval of %v", e.Expr, e.Gap, e.Min)
}

// CheckFrequency returns a *FrequencyError naming the expression and the gap
// found if s fires more often than every min during the year starting at
// from (or until its fire times stop, if sooner). AWS Backup allows snapshot
// backups at most hourly; callers pass the configured minimum (time.Hour for
// AWS parity).
//
// The check judges the expression's own frequency: a cron schedule is
// evaluated on its fields in UTC, so DST transitions in its time zone do not
// count against it. (With a time zone, Next moves a fire time that falls in
// a spring-forward gap to the end of the gap, so cron(30 * * * ? *) in
// Europe/Paris fires at 03:00 and 03:30 on that day; AWS accepts such hourly
// expressions, so CheckFrequency does too. MinInterval, which measures
// elapsed time, does see the 30-minute gap.)
func CheckFrequency(s Schedule, from time.Time, min time.Duration) error {
	if c, ok := s.(*cronSchedule); ok && c.loc != time.UTC {
		u := *c
		u.loc = time.UTC
		s = &u
	}
	gap, ok := minInterval(s, from, from.AddDate(1, 0, 0))
	if ok && gap < min {
		return &FrequencyError{Expr: s.String(), Gap: gap, Min: min}
	}
	return nil
}
