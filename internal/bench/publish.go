package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// chanState is one channel of the scenario: its subscribers and the
// publish window.
//
// The window lets a channel's publisher run at most Window events ahead of
// the slowest subscriber. acks counts, for the last 2*Window event numbers,
// how many subscribers have received each; before publishing event n the
// publisher waits until event n-Window has reached every live subscriber.
// Slot n%len(acks) last held event n-2*Window, which was complete before
// n-Window was published, so the publisher may reset it.
type chanState struct {
	name      string
	subs      atomic.Int64 // live subscribers
	published atomic.Int64 // events published, numbered 1..published
	maxSeen   atomic.Int64 // highest event number any subscriber received

	window  int64
	acks    []atomic.Int64
	waiting atomic.Int64 // the event number the publisher waits for; 0 when not waiting
	wake    chan struct{}
}

func newChanState(name string, window int) *chanState {
	c := &chanState{name: name, wake: make(chan struct{}, 1)}
	if window > 0 {
		c.window = int64(window)
		c.acks = make([]atomic.Int64, 2*window)
	}
	return c
}

// ack records that one subscriber received event seq.
func (c *chanState) ack(seq int64) {
	for {
		m := c.maxSeen.Load()
		if seq <= m || c.maxSeen.CompareAndSwap(m, seq) {
			break
		}
	}
	if c.acks == nil || seq <= c.published.Load()-2*c.window {
		return // outside the window: late or a duplicate
	}
	n := c.acks[seq%int64(len(c.acks))].Add(1)
	if n >= c.subs.Load() && c.waiting.Load() == seq {
		c.signal()
	}
}

func (c *chanState) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// stallTimeout is how long a publisher waits for its window before it
// publishes anyway, so that a subscriber the hub has dropped cannot stop
// the run.
const stallTimeout = time.Second

// awaitWindow waits until event seq may be published, and reports whether
// the window stalled.
func (c *chanState) awaitWindow(ctx context.Context, seq int64) (stalled bool, err error) {
	if c.acks == nil {
		return false, nil
	}
	slot := &c.acks[seq%int64(len(c.acks))]
	if seq <= c.window {
		slot.Store(0)
		return false, nil
	}
	back := seq - c.window
	backSlot := &c.acks[back%int64(len(c.acks))]
	var timer *time.Timer
	for backSlot.Load() < c.subs.Load() {
		c.waiting.Store(back)
		if backSlot.Load() >= c.subs.Load() {
			break
		}
		if timer == nil {
			timer = time.NewTimer(stallTimeout)
			defer timer.Stop()
		}
		select {
		case <-c.wake:
		case <-timer.C:
			stalled = true
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if stalled {
			break
		}
	}
	c.waiting.Store(0)
	slot.Store(0)
	return stalled, nil
}

// publisher posts the events of some channels, each channel's in order.
type publisher struct {
	r      *runner
	client *http.Client
	chans  []*chanState
	quota  []int64 // events to publish per channel
	body   []byte
	data   []byte
}

// publishAll publishes the scenario's events over Publishers concurrent
// publishers and waits for them.
func (r *runner) publishAll(ctx context.Context, res *Result) error {
	o := r.o
	tr := &http.Transport{MaxIdleConnsPerHost: o.Publishers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	pubs := make([]*publisher, o.Publishers)
	for i := range pubs {
		pubs[i] = &publisher{r: r, client: client}
	}
	for i, c := range r.chans {
		p := pubs[i%len(pubs)]
		p.chans = append(p.chans, c)
		q := int64(o.Events / o.Channels)
		if i < o.Events%o.Channels {
			q++
		}
		p.quota = append(p.quota, q)
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		claimed  atomic.Int64
		start    = time.Now()
	)
	// pace spaces the events of all publishers Rate per second apart.
	pace := func() error {
		if o.Rate <= 0 {
			return nil
		}
		k := claimed.Add(1) - 1
		return sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(k)*float64(time.Second)/o.Rate))))
	}
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stalls, errs, err := p.run(ctx, pace)
			mu.Lock()
			defer mu.Unlock()
			res.WindowStalls += stalls
			res.PublishErrors += errs
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	for _, c := range r.chans {
		res.Published += int(c.published.Load())
	}
	return firstErr
}

// publishAttempts is how often one event is tried before the run fails.
const publishAttempts = 3

// run publishes the publisher's quota, channel by channel in turn.
func (p *publisher) run(ctx context.Context, pace func() error) (stalls, errs int, err error) {
	for left := true; left; {
		left = false
		for i, c := range p.chans {
			if c.published.Load() >= p.quota[i] {
				continue
			}
			left = true
			seq := c.published.Load() + 1
			stalled, err := c.awaitWindow(ctx, seq)
			if err != nil {
				return stalls, errs, err
			}
			if stalled {
				stalls++
			}
			if err := pace(); err != nil {
				return stalls, errs, err
			}
			for attempt := 1; ; attempt++ {
				err := p.post(ctx, c.name, seq)
				if err == nil {
					break
				}
				errs++
				if attempt == publishAttempts || ctx.Err() != nil {
					return stalls, errs, fmt.Errorf("bench: publishing event %d on %s: %w", seq, c.name, err)
				}
			}
			c.published.Store(seq)
		}
	}
	return stalls, errs, nil
}

// post publishes event seq on channel with the current time in its data.
func (p *publisher) post(ctx context.Context, channel string, seq int64) error {
	p.data = payload(p.data[:0], seq, time.Now().UnixNano(), p.r.o.Size)
	p.body = append(p.body[:0], `{"channel":"`...)
	p.body = append(p.body, channel...)
	p.body = append(p.body, `","data":`...)
	p.body = append(p.body, p.data...)
	p.body = append(p.body, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.r.o.PublishURL, bytes.NewReader(p.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}
