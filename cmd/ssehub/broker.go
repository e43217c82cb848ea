package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/ssehub/ssehub"
)

// brokerOptions are the settings a broker URL leaves to flags.
type brokerOptions struct {
	historySize int
	historyAge  time.Duration
	logger      *slog.Logger
}

// openBroker opens the broker a URL names. "memory:" (or "") is the
// embedded in-memory broker. The returned close func releases what
// openBroker created.
func openBroker(ctx context.Context, raw string, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("broker URL %q: %v", raw, err)
	}
	switch u.Scheme {
	case "", "memory":
		b := ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: opt.historySize, HistoryAge: opt.historyAge})
		return b, b.Close, nil
	}
	return nil, nil, fmt.Errorf("broker URL %q: unsupported scheme %q (use memory:)", raw, u.Scheme)
}
