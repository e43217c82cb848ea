// Package bench is a load generator for server-sent event hubs. It opens
// many subscribers over a set of channels, publishes numbered events that
// carry their send time, and measures what the subscribers receive:
// deliveries per second, publish-to-receive latency, and events lost,
// duplicated or out of order. Given the hub's process id it also reads the
// hub's memory per idle connection and CPU time per delivery from /proc.
//
// The subscribers speak just enough HTTP/1.1 to read a stream (raw lines
// over a plain or chunked body), so that the generator costs far less per
// delivery than the hub it measures. All traffic is kept on the loopback
// network.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options fields left at zero.
const (
	DefaultSubscribers     = 100
	DefaultChannels        = 1
	DefaultEvents          = 1000
	DefaultWindow          = 64
	DefaultPublishers      = 4
	DefaultInflight        = 1024
	DefaultDialConcurrency = 64
	DefaultSettle          = 2 * time.Second
	DefaultDrain           = 5 * time.Second
	DefaultHold            = time.Minute
	DefaultChannelPrefix   = "bench-"
	DefaultSlowRate        = 20 << 10
)

// Options describe one load scenario. The zero value of each field means
// its Default* constant.
type Options struct {
	// StreamURLs are the subscribe URLs; subscribers connect to them in
	// turn, so that one run can spread over several hubs. "{channel}" in
	// a URL is replaced by the subscriber's channel name. Their hosts must
	// be loopback addresses.
	StreamURLs []string
	// PublishURL receives POST requests with a JSON body
	// {"channel": NAME, "data": {...}}, as ssehub's /publish does. Its
	// host must be a loopback address.
	PublishURL string
	// PIDs are the hubs' process ids, for the memory and CPU figures read
	// from /proc, summed over the processes. None leaves them out.
	PIDs []int

	// Subscribers is how many streams to open, spread evenly over Channels.
	Subscribers int
	// Channels is how many channels the subscribers and events are spread over.
	Channels int
	// ChannelPrefix is prepended to the channel number to name a channel.
	ChannelPrefix string
	// Events is how many events to publish in all, spread evenly over the
	// channels. Negative publishes none: the run only listens (see Expect).
	Events int
	// Rate is the number of events per second to publish over all
	// channels; zero publishes as fast as the window allows.
	Rate float64
	// Window bounds how many events of one channel may be published ahead
	// of the slowest of its subscribers (slow and stalled ones aside), so
	// that a hub that drops subscribers that fall behind is measured at its
	// throughput rather than at its drop policy. Negative means no bound:
	// publishing goes flat out, whoever keeps up.
	Window int
	// Publishers is how many connections publish at once. Each channel is
	// published by one of them, in order.
	Publishers int
	// Inflight bounds the requests one publisher has sent and not yet seen
	// answered: it pipelines up to that many. One makes it a client that
	// waits for each answer before it sends the next event. A flat-out
	// run's latency is mostly the time events wait in this pipeline.
	Inflight int
	// Size pads each event's data to about this many bytes.
	Size int

	// Slow is how many of the streams read slowly, as over a slow link:
	// SlowRate bytes per second through a small receive buffer. They are
	// expected to receive every event, and count in the loss figures but
	// not in the latency or the window.
	Slow int
	// SlowRate is what a slow stream reads per second, in bytes; zero
	// means DefaultSlowRate.
	SlowRate int
	// Stalled is how many of the streams never read once their headers
	// are in, as a client that hangs does: the hub is expected to cut
	// them. They are left out of every figure but StalledCut.
	Stalled int
	// StalledWait is how long stalled streams stay stalled once the events
	// are delivered, before they read to find out whether the hub cut
	// them: longer than the hub's write timeout to see the cuts.
	StalledWait time.Duration

	// Sources are the loopback addresses subscribers connect from, in
	// turn. Each address has its own ephemeral ports, so several let one
	// machine open more connections than one address allows. Empty means
	// 127.0.0.1, plus one more address per 10,000 subscribers.
	Sources []netip.Addr
	// ConnectRate bounds new subscribers per second; zero connects as fast
	// as the hub accepts, DialConcurrency at a time.
	ConnectRate float64
	// DialConcurrency is how many subscribers may be connecting at once.
	DialConcurrency int

	// Settle is how long the subscribers stay idle after they have all
	// connected, before the hub's memory is read and publishing starts.
	Settle time.Duration
	// Drain is how long to wait for missing events once publishing is
	// done and deliveries stop making progress.
	Drain time.Duration
	// Expect is, when the run only listens, how many events each
	// subscriber waits for before the run ends.
	Expect int
	// Hold bounds how long a listening run waits for its events.
	Hold time.Duration

	// Progress receives a line per phase; nil discards them.
	Progress io.Writer
}

