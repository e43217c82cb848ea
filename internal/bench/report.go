package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Result holds the figures of one run.
type Result struct {
	Target      string  `json:"target"`
	PIDs        []int   `json:"pids,omitempty"`
	Subscribers int     `json:"subscribers"`
	Channels    int     `json:"channels"`
	Rate        float64 `json:"rate"`
	Window      int     `json:"window"`
	Inflight    int     `json:"inflight"`
	Slow        int     `json:"slow,omitempty"`
	Stalled     int     `json:"stalled,omitempty"`
	GOMAXPROCS  int     `json:"gomaxprocs"`

	Connected      int     `json:"connected"`
	ConnectErrors  int     `json:"connect_errors"`
	FirstError     string  `json:"first_error,omitempty"`
	ConnectSeconds float64 `json:"connect_s"`
	ConnectRate    float64 `json:"connect_per_s"`

	Published      int     `json:"published"`
	PublishErrors  int     `json:"publish_errors"`
	WindowStalls   int     `json:"window_stalls"`
	PublishSeconds float64 `json:"publish_s"`

	Deliveries       int64   `json:"deliveries"`
	Expected         int64   `json:"expected"`
	DeliverySeconds  float64 `json:"delivery_s"`
	DeliveriesPerSec float64 `json:"deliveries_per_s"`
	Latency          Latency `json:"latency"`

	Lost          int64 `json:"lost"`
	Duplicated    int64 `json:"duplicated"`
	OutOfOrder    int64 `json:"out_of_order"`
	Malformed     int64 `json:"malformed"`
	SubsWithLoss  int   `json:"subscribers_with_loss"`
	MaxLostPerSub int64 `json:"max_lost_per_subscriber"`
	Disconnected  int   `json:"disconnected"`
	StalledCut    int   `json:"stalled_cut"`
	Resets        int64 `json:"resets"`
	Heartbeats    int64 `json:"heartbeats"`
	MinHeartbeats int64 `json:"min_heartbeats_per_subscriber"`

	HubRSSBeforeKB   int64   `json:"hub_rss_before_kb,omitempty"`
	HubRSSIdleKB     int64   `json:"hub_rss_idle_kb,omitempty"`
	HubRSSPeakKB     int64   `json:"hub_rss_peak_kb,omitempty"`
	RSSPerConnKB     float64 `json:"hub_rss_per_conn_kb,omitempty"`
	HubCPUSeconds    float64 `json:"hub_cpu_s,omitempty"`
	CPUPerDeliveryUs float64 `json:"hub_cpu_per_delivery_us,omitempty"`
	ToolCPUSeconds   float64 `json:"tool_cpu_s"`
}

// Comparison is a run against the hub beside the same run against the
// naive baseline, with each figure as a ratio to the baseline's.
type Comparison struct {
	Hub      *Result            `json:"hub"`
	Baseline *Result            `json:"baseline,omitempty"`
	Ratios   map[string]float64 `json:"ratios,omitempty"`
}

// figure is one row of the report.
type figure struct {
	key    string
	label  string
	value  func(*Result) float64
	format string
	ratio  bool // worth a ratio to the baseline
}

