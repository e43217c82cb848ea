package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
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
	subs      atomic.Int64 // live subscribers that are to receive every event (not stalled)
	fast      atomic.Int64 // live subscribers that read at full speed: the window waits for them
	sent      atomic.Int64 // events sent to the hub, numbered 1..sent
	published atomic.Int64 // events the hub has confirmed, 1..published
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
	if c.acks == nil || seq <= c.sent.Load()-2*c.window {
		return // outside the window: late or a duplicate
	}
	n := c.acks[seq%int64(len(c.acks))].Add(1)
	if n >= c.fast.Load() && c.waiting.Load() == seq {
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
	for backSlot.Load() < c.fast.Load() {
		c.waiting.Store(back)
		if backSlot.Load() >= c.fast.Load() {
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

// publisher sends the events of some channels, each channel's in order,
// over one connection. It pipelines its requests: the hub serves a
// connection's requests in order, so events keep their order while the
// publisher does not wait a round trip for each.
type publisher struct {
	r        *runner
	chans    []*chanState
	quota    []int64 // events to publish per channel
	inflight chan *chanState
	req      []byte
	data     []byte
}

// publishAll publishes the scenario's events over Publishers concurrent
// publishers and waits for them.
func (r *runner) publishAll(ctx context.Context, res *Result) error {
	o := r.o
	pubs := make([]*publisher, o.Publishers)
	for i := range pubs {
		pubs[i] = &publisher{r: r, inflight: make(chan *chanState, o.Inflight)}
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
	pace := func(ctx context.Context) error {
		if o.Rate <= 0 {
			return nil
		}
		k := claimed.Add(1) - 1
		return Sleep(ctx, time.Until(start.Add(time.Duration(float64(k)*float64(time.Second)/o.Rate))))
	}
	for _, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stalls, err := p.run(ctx, pace)
			mu.Lock()
			defer mu.Unlock()
			res.WindowStalls += stalls
			if err != nil {
				res.PublishErrors++
				if firstErr == nil {
					firstErr = err
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range r.chans {
		res.Published += int(c.published.Load())
	}
	return firstErr
}

// run publishes the publisher's quota, channel by channel in turn.
func (p *publisher) run(ctx context.Context, pace func(context.Context) error) (stalls int, err error) {
	u, err := url.Parse(p.r.o.PublishURL)
	if err != nil {
		return 0, err
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	if u.Hostname() == "localhost" {
		addr = net.JoinHostPort("127.0.0.1", u.Port())
	}
	conn, err := new(net.Dialer).DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("bench: publish connection: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	replies := make(chan error, 1)
	go func() {
		err := p.readReplies(bufio.NewReader(conn))
		if err != nil {
			cancel()
		}
		replies <- err
	}()
	head := "POST " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nContent-Type: application/json\r\nContent-Length: "

	sendErr := func() error {
		for left := true; left; {
			left = false
			for i, c := range p.chans {
				seq := c.sent.Load() + 1
				if seq > p.quota[i] {
					continue
				}
				left = true
				stalled, err := c.awaitWindow(ctx, seq)
				if err != nil {
					return err
				}
				if stalled {
					stalls++
				}
				if err := pace(ctx); err != nil {
					return err
				}
				select {
				case p.inflight <- c:
				case <-ctx.Done():
					return ctx.Err()
				}
				p.request(head, c.name, seq)
				c.sent.Store(seq)
				if _, err := conn.Write(p.req); err != nil {
					return fmt.Errorf("bench: publishing event %d on %s: %w", seq, c.name, err)
				}
			}
		}
		return nil
	}()
	close(p.inflight)
	if sendErr != nil {
		conn.Close()
		if err := <-replies; err != nil {
			return stalls, err
		}
		return stalls, sendErr
	}
	return stalls, <-replies
}

// request builds the publish request of event seq on channel, with the
// current time in its data.
func (p *publisher) request(head, channel string, seq int64) {
	p.data = payload(p.data[:0], seq, time.Now().UnixNano(), p.r.o.Size)
	bodyLen := len(`{"channel":"","data":}`) + len(channel) + len(p.data)
	p.req = append(p.req[:0], head...)
	p.req = strconv.AppendInt(p.req, int64(bodyLen), 10)
	p.req = append(p.req, "\r\n\r\n"...)
	p.req = append(p.req, `{"channel":"`...)
	p.req = append(p.req, channel...)
	p.req = append(p.req, `","data":`...)
	p.req = append(p.req, p.data...)
	p.req = append(p.req, '}')
}

// readReplies reads one response per request sent, in order, and counts
// the event of each 200 as published.
func (p *publisher) readReplies(br *bufio.Reader) error {
	for c := range p.inflight {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("bench: reading publish response: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("bench: reading publish response: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("bench: publish on %s: status %d: %s", c.name, resp.StatusCode, bytes.TrimSpace(body))
		}
		c.published.Add(1)
	}
	return nil
}