func (o Options) withDefaults() (Options, error) {
	intDef := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	durDef := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	intDef(&o.Subscribers, DefaultSubscribers)
	intDef(&o.Channels, DefaultChannels)
	intDef(&o.Events, DefaultEvents)
	intDef(&o.Window, DefaultWindow)
	intDef(&o.Publishers, DefaultPublishers)
	intDef(&o.Inflight, DefaultInflight)
	intDef(&o.DialConcurrency, DefaultDialConcurrency)
	intDef(&o.SlowRate, DefaultSlowRate)
	durDef(&o.Settle, DefaultSettle)
	durDef(&o.Drain, DefaultDrain)
	durDef(&o.Hold, DefaultHold)
	if o.ChannelPrefix == "" {
		o.ChannelPrefix = DefaultChannelPrefix
	}
	switch {
	case o.Subscribers < 0:
		return o, fmt.Errorf("bench: %d subscribers", o.Subscribers)
	case o.Channels < 0:
		return o, fmt.Errorf("bench: %d channels", o.Channels)
	case o.Rate < 0 || o.ConnectRate < 0:
		return o, errors.New("bench: rates must not be negative")
	case o.Publishers < 0 || o.DialConcurrency < 0 || o.Size < 0:
		return o, errors.New("bench: publishers, dial concurrency and size must not be negative")
	case o.StalledWait < 0:
		return o, errors.New("bench: the stalled wait must not be negative")
	case o.Inflight < 0:
		return o, errors.New("bench: in-flight requests must not be negative")
	case o.Slow < 0 || o.Stalled < 0 || o.SlowRate < 0:
		return o, errors.New("bench: slow and stalled streams and the slow rate must not be negative")
	case o.Slow+o.Stalled >= o.Subscribers && o.Subscribers > 0:
		return o, fmt.Errorf("bench: %d slow and %d stalled streams leave none of %d to read at full speed", o.Slow, o.Stalled, o.Subscribers)
	}
	o.Publishers = min(o.Publishers, o.Channels)
	if o.Settle < 0 {
		o.Settle = 0
	}
	if len(o.Sources) == 0 {
		n := 1 + (o.Subscribers-1)/10000
		o.Sources = SourceRange(netip.AddrFrom4([4]byte{127, 0, 0, 1}), n)
	}
	for _, a := range o.Sources {
		if !a.IsLoopback() {
			return o, fmt.Errorf("bench: source address %s is not a loopback address", a)
		}
	}
	if len(o.StreamURLs) == 0 {
		return o, errors.New("bench: no stream URL")
	}
	for _, u := range o.StreamURLs {
		if !strings.Contains(u, "{channel}") && o.Channels > 1 {
			return o, fmt.Errorf("bench: stream URL %q has no {channel} for more than one channel", u)
		}
		if err := checkLoopbackURL(u); err != nil {
			return o, err
		}
	}
	if o.Events >= 0 {
		if err := checkLoopbackURL(o.PublishURL); err != nil {
			return o, err
		}
	}
	return o, nil
}

