package redisbroker_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// runPython runs a Python program with the package in ../../python on its
// path and returns what it prints. It needs Debian's python3 with redis-py;
// without them a local run skips, and a CI run fails.
func runPython(t *testing.T, program string, args ...string) string {
	t.Helper()
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import redis").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s with redis-py is needed: %v", python, err)
		}
		t.Skipf("%s with redis-py is not installed (apt-get install python3-redis)", python)
	}
	root, err := filepath.Abs("../../python")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), python, append([]string{"-c", program}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+root, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, exitStderr(err))
	}
	return string(out)
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestPythonPublisherResume: events published with the Python package's
// Publisher("redis://...") reach a live stream, and a stream opened with
// Last-Event-ID set to an id that publish() returned resumes exactly after
// it: the later events in order, no reset.
func TestPythonPublisherResume(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	th := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	live := openStream(t, th.srv.URL, []string{"py"}, "")
	out := runPython(t, `
import json, sys
from ssehub import Publisher
pub = Publisher(sys.argv[1])
ids = [pub.publish({"n": 1}, channel="py"),
       pub.publish("two", type_="cool", channel="py"),
       pub.publish([3], id_=12345, retry="6000", channel="py"),
       pub.publish(None, channel="py")]
print(json.dumps(ids))
`, srv.URL())
	var ids []string
	if err := json.Unmarshal([]byte(out), &ids); err != nil || len(ids) != 4 {
		t.Fatalf("python printed %q", out)
	}
	if !regexp.MustCompile(`^\d{16}$`).MatchString(ids[0]) || ids[2] != "12345" {
		t.Fatalf("ids %q", ids)
	}
	live.expect(ids...)
	for _, from := range []int{0, 1, 2} {
		s := openStream(t, th.srv.URL, []string{"py"}, ids[from])
		want := []struct{ typ, data string }{{"message", `{"n":1}`}, {"cool", `"two"`}, {"message", "[3]"}, {"message", "null"}}
		for i := from + 1; i < len(ids); i++ {
			e := s.next()
			if e.LastEventID != ids[i] || e.Type != want[i].typ || e.Data != want[i].data {
				t.Fatalf("resumed from %s: %+v; want id %s %+v", ids[from], e, ids[i], want[i])
			}
		}
	}
}

// TestPythonEnvelopes: the Python Publisher writes into Redis the envelope
// the Go broker writes for the same message, byte for byte, apart from
// the sequence number.
func TestPythonEnvelopes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{})
	msgs := []ssehub.Message{
		{Channel: "env", Data: json.RawMessage(`{"a":[1,2.5,"x"],"b":null}`), ID: "i1"},
		// The data as json.dumps writes it: U+2028 as it is.
		{Channel: "env", Data: json.RawMessage("\"<b>é\u2028 & \\\"q\\\"\\\\\""), Type: "t<&>\u2028\u00e9\"", ID: "i\"2<>", Retry: 6000},
		{Channel: "env", Data: json.RawMessage(`true`), Type: "t", ID: "i3\t"},
	}
	for _, m := range msgs {
		if _, err := b.Publish(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	runPython(t, `
import sys
from ssehub import Publisher
pub = Publisher(sys.argv[1])
pub.publish({"a": [1, 2.5, "x"], "b": None}, id_="i1", channel="env")
pub.publish("<b>é\u2028 & \"q\"\\", type_="t<&>\u2028é\"", id_="i\"2<>", retry=6000, channel="env")
pub.publish(True, type_="t", id_="i3\t", channel="env")
`, srv.URL())
	entries, err := newClient(t, srv).XRange(t.Context(), "ssehub:stream:env", "-", "+").Result()
	if err != nil || len(entries) != 2*len(msgs) {
		t.Fatalf("stream has %d entries, %v", len(entries), err)
	}
	seq := regexp.MustCompile(`"ssehub_seq":\d+}$`)
	for i := range msgs {
		goEnv, _ := entries[i].Values["e"].(string)
		pyEnv, _ := entries[len(msgs)+i].Values["e"].(string)
		if seq.ReplaceAllString(goEnv, "") != seq.ReplaceAllString(pyEnv, "") || !strings.Contains(pyEnv, `"ssehub_seq":`) {
			t.Errorf("message %d:\nGo     %s\nPython %s", i, goEnv, pyEnv)
		}
	}
}
