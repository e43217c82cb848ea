package natstest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub/internal/natstest"
)

func TestKillStart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	if strings.HasSuffix(srv.Addr(), ":4222") {
		t.Fatalf("the test server took the standard port: %s", srv.Addr())
	}
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if srv.Running() {
		t.Fatal("Running after Kill")
	}
	srv.Start()
	// The store survives a crash: the stream and its message are back.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := js.Stream(rctx, "T")
		if err == nil && s.CachedInfo().State.Msgs == 1 {
			break
		}
		select {
		case <-tick.C:
		case <-rctx.Done():
			t.Fatalf("stream after restart: %v", err)
		}
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.ConnectedClusterName() == "" {
		t.Fatal("not connected to a cluster")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 || c.Server(info.Cluster.Leader) == nil {
		t.Fatalf("stream cluster info %+v; want a leader of this cluster and two replicas", info.Cluster)
	}
}
