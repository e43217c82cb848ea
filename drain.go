package ssehub

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// errDraining ends the subscriptions that Drain lets go. It wraps ErrClosed,
// which is what their owners see.
var errDraining = fmt.Errorf("%w: hub draining", ErrClosed)

// Drain waves: at least minDrainWaves (when there are that many streams),
// and one per drainWaveEvery of a longer period, so each wave sends back a
// small share of the clients.
const (
	minDrainWaves  = 10
	drainWaveEvery = time.Second
)

// Drain ends the hub like Close, but spreads the end of its streams over
// the period over, so that restarting a fleet of hubs does not bring every
// client back in the same second.
//
// Drain at once refuses new publishes and subscriptions (so Ready reports
// the hub unready) and waits for publishes in flight. It then ends the
// subscriptions in waves at even intervals over the period, each in random
// order: a stream in a wave is sent the events already queued for it, then a
// "retry:" field of Config.Retry plus a random share of the wave interval,
// and ends; a Go Subscription's Next returns its queued events, then an
// error wrapping ErrClosed. Clients reconnect elsewhere, or to the restarted
// hub, with their last event id and resume there when the broker keeps
// history across processes.
//
// When ctx ends first, every remaining stream ends at once, as with Close,
// and Drain returns ctx's error. Drain, like Close, closes the broker if the
// hub created it. A second call to Drain or Close returns ErrClosed.
func (h *Hub) Drain(ctx context.Context, over time.Duration) error {
	if err := h.stopAccepting(ctx); err != nil {
		return err
	}

	subs := h.subscriptions()
	waves := drainWaves(len(subs), over)
	interval := over / time.Duration(waves)
	h.web.drainJitter = interval
	if interval <= 0 {
		h.web.drainJitter = h.cfg.Retry
	}
	h.log.LogAttrs(ctx, slog.LevelInfo, "hub draining",
		slog.Int("streams", len(subs)),
		slog.Int("waves", waves),
		slog.Duration("over", over))

	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
waves:
	for k := range waves {
		if k > 0 {
			timer.Reset(time.Until(start.Add(time.Duration(k) * interval)))
			select {
			case <-timer.C:
			case <-ctx.Done():
				break waves
			}
		}
		for _, s := range subs[k*len(subs)/waves : (k+1)*len(subs)/waves] {
			s.end(errDraining)
		}
	}
	err := h.finish(ctx)
	h.log.LogAttrs(ctx, slog.LevelInfo, "hub drained", slog.Duration("duration", time.Since(start)))
	return err
}

// drainWaves returns how many waves Drain ends n streams in over a period.
func drainWaves(n int, over time.Duration) int {
	if n <= 1 || over <= 0 {
		return 1
	}
	return min(n, max(minDrainWaves, int(over/drainWaveEvery)))
}

// subscriptions returns the subscriptions attached to a channel, shuffled.
func (h *Hub) subscriptions() []*Subscription {
	seen := map[*Subscription]struct{}{}
	h.mu.Lock()
	for _, c := range h.channels {
		c.mu.RLock()
		for _, cur := range c.subs {
			seen[cur.sub] = struct{}{}
		}
		c.mu.RUnlock()
	}
	h.mu.Unlock()
	subs := make([]*Subscription, 0, len(seen))
	for s := range seen {
		subs = append(subs, s)
	}
	rand.Shuffle(len(subs), func(i, j int) { subs[i], subs[j] = subs[j], subs[i] })
	return subs
}

// closingNow reports whether Close or Drain has begun.
func (h *Hub) closingNow() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}
