package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// BenchmarkPublish measures one publish through the publish script, one
// at a time, with 1 KB of data over 100 channels at the default history
// bounds: the round trip and the script's work (sequence, stream, trims,
// idempotency record, PUBLISH), and the script's time in Redis alone.
//
//	go test -run '^$' -bench 'Publish$' -benchtime 20000x ./broker/redisbroker/
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	br, err := redisbroker.New(client, redisbroker.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close(context.Background())
	data := json.RawMessage(strconv.Quote(strings.Repeat("d", 1000)))
	ctx := context.Background()
	if _, err := br.Publish(ctx, ssehub.Message{Channel: "c0", Data: data}); err != nil {
		b.Fatal(err)
	}
	client.ConfigResetStat(ctx)
	i := 0
	for b.Loop() {
		if _, err := br.Publish(ctx, ssehub.Message{Channel: fmt.Sprint("c", i%100), Data: data}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	// Redis's own time per script call, which the load of other processes
	// on the machine disturbs less than the round trip.
	stats, err := client.InfoMap(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range strings.Split(stats["Commandstats"]["cmdstat_evalsha"], ",") {
		if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
			us, _ := strconv.ParseFloat(v, 64)
			b.ReportMetric(us, "redis-µs/op")
		}
	}
}
