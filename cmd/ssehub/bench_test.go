package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestBenchAgainstServeWithBaseline(t *testing.T) {
	hub := startHub(t)
	stdout, stderr, code := runCLI(t, "", "bench", "--url", hub.URL, "--pid", strconv.Itoa(hub.cmd.Process.Pid),
		"--subscribers", "20", "--channels", "2", "--events", "100", "--settle", "10ms", "--baseline", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var out struct {
		Hub, Baseline struct {
			Connected    int     `json:"connected"`
			Deliveries   int64   `json:"deliveries"`
			Lost         int64   `json:"lost"`
			Duplicated   int64   `json:"duplicated"`
			OutOfOrder   int64   `json:"out_of_order"`
			RSSPerConnKB float64 `json:"hub_rss_per_conn_kb"`
			PIDs         []int   `json:"pids"`
		}
		Ratios map[string]float64
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("want one JSON line, got %v:\n%s", err, stdout)
	}
	for name, r := range map[string]struct {
		Connected    int     `json:"connected"`
		Deliveries   int64   `json:"deliveries"`
		Lost         int64   `json:"lost"`
		Duplicated   int64   `json:"duplicated"`
		OutOfOrder   int64   `json:"out_of_order"`
		RSSPerConnKB float64 `json:"hub_rss_per_conn_kb"`
		PIDs         []int   `json:"pids"`
	}{"hub": out.Hub, "baseline": out.Baseline} {
		if r.Connected != 20 || r.Deliveries != 20*50 || r.Lost+r.Duplicated+r.OutOfOrder != 0 {
			t.Errorf("%s: %+v", name, r)
		}
		if len(r.PIDs) != 1 || r.PIDs[0] == 0 {
			t.Errorf("%s: no process to measure: %+v", name, r)
		}
	}
	if out.Baseline.PIDs[0] == hub.cmd.Process.Pid {
		t.Error("the baseline ran in the hub's process")
	}
	if out.Ratios["deliveries_per_s"] <= 0 {
		t.Errorf("no deliveries/s ratio: %v", out.Ratios)
	}
}

func TestBenchRefusesRemoteTargets(t *testing.T) {
	t.Parallel()
	_, stderr, code := runCLI(t, "", "bench", "--url", "http://192.0.2.1:8080", "--subscribers", "1")
	if code == 0 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "loopback") {
		t.Fatalf("exit %d, stderr %q; want a one-line refusal", code, stderr)
	}
}
