package redisbroker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// runPython runs a Python program with the package in ../../python on its
// path and returns what it prints. It needs Debian's python3 with redis-py;
// without them a local run skips, and a CI run fails.
func runPython(t *testing.T, program string, args ...string) string {
	t.Helper()
	out, err := pythonCmd(t, program, args...).Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, exitStderr(err))
	}
	return string(out)
}

// pythonCmd returns the command that runs a Python program as runPython
// does, for a test that talks with it while it runs.
func pythonCmd(t *testing.T, program string, args ...string) *exec.Cmd {
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
	return cmd
}

// pythonSession is a Python program a test talks with while it runs: the
// program waits for a line on stdin between its steps and prints one line
// of answer for each.
type pythonSession struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr strings.Builder
}

// startPython starts program as pythonCmd does.
func startPython(t *testing.T, program string, args ...string) *pythonSession {
	t.Helper()
	p := &pythonSession{t: t, cmd: pythonCmd(t, program, args...)}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.lines = bufio.NewScanner(stdout)
	return p
}

// step lets the program go on to its next step.
func (p *pythonSession) step() { io.WriteString(p.stdin, "\n") }

// line returns the program's next line, failing the test if it ended.
func (p *pythonSession) line() []byte {
	p.t.Helper()
	if !p.lines.Scan() {
		p.cmd.Wait()
		p.t.Fatalf("python ended: %s", p.stderr.String())
	}
	return p.lines.Bytes()
}

// fields returns the words of the program's next line.
func (p *pythonSession) fields() []string {
	p.t.Helper()
	return strings.Fields(string(p.line()))
}

// json decodes the program's next line into v.
func (p *pythonSession) json(v any) {
	p.t.Helper()
	b := p.line()
	if err := json.Unmarshal(b, v); err != nil {
		p.t.Fatalf("python printed %q: %v", b, err)
	}
}

