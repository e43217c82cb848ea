package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// help runs `ssehub args... --help` in this process and returns stdout.
func help(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), append(args, "--help"), nil, &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) || errOut.Len() > 0 {
		t.Fatalf("%v --help: %v, stderr %q", args, err, errOut.String())
	}
	return out.String()
}

// TestServeHelpGrouped: every flag of serve is in one of the groups, and
// --help lists them under their headings in order, with examples, the
// defaults as a user types them, how to turn a boolean off, and each
// flag's environment variable.
func TestServeHelpGrouped(t *testing.T) {
	t.Parallel()
	var serve *flagSet
	for _, fs := range catalog() {
		if fs.cmd == "serve" {
			serve = fs
		}
	}
	if serve == nil {
		t.Fatal("no serve command in the catalog")
	}
	serve.VisitAll(func(f *flag.Flag) {
		if m := serve.meta[f.Name]; m == nil || !slices.Contains(serveGroups, m.group) {
			t.Errorf("--%s is in no group of serve --help; define it with fs.group(...)", f.Name)
		}
	})

	out := help(t, "serve")
	last := -1
	for _, g := range serveGroups {
		i := strings.Index(out, "\n"+g+":\n")
		if i < 0 || i < last {
			t.Errorf("heading %q missing or out of order:\n%s", g, out)
		}
		last = i
	}
	if strings.Contains(out, "Other flags:") || strings.Contains(out, "\nFlags:") {
		t.Errorf("serve --help has ungrouped flags:\n%s", out)
	}
	// Each flag's entry: its line, then its usage up to the next flag or
	// heading, ending with its environment variable.
	entry := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)[^\n]*\n((?:        [^\n]*\n)+)`)
	seen := map[string]bool{}
	for _, m := range entry.FindAllStringSubmatch(out, -1) {
		seen[m[1]] = true
		if want := "[$" + envName(m[1]) + "]"; !strings.HasSuffix(strings.TrimSpace(m[2]), want) {
			t.Errorf("--%s: usage does not end with %s:\n%s", m[1], want, m[2])
		}
	}
	serve.VisitAll(func(f *flag.Flag) {
		if !seen[f.Name] {
			t.Errorf("--%s is not listed", f.Name)
		}
	})
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"Examples: ssehub serve ssehub serve --addr",
		"(default 127.0.0.1:8080) [$SSEHUB_ADDR]",
		"(default info) [$SSEHUB_LOG_LEVEL]",
		"(default 1h) [$SSEHUB_HISTORY_AGE]",
		"(default 15s) [$SSEHUB_HEARTBEAT]",
		"(default true; --detach=false turns it off) [$SSEHUB_DETACH]",
		"--name=false turns it off",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"INFO", "1h0m0s", "(default false)"} {
		if strings.Contains(out, bad) {
			t.Errorf("serve --help shows %q:\n%s", bad, out)
		}
	}
}

func TestVersionHelpHasNoEmptyFlagsHeading(t *testing.T) {
	t.Parallel()
	out := help(t, "version")
	if strings.Contains(out, "Flags") || !strings.HasPrefix(out, "Usage: ssehub version\n") {
		t.Fatalf("version --help:\n%s", out)
	}
}

// TestEnvironmentOneMeaning: a variable that several commands read has one
// type in all of them, and the settings of one run read none, so that
// SSEHUB_* set for a deployment cannot break a command.
func TestEnvironmentOneMeaning(t *testing.T) {
	t.Parallel()
	type reader struct{ cmd, flag, typ string }
	readers := map[string][]reader{}
	for _, fs := range catalog() {
		fs.VisitAll(func(f *flag.Flag) {
			if v := fs.envOf(f.Name); v != "" {
				typ := fmt.Sprintf("%T", (&checkedValue{Value: unwrap(f.Value)}).Get())
				readers[v] = append(readers[v], reader{fs.cmd, f.Name, typ})
			}
		})
	}
	for v, rs := range readers {
		for _, r := range rs[1:] {
			if r.typ != rs[0].typ {
				t.Errorf("%s is a %s to %s --%s but a %s to %s --%s", v, rs[0].typ, rs[0].cmd, rs[0].flag, r.typ, r.cmd, r.flag)
			}
		}
	}
	// The clashes of earlier versions.
	for _, c := range []struct{ cmd, flag string }{
		{"publish", "retry"}, {"publish", "channel"}, {"publish", "type"}, {"publish", "id"},
		{"subscribe", "token"}, {"subscribe", "channel"}, {"subscribe", "count"},
		{"bench", "drain"}, {"bench", "url"}, {"bench", "events"},
	} {
		for _, fs := range catalog() {
			if fs.cmd == c.cmd && fs.envOf(c.flag) != "" {
				t.Errorf("%s --%s reads %s", c.cmd, c.flag, fs.envOf(c.flag))
			}
		}
	}
	for v, want := range map[string][]string{
		"SSEHUB_RETRY":         {"serve"},
		"SSEHUB_DRAIN":         {"serve"},
		"SSEHUB_BROKER":        {"publish", "serve"},
		"SSEHUB_PUBLISH_TOKEN": {"publish", "serve"},
		"SSEHUB_URL":           {"publish", "subscribe"},
	} {
		var got []string
		for _, r := range readers[v] {
			got = append(got, r.cmd)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s is read by %v, want %v", v, got, want)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, sse, publish string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/sse", "http://127.0.0.1:8080/publish"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/sse", "http://127.0.0.1:8080/publish"},
		{"https://hub.example/ssehub/", "https://hub.example/ssehub/sse", "https://hub.example/ssehub/publish"},
		{"http://h/sse", "http://h/sse", "http://h/publish"},
		{"http://h/prefix/publish", "http://h/prefix/sse", "http://h/prefix/publish"},
		{"http://h/sse?channel=a", "http://h/sse?channel=a", "http://h/publish?channel=a"},
		{"http://h/events", "http://h/events", "http://h/events"},
		{"http://h/events?topic=x", "http://h/events?topic=x", "http://h/events?topic=x"},
	} {
		for endpoint, want := range map[string]string{"sse": c.sse, "publish": c.publish} {
			u, err := endpointURL(c.in, endpoint)
			if err != nil || u.String() != want {
				t.Errorf("endpointURL(%q, %q) = %v, %v; want %s", c.in, endpoint, u, err, want)
			}
		}
	}
	for _, bad := range []string{"127.0.0.1:8080", "ftp://h/", "http://", "::"} {
		if _, err := endpointURL(bad, "sse"); err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:8080") {
			t.Errorf("endpointURL(%q): %v, want a refusal with an example", bad, err)
		}
	}
	got, err := streamURL("http://h/events?topic=x", []string{"a", "b"})
	if err != nil || got != "http://h/events?channel=a&channel=b&position=1&topic=x" {
		t.Errorf("streamURL with channels: %q, %v", got, err)
	}
}

func TestClosest(t *testing.T) {
	t.Parallel()
	names := []string{"addr", "broker", "history-size", "history-age", "heartbeat", "metrics-addr"}
	for in, want := range map[string][]string{
		"adr":          {"addr"},
		"histroy-size": {"history-size"},
		"history":      {"history-age", "history-size"},
		"brokr":        {"broker"},
		"zzz":          nil,
	} {
		if got := closest(in, names); !slices.Equal(got, want) {
			t.Errorf("closest(%q) = %v, want %v", in, got, want)
		}
	}
}
