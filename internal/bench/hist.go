package bench

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Latency histogram: log-linear buckets over microseconds, 32 per power of
// two, so a percentile is within about 3% of the true value. Subscribers
// add to one of a few shards with atomic increments; the shards are summed
// once at the end.
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histBuckets = histSub + 40*histSub
	histShards  = 16
)

type histShard struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64 // nanoseconds
	_      [64]byte     // keeps shards' hot fields apart
}

type histogram struct {
	once   sync.Once
	shards []*histShard
	next   atomic.Uint32
}

// shard returns one of the histogram's shards, in turn.
func (h *histogram) shard() *histShard {
	h.once.Do(func() {
		h.shards = make([]*histShard, histShards)
		for i := range h.shards {
			h.shards[i] = new(histShard)
		}
	})
	return h.shards[h.next.Add(1)%histShards]
}

func bucketOf(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - histSubBits - 1
	return histSub + e*histSub + int(us>>e) - histSub
}

// bucketMid returns the middle of bucket i, in microseconds.
func bucketMid(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	e := (i - histSub) / histSub
	lo := uint64(histSub+(i-histSub)%histSub) << e
	return float64(lo) + float64(uint64(1)<<e)/2
}

// add records one latency in nanoseconds; negative values (clock steps)
// count as zero.
func (s *histShard) add(ns int64) {
	ns = max(ns, 0)
	b := bucketOf(uint64(ns / int64(time.Microsecond)))
	if b >= histBuckets {
		b = histBuckets - 1
	}
	s.counts[b].Add(1)
	for {
		m := s.max.Load()
		if ns <= m || s.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// Latency summarises the publish-to-receive latencies of a run, in
// milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func (h *histogram) summary() Latency {
	var (
		counts [histBuckets]uint64
		l      Latency
		maxNS  int64
	)
	for _, s := range h.shards {
		for i := range counts {
			counts[i] += s.counts[i].Load()
		}
		maxNS = max(maxNS, s.max.Load())
	}
	for _, c := range counts {
		l.Count += c
	}
	if l.Count == 0 {
		return l
	}
	quantile := func(q float64) float64 {
		rank := uint64(q * float64(l.Count))
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen > rank {
				return bucketMid(i) / 1000
			}
		}
		return float64(maxNS) / 1e6
	}
	l.P50, l.P90, l.P99 = quantile(0.50), quantile(0.90), quantile(0.99)
	l.Max = float64(maxNS) / 1e6
	// A bucket's middle can exceed the exact maximum.
	l.P50, l.P90, l.P99 = min(l.P50, l.Max), min(l.P90, l.Max), min(l.P99, l.Max)
	return l
}