// SourceRange returns n consecutive addresses starting at first.
func SourceRange(first netip.Addr, n int) []netip.Addr {
	addrs := make([]netip.Addr, 0, n)
	for a := first; len(addrs) < n && a.IsValid(); a = a.Next() {
		addrs = append(addrs, a)
	}
	return addrs
}

// ParseSources reads a list of source addresses: comma-separated addresses
// or ranges "FIRST-LAST", as in "127.0.0.1-127.0.0.8,127.0.1.1".
func ParseSources(s string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		from, to, isRange := strings.Cut(part, "-")
		first, err := netip.ParseAddr(from)
		if err != nil {
			return nil, fmt.Errorf("bench: source %q: %v", part, err)
		}
		last := first
		if isRange {
			if last, err = netip.ParseAddr(to); err != nil {
				return nil, fmt.Errorf("bench: source %q: %v", part, err)
			}
		}
		if last.Less(first) {
			return nil, fmt.Errorf("bench: source range %q runs backwards", part)
		}
		for a := first; ; a = a.Next() {
			if !a.IsLoopback() {
				return nil, fmt.Errorf("bench: source address %s is not a loopback address", a)
			}
			addrs = append(addrs, a)
			if a == last || len(addrs) > 1<<16 {
				break
			}
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("bench: no source address")
	}
	return addrs, nil
}

