package redisbroker

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/redistest"
)

// BenchmarkDecode measures reading a message off the channel: an own
// envelope, and the two Python libraries' messages, which are read as
// Python reads them.
func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct{ name, payload string }{
		{"own", `{"data":{"code":"ACK","msg":"cool message","n":[1,2.5,"x"]},"event":"cool","retry":null,"id":"1795238353220689","ssehub_seq":1795238353220689}`},
		{"invenio", `{"data": {"code": "ACK", "msg": "cool message", "n": [1, 2.5, "x"]}, "event": "cool", "id": 1795238353.220689, "retry": null}`},
		{"flask", `{"data": {"code": "ACK", "msg": "cool message", "n": [1, 2.5, "x"]}, "id": 5, "type": "cool"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			payload := []byte(bc.payload)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeEnvelope("c", payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDelivery measures, with two brokers subscribed to one channel,
// the time from a publish until both have delivered the event: through
// Publish (the publish script), and as a foreign PUBLISH that the brokers
// take into the history before delivering it.
func BenchmarkDelivery(b *testing.B) {
	srv := redistest.Start(b)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	b.Cleanup(func() { client.Close() })
	got := make(chan *ssehub.Event, 1024)
	var brokers []*Broker
	for range 2 {
		br, err := New(client, Options{CanaryInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { br.Close(b.Context()) })
		cancel, err := br.Subscribe(b.Context(), "d", func(e *ssehub.Event) { got <- e })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cancel)
		brokers = append(brokers, br)
	}
	wait := func() {
		for range 2 {
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				b.Fatal("no delivery after 10s")
			}
		}
	}
	b.Run("own", func(b *testing.B) {
		for b.Loop() {
			if _, err := brokers[0].Publish(b.Context(), ssehub.Message{Channel: "d", Data: json.RawMessage(`{"n":1}`)}); err != nil {
				b.Fatal(err)
			}
			wait()
		}
	})
	b.Run("foreign", func(b *testing.B) {
		n := 0
		for b.Loop() {
			n++
			msg := `{"data": {"n": ` + strconv.Itoa(n) + `}, "event": null, "id": null, "retry": null}`
			if err := client.Publish(b.Context(), "d", msg).Err(); err != nil {
				b.Fatal(err)
			}
			wait()
		}
	})
}
