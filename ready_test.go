package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssehub/ssehub"
)

// checkBroker is a MemoryBroker whose readiness check the test controls.
type checkBroker struct {
	*ssehub.MemoryBroker
	check func(ctx context.Context) error
}

func (b checkBroker) Check(ctx context.Context) error { return b.check(ctx) }

var _ ssehub.Checker = checkBroker{}

type readyBody struct {
	Status string `json:"status"`
	Code   string `json:"code"`
	Error  string `json:"error"`
}

func getJSON(t *testing.T, h http.Handler, path string) (int, readyBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	var body readyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("GET %s: body %q: %v", path, rec.Body, err)
	}
	return rec.Code, body
}

func TestReadyFollowsBroker(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		down error
	)
	broker := checkBroker{
		MemoryBroker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{}),
		check: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			return down
		},
	}
	defer broker.Close(context.Background())
	hub, err := ssehub.New(ssehub.Config{Broker: broker})
	if err != nil {
		t.Fatal(err)
	}
	setDown := func(err error) { mu.Lock(); down = err; mu.Unlock() }

	if code, body := getJSON(t, hub, "/readyz"); code != http.StatusOK || body.Status != "ready" {
		t.Fatalf("/readyz with the broker up: %d %+v", code, body)
	}

	setDown(errors.New("dial tcp 127.0.0.1:1: connection refused"))
	code, body := getJSON(t, hub, "/readyz")
	if code != http.StatusServiceUnavailable || body.Status != "unready" || body.Code != "unavailable" ||
		!strings.Contains(body.Error, "connection refused") {
		t.Fatalf("/readyz with the broker down: %d %+v", code, body)
	}
	if !errors.Is(hub.Ready(t.Context()), ssehub.ErrUnavailable) {
		t.Errorf("Ready with the broker down: %v, want ErrUnavailable", hub.Ready(t.Context()))
	}
	// Alive all the same: an orchestrator must not restart the process.
	if code, body := getJSON(t, hub, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with the broker down: %d %+v", code, body)
	}

	setDown(nil)
	if code, body := getJSON(t, hub, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with the broker back: %d %+v", code, body)
	}

	if err := hub.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, body = getJSON(t, hub, "/readyz")
	if code != http.StatusServiceUnavailable || body.Code != "closing" {
		t.Fatalf("/readyz after Close: %d %+v", code, body)
	}
}

func TestReadyBrokerHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broker := checkBroker{
			MemoryBroker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{}),
			check: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			},
		}
		defer broker.Close(context.Background())
		hub, err := ssehub.New(ssehub.Config{Broker: broker})
		if err != nil {
			t.Fatal(err)
		}
		code, body := getJSON(t, hub, "/readyz")
		if code != http.StatusServiceUnavailable || body.Code != "unavailable" {
			t.Fatalf("/readyz with a hanging broker: %d %+v", code, body)
		}
	})
}

// TestReadyBrokerIgnoresContext: a broker whose check does not return when
// its context ends (go-redis reads are bounded by its own timeouts) still
// gets an answer within the readiness limit of 2 s.
func TestReadyBrokerIgnoresContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		broker := checkBroker{
			MemoryBroker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{}),
			check: func(context.Context) error {
				<-release
				return nil
			},
		}
		defer broker.Close(context.Background())
		hub, err := ssehub.New(ssehub.Config{Broker: broker})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		code, body := getJSON(t, hub, "/readyz")
		if code != http.StatusServiceUnavailable || body.Code != "unavailable" || time.Since(start) != 2*time.Second {
			t.Fatalf("/readyz with a broker that hangs: %d %+v after %v, want 503 unavailable after 2s", code, body, time.Since(start))
		}
		close(release)
	})
}

func TestReadyMemoryBroker(t *testing.T) {
	t.Parallel()
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close(context.Background())
	if code, body := getJSON(t, hub, "/readyz"); code != http.StatusOK || body.Status != "ready" {
		t.Fatalf("/readyz: %d %+v", code, body)
	}
	rec := httptest.NewRecorder()
	hub.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/readyz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz: %d", rec.Code)
	}
}
