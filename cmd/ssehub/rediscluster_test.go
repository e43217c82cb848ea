package main

import (
	"context"
	"strings"
	"testing"
)

func TestRedisClusterURLs(t *testing.T) {
	for _, tt := range []struct {
		url, err string
	}{
		{"redis-cluster://127.0.0.1:1", ""},
		{"redis-cluster://127.0.0.1:1,127.0.0.1:2,[::1]:3", ""},
		{"redis-cluster://user:secret@127.0.0.1:1,127.0.0.1:2?dial_timeout=1s", ""},
		{"redis-cluster://127.0.0.1", "is not HOST:PORT"},
		{"redis-cluster://user:secret@127.0.0.1:1,x", "is not HOST:PORT"},
		{"redis-cluster://", "is not HOST:PORT"},
		{"redis-cluster://127.0.0.1:1/0", "no database number"},
		{"redis-cluster://user:secret@127.0.0.1:1?no_such_option=1", "no_such_option"},
	} {
		b, closeBroker, err := openBroker(context.Background(), tt.url, brokerOptions{})
		if tt.err == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.url, err)
				continue
			}
			if b == nil {
				t.Errorf("%s: no broker", tt.url)
			}
			closeBroker(context.Background())
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line saying %q", tt.url, err, tt.err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", tt.url, err)
		}
	}
	if got := redactURL("redis-cluster://user:secret@127.0.0.1:1,127.0.0.1:2"); got != "redis-cluster://user:xxxxx@127.0.0.1:1,127.0.0.1:2" {
		t.Errorf("redactURL = %q", got)
	}
	if ok, err := directBroker("redis-cluster://127.0.0.1:1"); !ok || err != nil {
		t.Errorf("directBroker(redis-cluster://) = %v, %v; want true", ok, err)
	}
}