// wait waits for the program to end, failing the test unless it ends well.
func (p *pythonSession) wait() {
	p.t.Helper()
	if err := p.cmd.Wait(); err != nil {
		p.t.Fatalf("python: %v\n%s", err, p.stderr.String())
	}
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

// TestPythonPublisherCluster: the Python package's
// Publisher("redis-cluster://...") publishes into a Redis Cluster as the
// Go cluster broker does: on channels of three shards, a hub on the
// cluster streams its events live with the ids publish() returned, a
// stream resumed from one of them gets exactly the later events, an
// idempotency key publishes once, Go and Python events on one channel
// take increasing ids in the order published, and every key is in the
// channel's slot, none under the one-Redis layout.
func TestPythonPublisherCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	// Channels whose slots have three different masters.
	var channels []string
	masters := map[string]bool{}
	for i := 0; len(channels) < 3; i++ {
		if i == 100 {
			t.Fatalf("channels of 3 masters: found %v", channels)
		}
		ch := fmt.Sprint("py", i)
		if m := c.MasterOf("ssehub:{" + ch + "}state").Addr(); !masters[m] {
			masters[m] = true
			channels = append(channels, ch)
		}
	}
	th := newHubOn(t, newClusterBroker(t, c, redisbroker.Options{}), ssehub.Config{})
	live := map[string]*stream{}
	for _, ch := range channels {
		live[ch] = openStream(t, th.srv.URL, []string{ch}, "")
	}
	list, _ := json.Marshal(channels)

	// Three events on each channel, then one with an idempotency key, sent
	// twice.
	out := runPython(t, `
import json, sys
from ssehub import Publisher
with Publisher(sys.argv[1]) as pub:
    ids = {}
    for ch in json.loads(sys.argv[2]):
        ids[ch] = [pub.publish({"n": 1}, channel=ch),
                   pub.publish("two", type_="cool", channel=ch),
                   pub.publish([3], retry=6000, channel=ch)]
    ch = json.loads(sys.argv[2])[0]
    ids["once"] = [pub.publish({"job": 1}, channel=ch, idempotency_key="job-1"),
                   pub.publish({"job": 1}, channel=ch, idempotency_key="job-1")]
print(json.dumps(ids))
`, c.URL(), string(list))
	var ids map[string][]string
	if err := json.Unmarshal([]byte(out), &ids); err != nil {
		t.Fatalf("python printed %q", out)
	}
	once := ids["once"]
	if len(once) != 2 || once[0] != once[1] {
		t.Fatalf("the same idempotency key twice returned %q; want one id twice", once)
	}
	want := []struct{ typ, data string }{{"message", `{"n":1}`}, {"cool", `"two"`}, {"message", "[3]"}}
	for _, ch := range channels {
		if len(ids[ch]) != len(want) {
			t.Fatalf("python printed %q", out)
		}
		for i, id := range ids[ch] {
			e := live[ch].next()
			if !regexp.MustCompile(`^\d{16}$`).MatchString(id) || e.LastEventID != id || e.Type != want[i].typ || e.Data != want[i].data {
				t.Fatalf("channel %s: live event %+v; want id %s %+v", ch, e, id, want[i])
			}
		}
	}

	// On the first channel: Go, Python, Go again; the key once more, and
	// with another message.
	ch := channels[0]
	order := append(ids[ch], once[0], th.publish(t, ch, 4))
	out = runPython(t, `
import json, sys
from ssehub import Publisher, PublishError
pub = Publisher(sys.argv[1])
ids = [pub.publish({"n": 5}, channel=sys.argv[2]), pub.publish({"job": 1}, channel=sys.argv[2], idempotency_key="job-1")]
try:
    pub.publish({"job": 2}, channel=sys.argv[2], idempotency_key="job-1")
    ids.append("published")
except PublishError as e:
    ids.append(e.code)
print(json.dumps(ids))
`, c.URL(), ch)
	var more []string
	if err := json.Unmarshal([]byte(out), &more); err != nil || len(more) != 3 {
		t.Fatalf("python printed %q", out)
	}
	if more[1] != once[0] || more[2] != "idempotency_key_reused" {
		t.Fatalf("the key once more returned %q, then with another message %q; want %s, then idempotency_key_reused", more[1], more[2], once[0])
	}
	order = append(order, more[0], th.publish(t, ch, 6))
	live[ch].expect(order[len(ids[ch]):]...)
	if !slices.IsSorted(order) || len(slices.Compact(slices.Clone(order))) != len(order) {
		t.Fatalf("ids on %s in publish order: %q; want increasing", ch, order)
	}

	// Resumed from each id: exactly the later events, then a live one.
	for from := range order[:len(order)-1] {
		s := openStream(t, th.srv.URL, []string{ch}, order[from])
		s.expect(order[from+1:]...)
		s.close()
	}
	last := th.publish(t, ch, 7)
	live[ch].expect(last)
	order = append(order, last)

	// The keys: each channel's in its slot, on its own counter; nothing
	// under the one-Redis layout.
	cc := newClusterClient(t, c)
	ctx := t.Context()
	for _, name := range channels {
		stream := "ssehub:{" + name + "}stream:" + name
		n, err := cc.XLen(ctx, stream).Result()
		wantN := int64(len(want))
		if name == ch {
			wantN = int64(len(order))
		}
		if err != nil || n != wantN {
			t.Errorf("%s holds %d entries, %v; want %d", stream, n, err, wantN)
		}
		for _, key := range []string{"state", "keys", "keyq", "active", "stream:" + name} {
			k := "ssehub:{" + name + "}" + key
			if c.Slot(k) != c.Slot(name) {
				t.Errorf("key %s is in slot %d, channel %s in slot %d", k, c.Slot(k), name, c.Slot(name))
			}
			if n, err := cc.Exists(ctx, k).Result(); err != nil || n != 1 {
				t.Errorf("key %s: exists %d, %v", k, n, err)
			}
		}
		for _, k := range []string{"ssehub:state", "ssehub:active", "ssehub:keys", "ssehub:stream:" + name, "ssehub:ids:" + name} {
			if n, err := cc.Exists(ctx, k).Result(); err != nil || n != 0 {
				t.Errorf("one-Redis key %s: exists %d, %v", k, n, err)
			}
		}
	}
}

