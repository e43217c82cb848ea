package redisbroker

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub/internal/redistest"
)

// TestRefused: a write sent to a node that does not serve its slot is
// turned away with MOVED, which means it did not run; other errors do not.
func TestRefused(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	owner := c.MasterOf("k")
	var other *redistest.Server
	for _, m := range c.Masters() {
		if m != owner {
			other = m
		}
	}
	cl := redis.NewClient(&redis.Options{Addr: other.Addr(), MaxRetries: -1})
	defer cl.Close()
	err := cl.Set(context.Background(), "k", "v", 0).Err()
	if !refused(err) {
		t.Errorf("refused(%v) = false; want true", err)
	}
	for _, err := range []error{nil, errors.New("MOVED but not from Redis"), context.DeadlineExceeded} {
		if refused(err) {
			t.Errorf("refused(%v) = true", err)
		}
	}
	if err := cl.Do(context.Background(), "NOSUCHCOMMAND").Err(); refused(err) {
		t.Errorf("refused(%v) = true", err)
	}
}
