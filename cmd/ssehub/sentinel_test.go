package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSentinelURLs(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url string
		err string
		// For a valid URL: what the failover client gets.
		addrs, master, user, pass, sentinelPass string
		db                                      int
		dial                                    time.Duration
	}{
		{url: "redis-sentinel://127.0.0.1:26379/mymaster", addrs: "127.0.0.1:26379", master: "mymaster"},
		{url: "redis-sentinel://a:1,b:2,[::1]:3/m?db=3", addrs: "a:1,b:2,[::1]:3", master: "m", db: 3},
		{url: "redis-sentinel://u:secret@a:1/m?sentinel_password=secret2&dial_timeout=2s", addrs: "a:1", master: "m", user: "u", pass: "secret", sentinelPass: "secret2", dial: 2 * time.Second},
		{url: "redis-sentinel://a:1/m?password=secret", addrs: "a:1", master: "m", pass: "secret"},
		{url: "redis-sentinel://a:1", err: "no master name"},
		{url: "redis-sentinel://a:1/", err: "no master name"},
		{url: "redis-sentinel:///m", err: "no sentinel HOST:PORT"},
		{url: "redis-sentinel://u:secret@/m", err: "no sentinel HOST:PORT"},
		{url: "redis-sentinel://a:1,/m", err: `sentinel "" is not HOST:PORT`},
		{url: "redis-sentinel://a/m", err: `sentinel "a" is not HOST:PORT`},
		{url: "redis-sentinel://a:99999/m", err: "is not HOST:PORT"},
		{url: "redis-sentinel://u:secret@a:1/m?db=x", err: `invalid database "x"`},
		{url: "redis-sentinel://a:1/m?db=-1&sentinel_password=secret", err: `invalid database "-1"`},
		{url: "redis-sentinel://a:1/m?pool=3&password=secret", err: `unknown parameter "pool"`},
		{url: "redis-sentinel://a:1/m?dial_timeout=soon", err: "not a duration"},
	} {
		s, err := parseSentinelURL(tt.url)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want one saying %q", tt.url, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error shows a password: %v", tt.url, err)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: the error is more than one line: %q", tt.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		o := s.opt
		if got := strings.Join(o.SentinelAddrs, ","); got != tt.addrs || o.MasterName != tt.master || o.DB != tt.db ||
			o.Username != tt.user || o.Password != tt.pass || o.SentinelPassword != tt.sentinelPass || o.DialTimeout != tt.dial {
			t.Errorf("%s: addrs %q master %q db %d user %q password %q sentinel password %q dial %v", tt.url,
				got, o.MasterName, o.DB, o.Username, o.Password, o.SentinelPassword, o.DialTimeout)
		}
		if strings.Contains(s.shown, "secret") {
			t.Errorf("%s: shown as %q, with a password", tt.url, s.shown)
		}
		if shown := redactURL(tt.url); shown != s.shown {
			t.Errorf("%s: redactURL %q, want %q", tt.url, shown, s.shown)
		}
	}
	// openBroker takes it; nothing connects before the first call.
	b, closeBroker, err := openBroker(context.Background(), "redis-sentinel://127.0.0.1:1/m", brokerOptions{})
	if err != nil || b == nil {
		t.Fatalf("openBroker: %v", err)
	}
	closeBroker(context.Background())
}

// TestSentinelURLErrors: serve and publish refuse a bad Sentinel URL with
// one line and a non-zero exit, before connecting anywhere.
func TestSentinelURLErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--broker", "redis-sentinel://127.0.0.1:1"},
		{"serve", "--addr", "127.0.0.1:0", "--broker", "redis-sentinel:///m"},
		{"publish", "--channel", "c", "--broker", "redis-sentinel://u:secret@127.0.0.1:1/m?db=x"},
		{"publish", "--channel", "c", "--broker", "redis-sentinel://127.0.0.1:1,/m"},
	} {
		_, errOut, code := runCLI(t, `{}`, args...)
		if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "redis-sentinel://") || strings.Contains(errOut, "secret") {
			t.Errorf("%v: exit %d, stderr %q; want one line naming the URL's form, without the password", args, code, errOut)
		}
	}
}

// TestServeWarnsOfUnreachableSentinels: a hub whose sentinels do not
// answer says so once it listens, naming them and the master, and serves
// anyway.
func TestServeWarnsOfUnreachableSentinels(t *testing.T) {
	t.Parallel()
	hub := startHub(t, "--broker", "redis-sentinel://u:secret@127.0.0.1:1,127.0.0.1:2/mymaster")
	hub.waitLog(t, "broker unreachable; serving anyway and retrying", 1)
	log := hub.log.String()
	if want := `are the sentinels at 127.0.0.1:1,127.0.0.1:2 running, and do they name a master \"mymaster\" that answers?`; !strings.Contains(log, want) {
		t.Errorf("log lacks %s:\n%s", want, log)
	}
	if strings.Contains(log, "secret") {
		t.Errorf("log shows the password:\n%s", log)
	}
	if r := readyz(t, hub.URL); r.status != http.StatusServiceUnavailable || !strings.Contains(r.Error, "sentinels") {
		t.Errorf("/readyz with no sentinel: %+v", r)
	}
}
