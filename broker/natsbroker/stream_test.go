package natsbroker_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/natsbroker"
	"github.com/ssehub/ssehub/internal/natstest"
)

// TestStreamSettings: a broker creates its streams from its options,
// brings an existing stream's limits to them, or leaves them alone with
// KeepStream, and refuses a stream that takes other subjects.
func TestStreamSettings(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	js, err := jetstream.New(connect(t, srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	config := func(name string) jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config
	}

	b := newBroker(t, srv.URL(), natsbroker.Options{Stream: "SET", HistorySize: 10, HistoryAge: time.Minute, HistoryBytes: 1 << 20})
	mustPublish(t, b, "set", 1)
	c := config("SET")
	if c.Subjects[0] != "set.*" || c.MaxMsgsPerSubject != 11 || c.MaxAge != time.Minute || c.MaxBytes != 1<<20 ||
		c.Replicas != 1 || c.Storage != jetstream.FileStorage || c.Discard != jetstream.DiscardOld || c.Duplicates != time.Minute {
		t.Fatalf("created stream %+v", c)
	}
	ids := config("SET_IDS")
	if ids.Subjects[0] != "set-ids.*" || ids.MaxMsgsPerSubject != 2 || ids.MaxAge != time.Minute {
		t.Fatalf("created id index %+v", ids)
	}

	// A publisher keeps the stream as the hubs made it.
	p := newBroker(t, srv.URL(), natsbroker.Options{Stream: "SET", HistorySize: 3, KeepStream: true})
	mustPublish(t, p, "set", 2)
	if c := config("SET"); c.MaxMsgsPerSubject != 11 {
		t.Fatalf("KeepStream changed the limit per channel to %d", c.MaxMsgsPerSubject)
	}
	// A hub with other limits brings the stream to them.
	h := newBroker(t, srv.URL(), natsbroker.Options{Stream: "SET", HistorySize: 3, HistoryAge: -1})
	mustPublish(t, h, "set", 3)
	if c := config("SET"); c.MaxMsgsPerSubject != 4 || c.MaxAge != 0 || c.MaxBytes != ssehub.DefaultHistoryBytes {
		t.Fatalf("updated stream %+v", c)
	}

	// A stream of the same name for other subjects is not taken over.
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "TAKEN", Subjects: []string{"elsewhere.>"}}); err != nil {
		t.Fatal(err)
	}
	taken := newBroker(t, srv.URL(), natsbroker.Options{Stream: "TAKEN"})
	_, err = publish(t.Context(), taken, "x", 1)
	if !errors.Is(err, ssehub.ErrUnavailable) || !strings.Contains(err.Error(), "elsewhere.>") {
		t.Fatalf("publish to a stream with other subjects: %v", err)
	}

	for _, opts := range []natsbroker.Options{{Stream: "a.b"}, {Stream: "x y"}, {Subject: "a.*"}, {Subject: "a..b"}, {Replicas: 7}} {
		if _, err := natsbroker.New(connect(t, srv.URL()), opts); err == nil {
			t.Errorf("New(%+v) accepted", opts)
		}
	}
}

// TestReplicas: on a cluster of three, a new stream gets three replicas.
func TestReplicas(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	b := newBroker(t, c.Servers[0].URL(), natsbroker.Options{Stream: "REPL"})
	mustPublish(t, b, "r", 1)
	js, err := jetstream.New(connect(t, c.URL()))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"REPL", "REPL_IDS"} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if info := s.CachedInfo(); info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("%s: %d replicas configured, cluster %+v", name, info.Config.Replicas, info.Cluster)
		}
	}
}
