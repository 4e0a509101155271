// Package hint owns user-facing error hints: an error can carry a sentence
// telling the user what to do next, which the CLI prints below the error.
package hint

import "errors"

// Error wraps an error with a hint for the user.
type Error struct {
	Err  error
	Hint string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// With attaches a hint to err (nil stays nil).
func With(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Hint: hint}
}

// Of returns the outermost hint attached to err, or "".
func Of(err error) string {
	var h *Error
	if errors.As(err, &h) {
		return h.Hint
	}
	return ""
}
