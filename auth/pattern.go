package auth

import (
	"fmt"
	"strings"

	"github.com/ssehub/ssehub"
)

// ValidPattern reports whether p is a valid channel pattern (see the
// package documentation). The error wraps
// ssehub.ErrInvalidChannel.
func ValidPattern(p string) error {
	if p == "" || len(p) > ssehub.MaxChannelLen {
		return fmt.Errorf("%w: pattern %q must be 1 to %d characters", ssehub.ErrInvalidChannel, p, ssehub.MaxChannelLen)
	}
	// A "*" stands for channel characters; with it replaced, what is left
	// must be a channel name.
	if rest := strings.ReplaceAll(p, "*", "a"); ssehub.ValidChannel(rest) != nil {
		return fmt.Errorf("%w: pattern %q holds a character other than \"*\" and A-Z a-z 0-9 _ - . : @ /", ssehub.ErrInvalidChannel, p)
	}
	return nil
}

// Match reports whether channel is valid and pattern, a valid pattern,
// matches it.
func Match(pattern, channel string) bool {
	if ValidPattern(pattern) != nil || ssehub.ValidChannel(channel) != nil {
		return false
	}
	return match(pattern, channel)
}

// match is glob matching with "*" as the only wildcard. On a mismatch it
// lets the last "*" seen take one more byte, so it runs in
// O(len(pattern)*len(name)) at worst, with no recursion.
func match(pattern, name string) bool {
	p, n := 0, 0
	star, next := -1, 0 // the last "*" in pattern, and where its run would end next
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, next = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			next++
			p, n = star+1, next
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// patterns is a set of valid channel patterns.
type patterns []string

// compile returns the valid patterns of list, and an error naming the first
// invalid one.
func compile(list []string) (patterns, error) {
	var ps patterns
	var first error
	for _, p := range list {
		if err := ValidPattern(p); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		ps = append(ps, p)
	}
	return ps, first
}

// match reports whether a pattern of ps matches channel, which the hub has
// already checked with ssehub.ValidChannel.
func (ps patterns) match(channel string) bool {
	for _, p := range ps {
		if match(p, channel) {
			return true
		}
	}
	return false
}
