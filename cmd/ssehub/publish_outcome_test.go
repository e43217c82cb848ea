package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ssehub/ssehub/internal/redistest"
)

// TestPublishIdempotencyKey: `publish --idempotency-key` sent twice
// publishes once and prints the same id, through a hub and straight into
// Redis.
func TestPublishIdempotencyKey(t *testing.T) {
	srv := redistest.Start(t)
	hub := startHub(t, "--broker", srv.URL())
	events := openEvents(t, hub.URL+"/sse?channel=k", "")
	hub.waitLog(t, "stream opened", 1)
	var ids []string
	for _, args := range [][]string{
		{"--url", hub.URL, "--idempotency-key", "order-1"},
		{"--url", hub.URL, "--idempotency-key", "order-1"},
		{"--broker", srv.URL(), "--idempotency-key", "order-1"},
		{"--broker", srv.URL(), "--idempotency-key", "order-2"},
		{"--url", hub.URL, "--idempotency-key", "order-2"},
	} {
		out, errOut, code := runCLI(t, `{"n": 1}`, append([]string{"publish", "--channel", "k"}, args...)...)
		if code != 0 {
			t.Fatalf("publish %v: exit %d, %s", args, code, errOut)
		}
		ids = append(ids, strings.TrimSpace(out))
	}
	if ids[1] != ids[0] || ids[2] != ids[0] || ids[4] != ids[3] || ids[3] == ids[0] {
		t.Fatalf("ids %v, want one per key", ids)
	}
	_, errOut, code := runCLI(t, `{"n": 2}`, "publish", "--url", hub.URL, "--channel", "k", "--idempotency-key", "order-1")
	if code == 0 || !strings.Contains(errOut, "(422)") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("a key with another message: exit %d, stderr %q; want a one-line 422", code, errOut)
	}
	for _, want := range []string{ids[0], ids[3]} {
		if e := events.next(t); e.LastEventID != want {
			t.Fatalf("event id %s, want %s", e.LastEventID, want)
		}
	}
}

// TestPublishOutcomeUnknown freezes Redis under a hub: `publish` exits
// non-zero with one line that says the outcome is unknown and how to send
// the message again. Sent again with that key once Redis is back, the
// message is published once.
func TestPublishOutcomeUnknown(t *testing.T) {
	srv := redistest.Start(t)
	hub := startHub(t, "--broker", srv.URL(), "--publish-timeout", "500ms")
	events := openEvents(t, hub.URL+"/sse?channel=u", "")
	hub.waitLog(t, "stream opened", 1)

	srv.Freeze()
	_, errOut, code := runCLI(t, `{"n": 1}`, "publish", "--url", hub.URL, "--channel", "u")
	srv.Thaw()
	m := regexp.MustCompile(`^ssehub: publish: outcome unknown: .*\(504\).*send it again with --idempotency-key (\S+) to publish it at most once\n$`).FindStringSubmatch(errOut)
	if code == 0 || m == nil {
		t.Fatalf("publish with Redis frozen: exit %d, stderr %q; want one line saying the outcome is unknown, with the key", code, errOut)
	}
	out, errOut, code := runCLI(t, `{"n": 1}`, "publish", "--url", hub.URL, "--channel", "u", "--idempotency-key", m[1])
	if code != 0 {
		t.Fatalf("publish again: exit %d, %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	last, _, _ := runCLI(t, `{"n": 2}`, "publish", "--url", hub.URL, "--channel", "u")
	for _, want := range []string{id, strings.TrimSpace(last)} {
		if e := events.next(t); e.LastEventID != want {
			t.Fatalf("event %+v, want id %s (the message once, then the next)", e, want)
		}
	}

}

// TestQuickStartReusedID: the README's quick start publishes with --id
// 12345; run twice, the id names two events, and a client resuming from
// it gets a reset instead of skipping what came between.
func TestQuickStartReusedID(t *testing.T) {
	hub := startHub(t)
	publish := func(args ...string) string {
		t.Helper()
		out, errOut, code := runCLI(t, `{"code": "ACK", "msg": "cool message"}`, append([]string{"publish", "--url", hub.URL, "--channel", "cool_channel"}, args...)...)
		if code != 0 {
			t.Fatalf("publish: exit %d, %s", code, errOut)
		}
		return strings.TrimSpace(out)
	}
	publish("--type", "cool", "--id", "12345", "--retry", "6000")
	between := publish()
	resumed := openEvents(t, hub.URL+"/sse?channel=cool_channel", "12345")
	if e := resumed.next(t); e.LastEventID != between {
		t.Fatalf("resume from 12345 used once: %+v, want the event after it", e)
	}
	publish("--type", "cool", "--id", "12345", "--retry", "6000")
	publish()
	resumed = openEvents(t, hub.URL+"/sse?channel=cool_channel", "12345")
	if e := resumed.next(t); e.Type != "ssehub.reset" {
		t.Fatalf("resume from 12345 used twice: %+v, want a reset", e)
	}
	live := publish()
	if e := resumed.next(t); e.LastEventID != live {
		t.Fatalf("after the reset: %+v, want the next event, %s", e, live)
	}
}
