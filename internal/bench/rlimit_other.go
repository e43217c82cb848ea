//go:build !linux

package bench

func raiseFileLimit() {}

// FileLimit returns the soft limit on open files, or 0 when unknown.
func FileLimit() int { return 0 }
