package promhub_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
	"github.com/ssehub/ssehub/promhub"
)

// scraper reads a /metrics endpoint over HTTP, as Prometheus would.
type scraper struct {
	t   *testing.T
	url string
}

func newScraper(t *testing.T, reg *prometheus.Registry) *scraper {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return &scraper{t: t, url: srv.URL}
}

func (s *scraper) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	req, _ := http.NewRequestWithContext(s.t.Context(), http.MethodGet, s.url, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of name whose labels include
// labels (name=value pairs), or the sample count of a histogram.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with labels %v", name, labels)
	return 0
}

type want struct {
	name   string
	labels []string
	value  float64
}

func check(t *testing.T, fams map[string]*dto.MetricFamily, wants []want) {
	t.Helper()
	for _, w := range wants {
		if got := value(t, fams, w.name, w.labels...); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
}

func newHub(t *testing.T, cfg ssehub.Config) (*ssehub.Hub, *scraper) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := promhub.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	hub, err := ssehub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return hub, newScraper(t, reg)
}

// openStream opens GET /sse on channel with a Last-Event-ID and returns a
// decoder of its body.
func openStream(t *testing.T, url, channel, lastID string) *sse.Decoder {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/sse?channel="+channel, nil)
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sse: %s", resp.Status)
	}
	return sse.NewDecoder(resp.Body)
}

func next(t *testing.T, d *sse.Decoder) sse.Event {
	t.Helper()
	e, err := d.Next()
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	return e
}

func TestMetricsFollowEvents(t *testing.T) {
	t.Parallel()
	hub, sc := newHub(t, ssehub.Config{Heartbeat: -1})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	ctx := t.Context()

	check(t, sc.scrape(), []want{
		{"ssehub_streams_open", nil, 0},
		{"ssehub_events_published_total", nil, 0},
		{"ssehub_replays_total", []string{"outcome", "resumed"}, 0},
		{"ssehub_replays_total", []string{"outcome", "reset"}, 0},
		{"ssehub_replays_total", []string{"outcome", "failed"}, 0},
		{"ssehub_publish_to_write_seconds", nil, 0},
	})

	first, err := hub.Publish(ctx, ssehub.Message{Channel: "a", Data: json.RawMessage(`0`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Publish(ctx, ssehub.Message{Channel: "a", Data: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	resumed := openStream(t, srv.URL, "a", first)
	if e := next(t, resumed); e.Data != "1" {
		t.Fatalf("resumed stream replayed %q, want 1", e.Data)
	}
	reset := openStream(t, srv.URL, "a", "no-such-id")
	if e := next(t, reset); e.Type != ssehub.ResetType {
		t.Fatalf("reset stream got type %q, want %s", e.Type, ssehub.ResetType)
	}
	check(t, sc.scrape(), []want{
		{"ssehub_streams_open", nil, 2},
		{"ssehub_streams_opened_total", nil, 2},
		{"ssehub_channels_subscribed", nil, 1},
		{"ssehub_events_published_total", nil, 2},
		{"ssehub_events_received_total", nil, 0},
		{"ssehub_replays_total", []string{"outcome", "resumed"}, 1},
		{"ssehub_replays_total", []string{"outcome", "reset"}, 1},
	})

	for i := range 3 {
		body := `{"channel":"a","data":` + string(rune('2'+i)) + `}`
		resp, err := http.Post(srv.URL+"/publish", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /publish: %s", resp.Status)
		}
		for _, d := range []*sse.Decoder{resumed, reset} {
			if e := next(t, d); e.Data != string(rune('2'+i)) {
				t.Fatalf("live event %q, want %c", e.Data, '2'+i)
			}
		}
	}
	check(t, sc.scrape(), []want{
		{"ssehub_events_published_total", nil, 5},
		{"ssehub_events_received_total", nil, 3},
	})

	// Close waits for the streams to end, so every write is counted.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := hub.Close(cctx); err != nil {
		t.Fatal(err)
	}
	check(t, sc.scrape(), []want{
		{"ssehub_streams_open", nil, 0},
		{"ssehub_streams_opened_total", nil, 2},
		{"ssehub_channels_subscribed", nil, 0},
		// One replayed or reset event and three live ones per stream.
		{"ssehub_events_written_total", nil, 8},
		// Live events only.
		{"ssehub_publish_to_write_seconds", nil, 6},
		{"ssehub_slow_subscribers_total", nil, 0},
	})
}

func TestMetricsSlowSubscriber(t *testing.T) {
	t.Parallel()
	hub, sc := newHub(t, ssehub.Config{Broker: ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: 2})})
	ctx := t.Context()
	slow, err := hub.Subscribe(ctx, []string{"a"}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	for i := range 3 {
		if _, err := hub.Publish(ctx, ssehub.Message{Channel: "a", Data: json.RawMessage(`1`)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The first event left the history before the subscriber read it: it
	// goes on with a reset.
	if e, err := slow.Next(ctx); err != nil || e.Type != ssehub.ResetType {
		t.Fatalf("Next = %+v, %v; want a reset", e, err)
	}
	check(t, sc.scrape(), []want{
		{"ssehub_slow_subscribers_total", nil, 1},
		{"ssehub_replays_total", []string{"outcome", "reset"}, 1},
	})
}

func TestMetricsBroker(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := promhub.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	var bm ssehub.BrokerMetrics = m
	bm.BrokerError()
	bm.BrokerError()
	bm.BrokerReconnected()
	check(t, newScraper(t, reg).scrape(), []want{
		{"ssehub_broker_errors_total", nil, 2},
		{"ssehub_broker_reconnects_total", nil, 1},
	})
}

func TestNewTwiceOnOneRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := promhub.New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := promhub.New(reg); err == nil {
		t.Fatal("second New on the same registry succeeded")
	}
}
