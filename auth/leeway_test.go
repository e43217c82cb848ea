package auth_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub/auth"
)

// TestLeeway: a token that expired within the leeway is still accepted,
// and the stream it opens ends the leeway after its "exp", not at once.
func TestLeeway(t *testing.T) {
	t.Parallel()
	key := secret(t)
	c := claims(nil, []string{"*"})
	exp := time.Now().Add(-10 * time.Second).Truncate(time.Second)
	c.ExpiresAt = jwt.NewNumericDate(exp)
	tok := sign(t, jwt.SigningMethodHS256, key, c)
	authorize := func(leeway time.Duration) (time.Time, error) {
		a, err := auth.New(auth.Config{Key: key, Leeway: leeway})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/sse?channel=c", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		g, err := a.Authorize(r)
		return g.Expires, err
	}
	if _, err := authorize(0); err == nil {
		t.Fatal("a token expired 10s ago was accepted without leeway")
	}
	expires, err := authorize(30 * time.Second)
	if err != nil {
		t.Fatalf("a token expired 10s ago with 30s leeway: %v", err)
	}
	if want := exp.Add(30 * time.Second); !expires.Equal(want) {
		t.Fatalf("grant expires %v, want exp + leeway = %v", expires, want)
	}
	if _, err := auth.New(auth.Config{Key: key, Leeway: -time.Second}); err == nil {
		t.Fatal("a negative leeway was accepted")
	}
}