// TestPythonPublisherClusterFollows: the Python
// Publisher("redis-cluster://...") follows a slot moved to another master,
// and settles a publish whose answer is lost. When the master of a channel
// stops answering, the publish's answer and fence.lua's are lost, so
// publish() says the outcome is unknown; once the master answers again (or
// its replica took over), the message sent again with its idempotency key
// is published once, and the same id comes back for it.
func TestPythonPublisherClusterFollows(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	py := startPython(t, `
import sys, time
from ssehub import Publisher, PublishError
# pub waits long enough for any answer under load: an error would make it
# read the slot map again before the next publish. frozen gives up soon.
pub = Publisher(sys.argv[1])
frozen = Publisher(sys.argv[1], timeout=0.5)
def step(*answer):
    print(*answer, flush=True)
    sys.stdin.readline()
# The slot map is read and the connections made.
step(pub.publish("warm-up", channel="moved"), frozen.publish("warm-up", channel="frozen"))
step(pub.publish({"n": 1}, channel="moved"))
try:
    frozen.publish({"n": 1}, channel="frozen", idempotency_key="k-frozen")
    step("published")
except PublishError as e:
    step(e.code)
# Until the master answers again, or its replica took over.
deadline = time.monotonic() + 20
while True:
    try:
        first = pub.publish({"n": 1}, channel="frozen", idempotency_key="k-frozen")
        break
    except PublishError as e:
        if e.code not in ("unavailable", "publish_outcome_unknown") or time.monotonic() > deadline:
            raise
        time.sleep(0.05)
print(first, pub.publish({"n": 1}, channel="frozen", idempotency_key="k-frozen"), flush=True)
`, c.URL())
	warm := py.fields()

	// The slot of "moved" goes to another master: the Publisher's map is
	// out of date, and the old master answers MOVED.
	from := c.MasterOf("ssehub:{moved}state")
	var to *redistest.Server
	for _, m := range c.Masters() {
		if m != from {
			to = m
		}
	}
	movedReplies := func() int {
		node := redis.NewClient(&redis.Options{Addr: from.Addr()})
		defer node.Close()
		info, err := node.Info(t.Context(), "errorstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`errorstat_MOVED:count=(\d+)`).FindStringSubmatch(info)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	c.MoveSlot("ssehub:{moved}state", to)
	before := movedReplies()
	py.step()
	moved := py.fields()
	if movedReplies() == before {
		t.Errorf("the old master of the moved slot answered no MOVED: the Publisher did not use its old map")
	}

	master := c.MasterOf("ssehub:{frozen}state")
	master.Freeze()
	py.step()
	code := py.fields()
	master.Thaw()
	py.step()
	last := py.fields()
	py.wait()
	if len(warm) != 2 || len(moved) != 1 || moved[0] <= warm[0] {
		t.Fatalf("warm-up ids %q, then after the move %q; want a later id", warm, moved)
	}
	if len(code) != 1 || code[0] != "publish_outcome_unknown" {
		t.Fatalf("publish on a frozen master: %q; want publish_outcome_unknown", code)
	}
	if len(last) != 2 || last[0] != last[1] || last[0] <= warm[1] {
		t.Fatalf("sent again with its key: ids %q after %s; want one id twice, after it", last, warm[1])
	}
	// Each history holds the message once, under its id.
	cc := newClusterClient(t, c)
	for ch, id := range map[string]string{"moved": moved[0], "frozen": last[0]} {
		entries, err := cc.XRange(t.Context(), "ssehub:{"+ch+"}stream:"+ch, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			env, _ := e.Values["e"].(string)
			if strings.HasPrefix(env, `{"data":{"n":1},`) {
				got = append(got, env)
			}
		}
		seq, _ := strconv.ParseUint(id, 10, 64)
		if len(got) != 1 || !strings.HasSuffix(got[0], fmt.Sprintf(`"ssehub_seq":%d}`, seq)) {
			t.Errorf("the history of %s holds the message %d times: %q; want once, as %s", ch, len(got), got, id)
		}
	}
}

// TestPythonPublisherSentinel: the Python package's
// Publisher("redis-sentinel://...") publishes into the master the
// sentinels name, as a hub on the same Sentinel does: the hub streams its
// events live with the ids publish() returned, and a stream resumed from
// one of them gets exactly the later events. When the master dies, after
// its replica copied everything, and Sentinel promotes the replica, the
// same Publisher publishes on the new master without a restart: an
// idempotency key sent again returns the id it got before the failover,
// and new events take ids after every earlier one.
func TestPythonPublisherSentinel(t *testing.T) {
	t.Parallel()
	set := redistest.StartSentinel(t)
	th := newHubOn(t, newSentinelBroker(t, set, redisbroker.Options{}), ssehub.Config{})
	live := openStream(t, th.srv.URL, []string{"py"}, "")
	py := startPython(t, `
import sys, time
from ssehub import Publisher, PublishError
pub = Publisher(sys.argv[1])
def step(*answer):
    print(*answer, flush=True)
    sys.stdin.readline()
step(pub.publish({"n": 1}, channel="py"), pub.publish("two", type_="cool", channel="py"),
     pub.publish({"job": 1}, channel="py", idempotency_key="job-1"),
     pub.publish({"job": 1}, channel="py", idempotency_key="job-1"))
# After the failover. A sentinel that has not yet heard of it may still
# name the dead master: that publish is refused as not published, and is
# sent again.
refused = 0
def publish(data, **kwargs):
    global refused
    deadline = time.monotonic() + 20
    while True:
        try:
            return pub.publish(data, channel="py", **kwargs)
        except PublishError as e:
            if e.code != "unavailable" or time.monotonic() > deadline:
                raise
            refused += 1
            time.sleep(0.05)
step(publish({"job": 1}, idempotency_key="job-1"), publish([3], retry=6000), refused)
# The master it is connected to has been made a replica by hand.
try:
    pub.publish({"n": 5}, channel="py", idempotency_key="demoted")
    print("published", flush=True)
except PublishError as e:
    print(e.code, e, flush=True)
`, set.URL())
	before := py.fields()
	if len(before) != 4 || before[2] != before[3] {
		t.Fatalf("python printed %q; want 3 ids, the last twice", before)
	}
	ids := before[:3]
	for _, id := range ids {
		if !regexp.MustCompile(`^\d{16}$`).MatchString(id) {
			t.Fatalf("ids %q", ids)
		}
	}
	want := []struct{ typ, data string }{{"message", `{"n":1}`}, {"cool", `"two"`}, {"message", `{"job":1}`}}
	for i, id := range ids {
		if e := live.next(); e.LastEventID != id || e.Type != want[i].typ || e.Data != want[i].data {
			t.Fatalf("live event %+v; want id %s %+v", e, id, want[i])
		}
	}
	s := openStream(t, th.srv.URL, []string{"py"}, ids[0])
	s.expect(ids[1:]...)
	s.close()

	// The replica has every event and key before the master dies.
	master := set.Master()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr(), MaxRetries: -1})
	defer mc.Close()
	if n, err := mc.Wait(t.Context(), 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}
	master.Kill()
	promoted := set.WaitFailover(master, failoverTimeout)
	py.step()
	after := py.fields()
	if len(after) != 3 {
		t.Fatalf("python printed %q after the failover", after)
	}
	t.Logf("publishes refused while the sentinels caught up: %s", after[2])
	if after[0] != ids[2] {
		t.Fatalf("the idempotency key sent again after the failover returned %s; want %s, its id before", after[0], ids[2])
	}
	order := append(slices.Clone(ids), after[1], th.publish(t, "py", 4))
	if !slices.IsSorted(order) || len(slices.Compact(slices.Clone(order))) != len(order) {
		t.Fatalf("ids in publish order: %q; want increasing", order)
	}
	if e := live.next(); e.LastEventID != after[1] || e.Data != "[3]" || e.Retry != 6000 {
		t.Fatalf("live event after the failover %+v; want id %s, data [3], retry 6000", e, after[1])
	}
	live.expect(order[4])
	for from := range order[:len(order)-1] {
		s := openStream(t, th.srv.URL, []string{"py"}, order[from])
		s.expect(order[from+1:]...)
		s.close()
	}

	// The new master becomes a replica of the old one, which came back,
	// without the sentinels: the Publisher's connection to it gets
	// READONLY, which means not published.
	set.Rejoin(master)
	oc := redis.NewClient(&redis.Options{Addr: master.Addr(), MaxRetries: -1})
	defer oc.Close()
	pc := redis.NewClient(&redis.Options{Addr: promoted.Addr(), MaxRetries: -1})
	defer pc.Close()
	if err := oc.ReplicaOf(t.Context(), "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := pc.ReplicaOf(t.Context(), "127.0.0.1", strconv.Itoa(master.Port())).Err(); err != nil {
		t.Fatal(err)
	}
	py.step()
	demoted := py.fields()
	py.wait()
	if len(demoted) < 2 || demoted[0] != "unavailable" || demoted[1] != "publish" || !slices.Contains(demoted, "READONLY") {
		t.Fatalf("publish on a demoted master: %q; want unavailable, READONLY", demoted)
	}
	// The history holds each event once, and not the refused one.
	n, err := oc.XLen(t.Context(), "ssehub:stream:py").Result()
	if err != nil || n != int64(len(order)) {
		t.Fatalf("the stream holds %d events, %v; want %d", n, err, len(order))
	}
	if ok, err := oc.HExists(t.Context(), "ssehub:keys", "demoted").Result(); err != nil || ok {
		t.Fatalf("the refused publish's idempotency key is recorded: %v, %v", ok, err)
	}
}

