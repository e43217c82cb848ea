package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func startNaive(t *testing.T) *Server {
	t.Helper()
	s, err := StartNaive()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRunAgainstNaive(t *testing.T) {
	t.Parallel()
	s := startNaive(t)
	stream, pub := Targets(s.URL)
	res, err := Run(t.Context(), Options{
		StreamURLs: []string{stream}, PublishURL: pub,
		Subscribers: 40, Channels: 3, Events: 300, Publishers: 2,
		Sources: SourceRange(netip.MustParseAddr("127.0.0.1"), 2),
		Settle:  time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 40 || res.ConnectErrors != 0 {
		t.Fatalf("connected %d, %d errors (%s)", res.Connected, res.ConnectErrors, res.FirstError)
	}
	if res.Published != 300 {
		t.Fatalf("published %d, want 300", res.Published)
	}
	// 40 subscribers over 3 channels: 14, 13 and 13, with 100 events each.
	if res.Expected != 4000 || res.Deliveries != 4000 {
		t.Fatalf("deliveries %d of %d expected, want 4000", res.Deliveries, res.Expected)
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Malformed != 0 || res.Disconnected != 0 {
		t.Fatalf("lost %d, duplicated %d, out of order %d, malformed %d, disconnected %d",
			res.Lost, res.Duplicated, res.OutOfOrder, res.Malformed, res.Disconnected)
	}
	if res.Latency.Count != 4000 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
		t.Fatalf("latency summary %+v", res.Latency)
	}
	if res.DeliveriesPerSec <= 0 {
		t.Fatalf("deliveries/s %v", res.DeliveriesPerSec)
	}
}

// signalWriter reports on a channel when a line starting with prefix is
// written to it.
type signalWriter struct {
	mu     sync.Mutex
	prefix string
	seen   chan struct{}
	once   sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.HasPrefix(p, []byte(w.prefix)) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func TestRunListenOnly(t *testing.T) {
	t.Parallel()
	s := startNaive(t)
	stream, _ := Targets(s.URL)
	connected := &signalWriter{prefix: "connected", seen: make(chan struct{})}
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := Run(t.Context(), Options{
			StreamURLs: []string{stream}, Subscribers: 10, Channels: 2, Events: -1, Expect: 3,
			Settle: time.Millisecond, Hold: time.Minute, Progress: connected,
		})
		done <- outcome{res, err}
	}()
	select {
	case <-connected.seen:
	case o := <-done:
		t.Fatalf("run ended before connecting: %v", o.err)
	}
	// Another publisher: three events per channel, the second missing on
	// channel 1, whose listeners must count it lost.
	for ch := range 2 {
		for seq := 1; seq <= 4; seq++ {
			if ch == 1 && seq == 2 || ch == 0 && seq == 4 {
				continue
			}
			body := fmt.Sprintf(`{"channel":"bench-%d","data":{"s":%d,"t":%d}}`, ch, seq, time.Now().UnixNano())
			resp, err := http.Post(s.URL+"/publish", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.Deliveries != 30 {
		t.Fatalf("deliveries %d, want 30", o.res.Deliveries)
	}
	if o.res.Lost != 5 || o.res.SubsWithLoss != 5 || o.res.MaxLostPerSub != 1 {
		t.Fatalf("lost %d on %d subscribers (max %d), want 5 on 5 (max 1)", o.res.Lost, o.res.SubsWithLoss, o.res.MaxLostPerSub)
	}
}

func TestOptionsRejectRemoteTargets(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{StreamURLs: []string{"http://192.0.2.1/sse?channel={channel}"}, PublishURL: "http://127.0.0.1/publish"},
		{StreamURLs: []string{"http://127.0.0.1/sse?channel={channel}"}, PublishURL: "http://example.com/publish"},
		{StreamURLs: []string{"https://127.0.0.1/sse?channel={channel}"}, PublishURL: "http://127.0.0.1/publish"},
		{StreamURLs: []string{"http://127.0.0.1/sse"}, PublishURL: "http://127.0.0.1/publish", Channels: 2},
		{StreamURLs: []string{"http://127.0.0.1/sse?channel={channel}"}, PublishURL: "http://127.0.0.1/publish",
			Sources: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
	} {
		if _, err := o.withDefaults(); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
	if _, err := (Options{StreamURLs: []string{"http://localhost:8080/sse?channel={channel}"}, Events: -1}).withDefaults(); err != nil {
		t.Errorf("listen-only run on localhost: %v", err)
	}
}

func TestParseSources(t *testing.T) {
	t.Parallel()
	got, err := ParseSources("127.0.0.1-127.0.0.3, 127.0.1.9")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if want := "127.0.0.1 127.0.0.2 127.0.0.3 127.0.1.9"; strings.Join(s, " ") != want {
		t.Fatalf("got %v, want %s", s, want)
	}
	for _, bad := range []string{"", "127.0.0.5-127.0.0.1", "10.0.0.1", "127.0.0.1-10.0.0.1", "nonsense"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("ParseSources(%q) accepted", bad)
		}
	}
}

// newTestSubscriber returns a subscriber of a run with one channel, ready
// to consume a body.
func newTestSubscriber(chunked bool) *subscriber {
	r := &runner{o: Options{Window: 4}}
	c := newChanState("c", 4)
	c.subs.Store(1)
	c.fast.Store(1)
	s := newSubscriber(r, c, fast)
	s.chunked = chunked
	return s
}

func chunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }

func TestSubscriberChunkedAnySplit(t *testing.T) {
	t.Parallel()
	now := time.Now().UnixNano()
	ev := func(seq int) string { return fmt.Sprintf("id: %d\ndata: {\"s\":%d,\"t\":%d}\n\n", seq, seq, now) }
	body := chunk("retry: 3000\n\n") +
		chunk(ev(1)+ev(2)) +
		// A chunk extension, and an event split over two chunks.
		"1a;name=value\r\n" + ev(3)[:26] + "\r\n" + chunk(ev(3)[26:]) +
		chunk(":\n\n") + chunk(ev(4)) +
		"0\r\n\r\n" + chunk(ev(5)) // after the last chunk: ignored
	for size := 1; size <= len(body); size++ {
		s := newTestSubscriber(true)
		for p := body; len(p) > 0; {
			n := min(size, len(p))
			s.consume([]byte(p[:n]))
			p = p[n:]
		}
		if s.received != 4 || s.maxSeq != 4 || s.heartbeats != 1 || s.malformed != 0 || s.r.delivered.Load() != 4 {
			t.Fatalf("pieces of %d: received %d, max %d, heartbeats %d, malformed %d, delivered %d",
				size, s.received, s.maxSeq, s.heartbeats, s.malformed, s.r.delivered.Load())
		}
	}
}

func TestSubscriberCountsDuplicatesAndDisorder(t *testing.T) {
	t.Parallel()
	s := newTestSubscriber(false)
	for _, seq := range []int{1, 2, 2, 5, 3, 3, 4} {
		s.consume(fmt.Appendf(nil, "data: {\"s\":%d,\"t\":1}\r\n\r\n", seq))
	}
	s.consume([]byte("data: {\"s\":0,\"t\":1}\n\ndata: not ours\n\n"))
	if s.received != 5 || s.dups != 2 || s.outOfOrder != 2 || s.malformed != 1 || s.maxSeq != 5 {
		t.Fatalf("received %d, dups %d, out of order %d, malformed %d, max %d; want 5, 2, 2, 1, 5",
			s.received, s.dups, s.outOfOrder, s.malformed, s.maxSeq)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 10, 100, 4096} {
		p := payload(nil, 42, 1712345678901234567, size)
		if size > 40 && (len(p) < size-2 || len(p) > size+2) {
			t.Errorf("size %d: payload of %d bytes", size, len(p))
		}
		seq, sent, ok := parsePayload(p)
		if !ok || seq != 42 || sent != 1712345678901234567 {
			t.Errorf("size %d: parsed %d %d %v from %s", size, seq, sent, ok, p)
		}
	}
	// Another server's envelope around the same fields.
	if seq, sent, ok := parsePayload([]byte(` {"data": {"s": 7, "t": 99}}`)); !ok || seq != 7 || sent != 99 {
		t.Errorf("enveloped: %d %d %v", seq, sent, ok)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	var h histogram
	s := h.shard()
	// 1..10000 microseconds, once each.
	for us := int64(1); us <= 10000; us++ {
		s.add(us * 1000)
	}
	l := h.summary()
	check := func(name string, got, want float64) {
		if math.Abs(got-want)/want > 0.04 {
			t.Errorf("%s = %.3f ms, want about %.3f", name, got, want)
		}
	}
	check("p50", l.P50, 5)
	check("p90", l.P90, 9)
	check("p99", l.P99, 9.9)
	if l.Max != 10 || l.Count != 10000 {
		t.Errorf("max %v, count %d", l.Max, l.Count)
	}
	for i := range histBuckets - 1 {
		if bucketMid(i) >= bucketMid(i+1) {
			t.Fatalf("bucket %d middle %v not below bucket %d's %v", i, bucketMid(i), i+1, bucketMid(i+1))
		}
	}
	for _, us := range []uint64{0, 31, 32, 63, 64, 1000, 1 << 30} {
		if mid, b := bucketMid(bucketOf(us)), float64(us); math.Abs(mid-b) > b*0.02+0.5 {
			t.Errorf("%d µs lands in a bucket centred on %v", us, mid)
		}
	}
}

func TestReadProc(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	st, err := ReadProc(0)
	if err != nil {
		t.Fatal(err)
	}
	if st.RSSKB <= 0 {
		t.Fatalf("RSS %d KB", st.RSSKB)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

func TestCompareTableAndJSON(t *testing.T) {
	t.Parallel()
	hub := &Result{Target: "a", PIDs: []int{1}, DeliveriesPerSec: 300, CPUPerDeliveryUs: 1, RSSPerConnKB: 5, Latency: Latency{P99: 2}}
	naive := &Result{Target: "b", PIDs: []int{2}, DeliveriesPerSec: 100, CPUPerDeliveryUs: 4, RSSPerConnKB: 25, Latency: Latency{P99: 4}}
	c := Compare(hub, naive)
	for key, want := range map[string]float64{"deliveries_per_s": 3, "hub_cpu_per_delivery_us": 0.25, "hub_rss_per_conn_kb": 0.2, "p99_ms": 0.5} {
		if got := c.Ratios[key]; got != want {
			t.Errorf("ratio %s = %v, want %v", key, got, want)
		}
	}
	if _, ok := c.Ratios["p50_ms"]; ok {
		t.Error("ratio of a zero baseline figure")
	}
	var table, line bytes.Buffer
	if err := c.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "3.00x") || !strings.Contains(table.String(), "0.25x") {
		t.Errorf("table lacks ratios:\n%s", table.String())
	}
	if err := c.WriteJSON(&line); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(line.Bytes(), []byte("\n")) != 1 || !bytes.Contains(line.Bytes(), []byte(`"deliveries_per_s":3`)) {
		t.Errorf("JSON line: %s", line.String())
	}
}

func TestStartProcessNeedsURL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := StartProcess(ctx, "/bin/sh", "-c", "echo not-a-url"); err == nil {
		t.Fatal("started a server that printed no URL")
	}
	s, err := StartProcess(ctx, "/bin/sh", "-c", "echo http://127.0.0.1:1; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if s.URL != "http://127.0.0.1:1" || s.PID == 0 {
		t.Fatalf("URL %q, pid %d", s.URL, s.PID)
	}
	s.Close()
}

func TestRunSpreadsOverStreamURLs(t *testing.T) {
	t.Parallel()
	a, b := startNaive(t), startNaive(t)
	streamA, publishA := Targets(a.URL)
	streamB, _ := Targets(b.URL)
	res, err := Run(t.Context(), Options{
		StreamURLs: []string{streamA, streamB}, PublishURL: publishA,
		Subscribers: 6, Events: 10, Settle: time.Millisecond, Drain: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The naive servers share nothing: the three subscribers on A get
	// every event, the three on B none.
	if res.Deliveries != 30 || res.Lost != 30 || res.SubsWithLoss != 3 || res.MaxLostPerSub != 10 {
		t.Fatalf("deliveries %d, lost %d on %d subscribers (max %d); want 30, 30 on 3 (max 10)",
			res.Deliveries, res.Lost, res.SubsWithLoss, res.MaxLostPerSub)
	}
}
