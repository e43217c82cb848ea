package redisbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
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
	reportRedisTime(b, client)
}

// BenchmarkPublishConcurrent measures publishes from many goroutines at
// once, 64 over 2 cores, as a hub publishing for many clients does, with
// 1 KB of data over 8 channels whose history is full (100 events each), so
// that each publish also trims its channel: the throughput (ns/op is the
// time per publish over all goroutines), and Redis's own time per script
// call and CPU per publish. Concurrent publishes go to Redis together, as
// one pipeline.
//
//	go test -run '^$' -bench 'PublishConcurrent' -benchtime 20000x ./broker/redisbroker/
func BenchmarkPublishConcurrent(b *testing.B) {
	srv := redistest.Start(b)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer client.Close()
	br, err := redisbroker.New(client, redisbroker.Options{HistorySize: 100})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close(context.Background())
	data := json.RawMessage(strconv.Quote(strings.Repeat("d", 1000)))
	ctx := context.Background()
	for i := range 808 {
		if _, err := br.Publish(ctx, ssehub.Message{Channel: fmt.Sprint("c", i%8), Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	client.ConfigResetStat(ctx)
	cpu0, pool0 := redisCPU(b, client), client.PoolStats()
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := br.Publish(ctx, ssehub.Message{Channel: fmt.Sprint("c", i%8), Data: data}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
	b.ReportMetric((redisCPU(b, client)-cpu0)*1e6/float64(b.N), "redis-cpu-µs/op")
	// Connections in use, and how often and long a publish waited for
	// one.
	pool := client.PoolStats()
	b.ReportMetric(float64(pool.TotalConns), "conns")
	b.ReportMetric(float64(pool.WaitCount-pool0.WaitCount)/float64(b.N), "pool-waits/op")
	b.ReportMetric(float64(pool.WaitDurationNs-pool0.WaitDurationNs)/1e3/float64(b.N), "pool-wait-µs/op")
	reportRedisTime(b, client)
}

// reportRedisTime reports Redis's own time per script call, which the
// load of other processes on the machine disturbs less than the round
// trip.
func reportRedisTime(b *testing.B, client *redis.Client) {
	stats, err := client.InfoMap(context.Background(), "commandstats").Result()
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

// redisCPU returns the CPU time Redis has used, in seconds.
func redisCPU(b *testing.B, client *redis.Client) float64 {
	info, err := client.InfoMap(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	sys, _ := strconv.ParseFloat(info["CPU"]["used_cpu_sys"], 64)
	user, _ := strconv.ParseFloat(info["CPU"]["used_cpu_user"], 64)
	return sys + user
}

// BenchmarkPublishWait measures what Options.WaitReplicas costs, on a
// master with one replica: one publish at a time (ns/op is the latency)
// and 64 goroutines at once (publishes/s), without WAIT and with WAIT for
// the replica.
//
//	go test -run '^$' -bench 'PublishWait' -benchtime 5000x ./broker/redisbroker/
func BenchmarkPublishWait(b *testing.B) {
	master := redistest.StartWith(b, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
	replica := redistest.StartWith(b, redistest.Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}})
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer rc.Close()
	waitFor(b, "the replica to follow its master", func() bool {
		return strings.Contains(rc.Info(context.Background(), "replication").Val(), "master_link_status:up")
	})
	data := json.RawMessage(strconv.Quote(strings.Repeat("d", 1000)))
	for _, wait := range []int{0, 1} {
		client := redis.NewClient(&redis.Options{Addr: master.Addr()})
		defer client.Close()
		br, err := redisbroker.New(client, redisbroker.Options{HistorySize: 100, WaitReplicas: wait})
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close(context.Background())
		ctx := context.Background()
		var n atomic.Int64
		publish := func() error {
			i := n.Add(1)
			_, err := br.Publish(ctx, ssehub.Message{Channel: fmt.Sprint("c", i%8), Data: data})
			return err
		}
		b.Run(fmt.Sprintf("serial/wait=%d", wait), func(b *testing.B) {
			for b.Loop() {
				if err := publish(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("concurrent/wait=%d", wait), func(b *testing.B) {
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := publish(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
		})
	}
}