// TestPythonPublisherWaitReplicas: a Python Publisher with wait_replicas 1
// returns once the replica holds the event. With the replica frozen, it
// raises publish_outcome_unknown (504) with the event's id once WAIT
// gives up: the event is published all the same, and a hub delivers and
// replays it. Sent again with its key while the replica is frozen, by
// another Publisher, it is not confirmed either; after the thaw, it
// returns the same id and publishes nothing more.
func TestPythonPublisherWaitReplicas(t *testing.T) {
	t.Parallel()
	master := redistest.StartWith(t, redistest.Options{Args: quickSync})
	replica := startReplica(t, master)
	th := newHub(t, master, redisbroker.Options{}, ssehub.Config{})
	pythonWaitReplicas(t, master.URL(), "ssehub:stream:pw", master, newClient(t, replica), replica, th)
}

// TestPythonPublisherSentinelWaitReplicas is TestPythonPublisherWaitReplicas
// through redis-sentinel://: the WAIT goes to the master the sentinels
// name, on the publish's connection.
func TestPythonPublisherSentinelWaitReplicas(t *testing.T) {
	t.Parallel()
	set := redistest.StartSentinel(t)
	master, replica := set.Nodes()[0], set.Nodes()[1]
	if set.Master() != master {
		t.Fatalf("the sentinels name %s as the master, not %s", set.Master().Addr(), master.Addr())
	}
	th := newHubOn(t, newSentinelBroker(t, set, redisbroker.Options{}), ssehub.Config{})
	pythonWaitReplicas(t, set.URL(), "ssehub:stream:pw", master, newClient(t, replica), replica, th)
}

