package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/coffre/coffre/internal/clock"
)

// progress redraws one status line on a terminal every 250 ms. Off a
// terminal it prints nothing: scripts get the final summary only.
type progress struct {
	w       io.Writer
	on      bool
	stop    chan struct{}
	done    sync.WaitGroup
	started time.Time
}

// startProgress calls line every tick; line returns the text to show.
func startProgress(w io.Writer, on bool, line func(elapsed time.Duration) string) *progress {
	p := &progress{w: w, on: on, stop: make(chan struct{}), started: clock.Real{}.Now()}
	if !on {
		return p
	}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, "\r\033[K")
				return
			case <-t.C:
				s := line(clock.Real{}.Now().Sub(p.started))
				fmt.Fprintf(p.w, "\r\033[K%s", s)
			}
		}
	}()
	return p
}

func (p *progress) Stop() {
	close(p.stop)
	p.done.Wait()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func rateETA(done, total int64, elapsed time.Duration) string {
	sec := elapsed.Seconds()
	if sec <= 0 {
		return ""
	}
	rate := float64(done) / sec
	s := humanBytes(int64(rate)) + "/s"
	if total > 0 && done < total && rate > 0 {
		eta := time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second)
		s += fmt.Sprintf("  ETA %s", eta)
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return s + strings.Repeat(" ", n-len(s))
}