var figures = []figure{
	{"connected", "subscribers connected", func(r *Result) float64 { return float64(r.Connected) }, "%.0f", false},
	{"connect_per_s", "connect rate (/s)", func(r *Result) float64 { return r.ConnectRate }, "%.0f", true},
	{"published", "events published", func(r *Result) float64 { return float64(r.Published) }, "%.0f", false},
	{"deliveries", "deliveries", func(r *Result) float64 { return float64(r.Deliveries) }, "%.0f", false},
	{"deliveries_per_s", "deliveries/s", func(r *Result) float64 { return r.DeliveriesPerSec }, "%.0f", true},
	{"p50_ms", "latency p50 (ms)", func(r *Result) float64 { return r.Latency.P50 }, "%.3f", true},
	{"p90_ms", "latency p90 (ms)", func(r *Result) float64 { return r.Latency.P90 }, "%.3f", true},
	{"p99_ms", "latency p99 (ms)", func(r *Result) float64 { return r.Latency.P99 }, "%.3f", true},
	{"max_ms", "latency max (ms)", func(r *Result) float64 { return r.Latency.Max }, "%.3f", true},
	{"lost", "lost", func(r *Result) float64 { return float64(r.Lost) }, "%.0f", false},
	{"duplicated", "duplicated", func(r *Result) float64 { return float64(r.Duplicated) }, "%.0f", false},
	{"out_of_order", "out of order", func(r *Result) float64 { return float64(r.OutOfOrder) }, "%.0f", false},
	{"subscribers_with_loss", "subscribers with loss", func(r *Result) float64 { return float64(r.SubsWithLoss) }, "%.0f", false},
	{"disconnected", "streams cut by server", func(r *Result) float64 { return float64(r.Disconnected) }, "%.0f", false},
	{"stalled_cut", "stalled streams cut", func(r *Result) float64 { return float64(r.StalledCut) }, "%.0f", false},
	{"resets", "reset events", func(r *Result) float64 { return float64(r.Resets) }, "%.0f", false},
	{"min_heartbeats", "heartbeats (min per sub)", func(r *Result) float64 { return float64(r.MinHeartbeats) }, "%.0f", false},
	{"hub_rss_per_conn_kb", "hub RSS per idle conn (KB)", func(r *Result) float64 { return r.RSSPerConnKB }, "%.2f", true},
	{"hub_rss_growth_mb", "hub RSS growth under load (MB)", func(r *Result) float64 { return float64(max(r.HubRSSPeakKB-r.HubRSSIdleKB, 0)) / 1024 }, "%.1f", true},
	{"hub_cpu_s", "hub CPU (s)", func(r *Result) float64 { return r.HubCPUSeconds }, "%.2f", true},
	{"hub_cpu_per_delivery_us", "hub CPU per delivery (µs)", func(r *Result) float64 { return r.CPUPerDeliveryUs }, "%.3f", true},
	{"tool_cpu_s", "load tool CPU (s)", func(r *Result) float64 { return r.ToolCPUSeconds }, "%.2f", false},
}

// Compare returns hub beside baseline (which may be nil) with the ratios
// of the figures where a ratio means something.
func Compare(hub, baseline *Result) *Comparison {
	c := &Comparison{Hub: hub, Baseline: baseline}
	if baseline == nil {
		return c
	}
	c.Ratios = map[string]float64{}
	for _, f := range figures {
		if !f.ratio {
			continue
		}
		if r, ok := ratio(f.value(hub), f.value(baseline)); ok {
			c.Ratios[f.key] = r
		}
	}
	return c
}

func ratio(a, b float64) (float64, bool) {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return 0, false
	}
	return math.Round(a/b*1000) / 1000, true
}

// WriteTable writes c as a human-readable table.
func (c *Comparison) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if c.Baseline != nil {
		fmt.Fprintf(tw, "\thub\tnaive\tratio\t\n")
	} else {
		fmt.Fprintf(tw, "\thub\t\n")
	}
	for _, f := range figures {
		if strings.HasPrefix(f.key, "hub_") && len(c.Hub.PIDs) == 0 {
			continue
		}
		if f.key == "stalled_cut" && c.Hub.Stalled == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t"+f.format+"\t", f.label, f.value(c.Hub))
		if c.Baseline != nil {
			fmt.Fprintf(tw, f.format+"\t", f.value(c.Baseline))
			if r, ok := c.Ratios[f.key]; ok {
				fmt.Fprintf(tw, "%.2fx\t", r)
			} else {
				fmt.Fprintf(tw, "\t")
			}
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range []*Result{c.Hub, c.Baseline} {
		if r != nil && r.FirstError != "" {
			fmt.Fprintf(w, "first connect error (%s): %s\n", r.Target, r.FirstError)
		}
	}
	return nil
}

// WriteJSON writes c as one line of JSON.
func (c *Comparison) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
