package auth_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/auth"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, channel string
		want             bool
	}{
		{"user.42", "user.42", true},
		{"user.42", "user.420", false},
		{"user.42", "User.42", false},
		{"user.42", "user.4", false},
		{"orders.*", "orders.1", true},
		{"orders.*", "orders.eu.7", true},
		{"orders.*", "orders.", true},
		{"orders.*", "orders", false},
		{"orders.*", "xorders.1", false},
		{"*.public", "news.public", true},
		{"*.public", "a.b.public", true},
		{"*.public", "news.public.x", false},
		{"*", "anything/at:all@x", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "a-b-b-c", true},
		{"a*b*c", "a-b-c-d", false},
		{"**", "x", true},
		{"a*a*a*a*b", strings.Repeat("a", 150), false},
		{"user.*", "user.a b", false}, // not a channel name
		{"user.*", "", false},         // not a channel name
		{"user.?", "user.1", false},   // not a pattern
		{"user.>", "user.>", false},   // not a pattern
		{"", "", false},               // not a pattern
		{"user.4*", "user.42", true},  // "*" ignores separators...
		{"user.*.inbox", "user.42.inbox", true},
		{"user.*.inbox", "user.4.2.inbox", true}, // ...in both directions
	}
	for _, c := range cases {
		if got := auth.Match(c.pattern, c.channel); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.channel, got, c.want)
		}
	}
}

func TestValidPattern(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"a", "*", "orders.*", "a/b:c@d_e-f.*", strings.Repeat("a", ssehub.MaxChannelLen)} {
		if err := auth.ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "a b", "a>", "a?", "a\n", "é", strings.Repeat("a", ssehub.MaxChannelLen+1)} {
		if err := auth.ValidPattern(p); !errors.Is(err, ssehub.ErrInvalidChannel) {
			t.Errorf("ValidPattern(%q) = %v, want ErrInvalidChannel", p, err)
		}
	}
}