// checkLoopbackURL makes sure that u is an http URL on a loopback host, so
// that the load never leaves the machine.
func checkLoopbackURL(raw string) error {
	u, err := url.Parse(strings.ReplaceAll(raw, "{channel}", "x"))
	if err != nil {
		return fmt.Errorf("bench: URL %q: %v", raw, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("bench: URL %q: only http is supported", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return fmt.Errorf("bench: URL %q: host must be a loopback address", raw)
	}
	return nil
}

// Run runs the scenario o describes and returns its figures. It fails
// only when the scenario cannot run at all; failed connections and
// publishes are counted in the result.
func Run(ctx context.Context, o Options) (*Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	raiseFileLimit()
	r := &runner{o: o, progress: o.Progress}
	if r.progress == nil {
		r.progress = io.Discard
	}
	return r.run(ctx)
}

// runner holds the state of one Run.
type runner struct {
	o        Options
	progress io.Writer
	chans    []*chanState
	subs     []*subscriber
	hist     histogram
	readers  sync.WaitGroup

	delivered atomic.Int64  // first receipts of an event, over all subscribers
	closing   atomic.Bool   // set once the run closes its connections
	unstall   chan struct{} // closed when stalled streams may read again, to see whether they were cut
	unstalled sync.Once
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.progress, format+"\n", args...)
}

func (r *runner) run(ctx context.Context) (*Result, error) {
	o := r.o
	res := &Result{Target: strings.Join(o.StreamURLs, " "), Subscribers: o.Subscribers, Channels: o.Channels, Rate: o.Rate, Window: o.Window, Inflight: o.Inflight, PIDs: o.PIDs,
		Slow: o.Slow, Stalled: o.Stalled}
	r.unstall = make(chan struct{})
	r.chans = make([]*chanState, o.Channels)
	for i := range r.chans {
		r.chans[i] = newChanState(fmt.Sprintf("%s%d", o.ChannelPrefix, i), o.Window)
	}
	toolStart, _ := ReadProc(0)
	var hubStart ProcStats
	if len(o.PIDs) > 0 {
		var err error
		if hubStart, err = readProcs(o.PIDs); err != nil {
			return nil, err
		}
		res.HubRSSBeforeKB = hubStart.RSSKB
	}
	defer r.closeAll()

	r.logf("connecting %d subscribers over %d channels from %d source addresses", o.Subscribers, o.Channels, len(o.Sources))
	start := time.Now()
	if err := r.connect(ctx, res); err != nil {
		return nil, err
	}
	res.ConnectSeconds = time.Since(start).Seconds()
	if res.ConnectSeconds > 0 {
		res.ConnectRate = float64(res.Connected) / res.ConnectSeconds
	}
	r.logf("connected %d in %.2fs (%.0f/s), %d failed", res.Connected, res.ConnectSeconds, res.ConnectRate, res.ConnectErrors)
	if res.Connected == 0 {
		return res, fmt.Errorf("bench: no subscriber connected: %s", res.FirstError)
	}

	if err := Sleep(ctx, o.Settle); err != nil {
		return nil, err
	}
	if len(o.PIDs) > 0 {
		idle, err := readProcs(o.PIDs)
		if err != nil {
			return nil, err
		}
		res.HubRSSIdleKB = idle.RSSKB
		res.RSSPerConnKB = float64(idle.RSSKB-hubStart.RSSKB) / float64(res.Connected)
		hubStart = idle
		r.logf("hub RSS %d KB idle, %.2f KB per connection", idle.RSSKB, res.RSSPerConnKB)
	}

	var peak *peakRSS
	if len(o.PIDs) > 0 {
		peak = watchRSS(o.PIDs, res.HubRSSIdleKB)
		defer peak.stop()
	}
	pubStart := time.Now()
	if o.Events >= 0 {
		if err := r.publishAll(ctx, res); err != nil {
			return nil, err
		}
		res.PublishSeconds = time.Since(pubStart).Seconds()
		r.logf("published %d events in %.2fs, %d failed", res.Published, res.PublishSeconds, res.PublishErrors)
		r.waitDelivered(ctx, r.expected())
	} else {
		r.waitListen(ctx)
	}
	end := r.lastReceive()
	if end.Before(pubStart) {
		end = time.Now()
	}
	if len(o.PIDs) > 0 {
		hubEnd, err := readProcs(o.PIDs)
		if err == nil {
			res.HubCPUSeconds = hubEnd.CPU.Seconds() - hubStart.CPU.Seconds()
		}
		res.HubRSSPeakKB = peak.stop()
	}
	r.checkStalled(ctx)
	r.closeAll()
	r.collect(res, end.Sub(pubStart))
	if toolEnd, err := ReadProc(0); err == nil {
		res.ToolCPUSeconds = toolEnd.CPU.Seconds() - toolStart.CPU.Seconds()
	}
	return res, ctx.Err()
}

// expected is how many first receipts the run should see: each channel's
// published events times its subscribers.
func (r *runner) expected() int64 {
	var n int64
	for _, c := range r.chans {
		n += c.published.Load() * c.subs.Load()
	}
	return n
}

// waitDelivered waits until want events have been delivered, or until
// deliveries make no progress for the drain time.
func (r *runner) waitDelivered(ctx context.Context, want int64) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	last, progressed := r.delivered.Load(), time.Now()
	for r.delivered.Load() < want {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := r.delivered.Load(); n != last {
				last, progressed = n, now
			} else if now.Sub(progressed) > r.o.Drain {
				r.logf("giving up after %s without progress: %d of %d delivered", r.o.Drain, n, want)
				return
			}
		}
	}
}

