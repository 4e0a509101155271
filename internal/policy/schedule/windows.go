package schedule

import (
	"fmt"
	"time"
)

// Windows are a backup rule's start and completion windows (AWS Backup's
// StartWindowMinutes and CompletionWindowMinutes). Both count from the
// scheduled fire time: a job that has not started within Start is canceled
// (EXPIRED), and one that has not completed within Completion is canceled.
type Windows struct {
	Start, Completion time.Duration
}

// DefaultWindows are AWS Backup's defaults: start within 8 hours (480
// minutes), complete within 7 days (10080 minutes).
var DefaultWindows = Windows{Start: 8 * time.Hour, Completion: 7 * 24 * time.Hour}

const (
	// MinStartWindow is AWS Backup's minimum StartWindowMinutes (60).
	MinStartWindow = time.Hour
	// MinCompletionMargin is how much longer than the start window the
	// completion window must be.
	MinCompletionMargin = time.Hour
	// MaxWindow is AWS Backup's maximum for either window: 100 years
	// (52,560,000 minutes).
	MaxWindow = 52_560_000 * time.Minute
)

// Validate checks the windows against AWS Backup's rules: each is a whole
// number of minutes (the API takes minutes) and at most MaxWindow; the start
// window is at least 60 minutes; the completion window is at least the start
// window plus 60 minutes.
func (w Windows) Validate() error {
	for _, x := range []struct {
		name string
		d    time.Duration
	}{{"start window", w.Start}, {"completion window", w.Completion}} {
		if x.d%time.Minute != 0 {
			return fmt.Errorf("backup windows: %s %v is not a whole number of minutes", x.name, x.d)
		}
		if x.d > MaxWindow {
			return fmt.Errorf("backup windows: %s of %d minutes exceeds the maximum of %d minutes (100 years)", x.name, x.d/time.Minute, MaxWindow/time.Minute)
		}
	}
	if w.Start < MinStartWindow {
		return fmt.Errorf("backup windows: start window of %d minutes is below the minimum of %d minutes", w.Start/time.Minute, MinStartWindow/time.Minute)
	}
	if w.Completion < w.Start+MinCompletionMargin {
		return fmt.Errorf("backup windows: completion window of %d minutes must be at least the start window (%d minutes) plus %d minutes", w.Completion/time.Minute, w.Start/time.Minute, MinCompletionMargin/time.Minute)
	}
	return nil
}