// TestPythonPublisherClusterWaitReplicas is TestPythonPublisherWaitReplicas
// through redis-cluster://: the WAIT goes to the channel's master, and
// counts that master's replica.
func TestPythonPublisherClusterWaitReplicas(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	const stream = "ssehub:{pw}stream:pw"
	master := c.MasterOf(stream)
	replica := c.ReplicaOf(master)
	// A replica answers reads of its slots after READONLY.
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error { return cn.ReadOnly(ctx).Err() }})
	t.Cleanup(func() { rc.Close() })
	th := newHubOn(t, newClusterBroker(t, c, redisbroker.Options{}), ssehub.Config{})
	pythonWaitReplicas(t, c.URL(), stream, master, rc, replica, th)
}

// pythonWaitReplicas runs a Python Publisher with wait_replicas 1 on url,
// where channel pw's master has one replica, which rc reads, and checks
// what it returns with the replica up, frozen and thawed, and what th
// delivers and replays. stream is the key of pw's history.
func pythonWaitReplicas(t *testing.T, url, stream string, master *redistest.Server, rc *redis.Client, replica *redistest.Server, th *testHub) {
	// A replica just attached may not confirm writes at once.
	mc := newClient(t, master)
	waitFor(t, "the replica to confirm a write", func() bool {
		pipe := mc.Pipeline()
		pipe.Set(t.Context(), "{pw}probe", 1, 0) // in pw's slot on a cluster
		n := pipe.Do(t.Context(), "wait", 1, 100)
		pipe.Exec(t.Context())
		acked, _ := n.Int64()
		return acked == 1
	})
	live := openStream(t, th.srv.URL, []string{"pw"}, "")
	py := startPython(t, `
import json, sys, time
from ssehub import Publisher, PublishError
url = sys.argv[1]
pub = Publisher(url, wait_replicas=1, wait_timeout=0.3)
def step(answer):
    print(json.dumps(answer), flush=True)
    sys.stdin.readline()
def unconfirmed(p):
    start = time.monotonic()
    try:
        return {"published": p.publish({"n": 2}, channel="pw", idempotency_key="w-2")}
    except PublishError as e:
        return {"code": e.code, "status": e.status, "id": e.id, "error": str(e), "took": time.monotonic() - start}
step(pub.publish({"n": 1}, channel="pw", idempotency_key="w-1"))
# The replica is frozen.
with Publisher(url, wait_replicas=1, wait_timeout=0.3) as other:
    step([unconfirmed(pub), unconfirmed(other)])
# The replica is thawed and has caught up.
print(json.dumps([pub.publish({"n": 2}, channel="pw", idempotency_key="w-2"), pub.publish({"n": 3}, channel="pw")]))
`, url)

	var first string
	py.json(&first)
	if !regexp.MustCompile(`^\d{16}$`).MatchString(first) {
		t.Fatalf("publish with the replica up returned %q", first)
	}
	if n := rc.XLen(t.Context(), stream).Val(); n != 1 {
		t.Fatalf("the replica holds %d events once publish returned, want 1", n)
	}
	live.expect(first)

	replica.Freeze()
	py.step()
	type outcome struct {
		Published, Code, ID, Error string
		Status                     int
		Took                       float64
	}
	var frozen []outcome
	py.json(&frozen)
	for i, o := range frozen {
		if o.Code != "publish_outcome_unknown" || o.Status != 504 || !regexp.MustCompile(`^\d{16}$`).MatchString(o.ID) ||
			!strings.Contains(o.Error, "published, but only 0 of 1 replicas confirmed it within 300ms") {
			t.Fatalf("publish %d with the replica frozen: %+v; want publish_outcome_unknown, 504, an id, only 0 of 1 replicas", i, o)
		}
		if o.Took < 0.3 {
			t.Fatalf("publish %d raised after %.3fs, before the wait timeout", i, o.Took)
		}
	}
	if frozen[1].ID != frozen[0].ID {
		t.Fatalf("the key sent again by another Publisher got id %s; want %s", frozen[1].ID, frozen[0].ID)
	}
	// Published all the same: delivered, and in the history.
	if e := live.next(); e.LastEventID != frozen[0].ID || e.Data != `{"n":2}` {
		t.Fatalf("live event %+v; want id %s", e, frozen[0].ID)
	}
	s := openStream(t, th.srv.URL, []string{"pw"}, first)
	s.expect(frozen[0].ID)
	s.close()

	replica.Thaw()
	waitFor(t, "the replica to catch up", func() bool { return rc.XLen(t.Context(), stream).Val() == 2 })
	py.step()
	var after []string
	py.json(&after)
	py.wait()
	if len(after) != 2 || after[0] != frozen[0].ID {
		t.Fatalf("after the thaw python printed %q; want %s sent again, then a new id", after, frozen[0].ID)
	}
	live.expect(after[1]) // nothing in between: w-2 was delivered once
	s = openStream(t, th.srv.URL, []string{"pw"}, first)
	s.expect(frozen[0].ID, after[1])
	s.close()
	if n := mc.XLen(t.Context(), stream).Val(); n != 3 {
		t.Fatalf("the history holds %d events, want 3", n)
	}
}
