package ssehub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// readyTimeout bounds the broker check of one readiness request, so a
// broker that hangs reads as unready instead of holding the prober.
const readyTimeout = 2 * time.Second

// Ready reports whether the hub can take subscribers and publishes: nil
// while it runs and its broker, when the broker is a Checker, answers. Once
// Close or Drain has begun it returns ErrClosed; when the broker's check
// fails, an error wrapping ErrUnavailable and the broker's error.
func (h *Hub) Ready(ctx context.Context) error {
	if h.closingNow() {
		return ErrClosed
	}
	c, ok := h.broker.(Checker)
	if !ok {
		return nil
	}
	// A broker client may wait longer than ctx allows (go-redis, unless
	// told otherwise, bounds its reads by its own timeouts only): the
	// answer does not wait for it.
	checked := make(chan error, 1)
	go func() { checked <- c.Check(ctx) }()
	var err error
	select {
	case err = <-checked:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// ReadyHandler returns the readiness handler, for load balancers and
// orchestrators: 200 {"status":"ready"} when Ready reports nil, else 503
// {"status":"unready","code":...,"error":...} with the reason, code
// "closing" while the hub drains or closes and "unavailable" when the
// broker does not answer.
func (h *Hub) ReadyHandler() http.Handler { return http.HandlerFunc(h.serveReady) }

func (h *Hub) serveReady(w http.ResponseWriter, r *http.Request) {
	refuseBody(w, r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Cache-Control", "no-store")
	err := h.Ready(ctx)
	if err == nil {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return
	}
	code := "unavailable"
	if errors.Is(err, ErrClosed) {
		code = "closing"
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{
		"status": "unready",
		"code":   code,
		"error":  strings.TrimPrefix(err.Error(), "ssehub: "),
	})
}