// waitListen waits, in a run that does not publish, until every
// subscriber has its Expect events, or for the hold time.
func (r *runner) waitListen(ctx context.Context) {
	want := int64(r.o.Expect) * int64(len(r.subs))
	r.logf("listening for %d events per subscriber, up to %s", r.o.Expect, r.o.Hold)
	ctx, cancel := context.WithTimeout(ctx, r.o.Hold)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for want == 0 || r.delivered.Load() < want {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *runner) lastReceive() time.Time {
	var last int64
	for _, s := range r.subs {
		last = max(last, s.lastRecv.Load())
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// closeAll closes every subscriber's connection and waits for its reader.
func (r *runner) closeAll() {
	if r.closing.Swap(true) {
		return
	}
	for _, s := range r.subs {
		s.close()
	}
	r.unstalled.Do(func() { close(r.unstall) })
	r.readers.Wait()
}

// Sleep waits for d, or until ctx ends, and returns ctx.Err() then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connect opens the subscribers, at most DialConcurrency at a time and no
// faster than ConnectRate.
func (r *runner) connect(ctx context.Context, res *Result) error {
	o := r.o
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, o.DialConcurrency)
		step time.Duration
	)
	if o.ConnectRate > 0 {
		step = time.Duration(float64(time.Second) / o.ConnectRate)
	}
	start := time.Now()
	r.subs = make([]*subscriber, 0, o.Subscribers)
	for i := 0; i < o.Subscribers; i++ {
		if step > 0 {
			if err := Sleep(ctx, time.Until(start.Add(time.Duration(i)*step))); err != nil {
				return err
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c := r.chans[i%o.Channels]
			s := newSubscriber(r, c, r.kindOf(i))
			err := s.dial(ctx, o.Sources[i%len(o.Sources)], strings.ReplaceAll(o.StreamURLs[i%len(o.StreamURLs)], "{channel}", c.name))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.ConnectErrors++
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
				return
			}
			res.Connected++
			switch s.kind {
			case fast:
				c.fast.Add(1)
				c.subs.Add(1)
			case slow:
				c.subs.Add(1)
			}
			r.subs = append(r.subs, s)
			r.readers.Add(1)
			go s.read()
		}()
		if n := i + 1; n%5000 == 0 {
			r.logf("  %d dialled", n)
		}
	}
	wg.Wait()
	return ctx.Err()
}

// kindOf says how subscriber i reads: the first Stalled never do, the next
// Slow read slowly, the others at full speed. Channels are dealt out in
// turn, so each kind spreads over the channels.
func (r *runner) kindOf(i int) readerKind {
	switch {
	case i < r.o.Stalled:
		return stalled
	case i < r.o.Stalled+r.o.Slow:
		return slow
	}
	return fast
}

// checkStalled lets the stalled streams read what the hub sent them, once
// StalledWait has passed, to find whether it cut them, and waits until
// they have found out.
func (r *runner) checkStalled(ctx context.Context) {
	if r.o.Stalled > 0 {
		r.logf("streams stalled for %s more", r.o.StalledWait)
		Sleep(ctx, r.o.StalledWait)
	}
	r.unstalled.Do(func() { close(r.unstall) })
	for _, s := range r.subs {
		if s.kind == stalled {
			<-s.stallChecked
		}
	}
}

// collect folds the subscribers' counts into res. The readers have stopped.
func (r *runner) collect(res *Result, elapsed time.Duration) {
	res.Deliveries = r.delivered.Load()
	if elapsed > 0 && res.Deliveries > 0 {
		res.DeliveriesPerSec = float64(res.Deliveries) / elapsed.Seconds()
		res.DeliverySeconds = elapsed.Seconds()
	}
	res.MinHeartbeats = -1
	for _, s := range r.subs {
		if s.kind == stalled {
			if s.endedEarly {
				res.StalledCut++
			}
			continue
		}
		want := s.ch.published.Load()
		if r.o.Events < 0 {
			want = s.ch.maxSeen.Load()
		}
		lost := max(want-s.received, 0)
		res.Expected += want
		res.Lost += lost
		res.MaxLostPerSub = max(res.MaxLostPerSub, lost)
		if lost > 0 {
			res.SubsWithLoss++
		}
		res.Duplicated += s.dups
		res.OutOfOrder += s.outOfOrder
		res.Malformed += s.malformed
		res.Resets += s.resets
		res.Heartbeats += s.heartbeats
		if res.MinHeartbeats < 0 || s.heartbeats < res.MinHeartbeats {
			res.MinHeartbeats = s.heartbeats
		}
		if s.endedEarly {
			res.Disconnected++
		}
	}
	if res.MinHeartbeats < 0 {
		res.MinHeartbeats = 0
	}
	res.Latency = r.hist.summary()
	if res.Deliveries > 0 && res.HubCPUSeconds > 0 {
		res.CPUPerDeliveryUs = res.HubCPUSeconds * 1e6 / float64(res.Deliveries)
	}
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
}

// dialer returns a dialer bound to the source address src.
func dialer(src netip.Addr) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
}
