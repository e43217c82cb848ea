package natsbroker

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/natstest"
)

// BenchmarkHandle measures the hub's CPU per event the consumer brings: on
// a channel the hub holds (decoded and passed to one subscription), and on
// one it does not (dropped), the price of one consumer per hub.
func BenchmarkHandle(b *testing.B) {
	srv := natstest.Start(b)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	for _, held := range []bool{true, false} {
		name := "held"
		if !held {
			name = "not-held"
		}
		b.Run(name, func(b *testing.B) {
			br, err := New(nc, Options{})
			if err != nil {
				b.Fatal(err)
			}
			ids, err := newIDCodec(make([]byte, 16), time.Now())
			if err != nil {
				b.Fatal(err)
			}
			c := &consumer{gen: 1, ids: ids}
			br.cur, br.seen = c, 1
			br.channels["news"] = &channel{name: "news", subs: []*sub{{deliver: func(*ssehub.Event) {}}}}
			subject := br.subjectOf("other")
			if held {
				subject = br.subjectOf("news")
			}
			h := nats.Header{HeaderType: {"update"}}
			data := []byte(`{"id":12345,"status":"shipped","items":[1,2,3]}`)
			ts := time.Now().UnixNano()
			// Messages as the consumer sends them, made up front and
			// replayed from the start when the benchmark wants more.
			msgs := make([]*nats.Msg, 1<<14)
			for i := range msgs {
				seq := uint64(i) + 2
				msgs[i] = &nats.Msg{
					Subject: subject,
					Reply:   fmt.Sprintf("$JS.ACK.SSEHUB.c.1.%d.%d.%d.0", seq, seq-1, ts),
					Header:  h,
					Data:    data,
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				k := i % len(msgs)
				if k == 0 {
					c.dseq, br.seen = 0, 1
				}
				br.handle(c, msgs[k])
			}
		})
	}
}

func TestParseAck(t *testing.T) {
	for _, tt := range []struct {
		reply      string
		sseq, dseq uint64
		ok         bool
	}{
		{"$JS.ACK.SSEHUB.c.1.42.7.1700000000000000000.0", 42, 7, true},
		{"$JS.ACK.dom.ACCHASH.SSEHUB.c.1.42.7.1700000000000000000.0.r4nd", 42, 7, true},
		{"$JS.ACK.dom.ACCHASH.SSEHUB.c.1.42.7.1700000000000000000.0", 42, 7, true},
		{"$JS.ACK.SSEHUB.c.1.42.7.1700000000000000000", 0, 0, false},
		{"$JS.ACK.SSEHUB.c.1.x.7.1700000000000000000.0", 0, 0, false},
		{"_INBOX.abc", 0, 0, false},
		{"", 0, 0, false},
	} {
		got, ok := parseAck(tt.reply)
		if ok != tt.ok || got.streamSeq != tt.sseq || got.consumerSeq != tt.dseq {
			t.Errorf("parseAck(%q) = %+v, %v; want seqs %d %d, %v", tt.reply, got, ok, tt.sseq, tt.dseq, tt.ok)
		}
		if ok && got.time.UnixNano() != 1700000000000000000 {
			t.Errorf("parseAck(%q) time %v", tt.reply, got.time)
		}
	}
}
