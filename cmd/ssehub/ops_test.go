package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/ssehub/ssehub/internal/sse"
)

// scrapeMetrics reads url as Prometheus would and returns the metric families.
func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sampleValue returns the value of the first sample of a counter or gauge.
func sampleValue(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	fam := fams[name]
	if fam == nil || len(fam.Metric) == 0 {
		t.Fatalf("no metric %s", name)
	}
	m := fam.Metric[0]
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func statusOf(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestMetricsOnMainListener(t *testing.T) {
	hub := startHub(t)
	resp, err := http.Get(hub.URL + "/sse?channel=m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	d := sse.NewDecoder(resp.Body)
	hub.waitLog(t, "stream opened", 1)

	if _, errOut, code := runCLI(t, `{"n":1}`, "publish", "--url", hub.URL, "--channel", "m"); code != 0 {
		t.Fatalf("publish: %s", errOut)
	}
	if _, err := d.Next(); err != nil {
		t.Fatal(err)
	}
	fams := scrapeMetrics(t, hub.URL+"/metrics")
	for name, want := range map[string]float64{
		"ssehub_streams_open":           1,
		"ssehub_channels_subscribed":    1,
		"ssehub_events_published_total": 1,
		"ssehub_events_received_total":  1,
	} {
		if got := sampleValue(t, fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"go_build_info", "go_goroutines", "process_open_fds", "ssehub_publish_to_write_seconds"} {
		if fams[name] == nil {
			t.Errorf("no metric %s", name)
		}
	}
	if code := statusOf(t, hub.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
}

var metricsListenRE = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

func TestMetricsAddr(t *testing.T) {
	t.Run("separate", func(t *testing.T) {
		t.Parallel()
		hub := startHub(t, "--metrics-addr", "127.0.0.1:0")
		hub.waitLog(t, "metrics listening", 1)
		m := metricsListenRE.FindStringSubmatch(hub.log.String())
		if m == nil {
			t.Fatalf("no metrics address logged:\n%s", hub.log)
		}
		if fams := scrapeMetrics(t, "http://"+m[1]+"/metrics"); fams["ssehub_streams_open"] == nil {
			t.Errorf("metrics listener lacks ssehub_streams_open")
		}
		if code := statusOf(t, hub.URL+"/metrics"); code != http.StatusNotFound {
			t.Errorf("/metrics on the main listener: %d, want 404", code)
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		hub := startHub(t, "--metrics-addr", "off")
		if code := statusOf(t, hub.URL+"/metrics"); code != http.StatusNotFound {
			t.Errorf("/metrics with metrics off: %d, want 404", code)
		}
	})
}

func TestJSONLogs(t *testing.T) {
	cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := bufio.NewScanner(stderr)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("log ended: %v", lines.Err())
		}
		var rec map[string]any
		if err := json.Unmarshal(lines.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", lines.Text(), err)
		}
		return rec
	}
	var addr string
	for addr == "" {
		if rec := next(); rec["msg"] == "listening" {
			addr, _ = rec["addr"].(string)
		}
	}
	resp, err := http.Get("http://" + addr + "/sse?channel=j")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if rec := next(); rec["msg"] == "stream opened" {
			if rec["level"] != "INFO" || rec["remote"] == nil {
				t.Errorf("stream opened: %v", rec)
			}
			break
		}
	}
	resp.Body.Close()
	for {
		if rec := next(); rec["msg"] == "stream closed" {
			if _, ok := rec["duration"].(float64); !ok || rec["events"] != 0.0 {
				t.Errorf("stream closed: %v", rec)
			}
			break
		}
	}
}

func TestServeBadOpsValues(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"log format", []string{"--log-format", "xml"}, "", "must be text or json"},
		{"log format env", nil, "SSEHUB_LOG_FORMAT=yaml", "SSEHUB_LOG_FORMAT"},
		{"log level", []string{"--log-level", "loud"}, "", "-log-level"},
		{"log level env", nil, "SSEHUB_LOG_LEVEL=loud", "SSEHUB_LOG_LEVEL"},
		{"negative drain", []string{"--drain", "-1s"}, "", "--drain -1s is negative"},
		{"drain env", nil, "SSEHUB_DRAIN=soon", "SSEHUB_DRAIN"},
		{"metrics address", []string{"--metrics-addr", "127.0.0.1:nope"}, "", "--metrics-addr"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0"}, c.args...)...)
			if c.env != "" {
				cmd.Env = append(cmd.Environ(), c.env)
			}
			out, err := cmd.CombinedOutput()
			if err == nil || strings.Count(string(out), "\n") != 1 || !strings.HasPrefix(string(out), "ssehub: serve: ") ||
				!strings.Contains(string(out), c.want) {
				t.Fatalf("err %v, output %q; want one line 'ssehub: serve: ...%s...'", err, out, c.want)
			}
		})
	}
}

// TestDrainOnSIGTERM drains a hub with open streams: each stream gets the
// events published before the signal, then a retry with jitter, and ends
// cleanly; the process exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	const n = 12
	hub := startHub(t, "--drain", "1s", "--retry", "2s")
	decoders := make([]*sse.Decoder, n)
	bodies := make([]io.ReadCloser, n)
	for i := range decoders {
		resp, err := http.Get(hub.URL + "/sse?channel=d")
		if err != nil {
			t.Fatal(err)
		}
		bodies[i] = resp.Body
		decoders[i] = sse.NewDecoder(resp.Body)
	}
	hub.waitLog(t, "stream opened", n)
	out, errOut, code := runCLI(t, `{"last":true}`, "publish", "--url", hub.URL, "--channel", "d")
	if code != 0 {
		t.Fatalf("publish: %s", errOut)
	}
	id := strings.TrimSpace(out)
	if err := hub.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		retries = map[int]bool{}
	)
	for i, d := range decoders {
		wg.Go(func() {
			defer bodies[i].Close()
			var last sse.Event
			for {
				e, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Errorf("stream %d ended with %v, want a clean end", i, err)
					return
				}
				last = e
			}
			if last.LastEventID != id {
				t.Errorf("stream %d: last event %+v, want id %s", i, last, id)
			}
			// 2s, plus up to one wave interval (1s over 10 waves).
			if r := d.Retry(); r < 2000 || r >= 2100 {
				t.Errorf("stream %d: drain retry %d, want in [2000, 2100)", i, r)
			}
			mu.Lock()
			retries[d.Retry()] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	select {
	case <-hub.done:
	case <-time.After(30 * time.Second):
		t.Fatal("hub did not exit after SIGTERM")
	}
	if code := hub.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, hub.log)
	}
	if len(retries) < 2 {
		t.Errorf("every stream was told the same retry %v; want jitter", retries)
	}
	logs := hub.log.String()
	if !strings.Contains(logs, `msg="hub draining" streams=`+strconv.Itoa(n)+` waves=10`) {
		t.Errorf("no drain of %d streams in 10 waves logged:\n%s", n, logs)
	}
	if got := strings.Count(logs, "reason=drained"); got != n {
		t.Errorf("%d streams closed as drained, want %d:\n%s", got, n, logs)
	}
}

func TestVersion(t *testing.T) {
	out, errOut, code := runCLI(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "ssehub ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	saved := version
	defer func() { version = saved }()
	version = "v1.2.3"
	if v, _ := buildVersion(); v != "v1.2.3" {
		t.Errorf("buildVersion with -X main.version=v1.2.3: %q", v)
	}
}
