package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ssehub/ssehub/internal/bench"
)

func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "bench [flags]", stdout)
	fs.about = "Opens streams to a hub on this machine, publishes events through it, and prints " +
		"what every stream received, how fast and at what cost. Its flags describe one run " +
		"and read no environment variable."
	fs.examples = []string{
		"ssehub bench --url http://127.0.0.1:8080 --subscribers 1000 --events 5000",
		"ssehub bench --url http://127.0.0.1:8080 --pid $(pgrep -n ssehub) --subscribers 10000 --channels 100 --baseline",
	}
	var (
		o          bench.Options
		baseURLs   listFlag
		streamURLs listFlag
		pids       listFlag
		publishURL = fs.String("publish-url", "", "`URL` that takes POST {\"channel\",\"data\"} (default from the first --url)")
		sources    = fs.String("sources", "", "loopback source `addresses` to connect from, as 127.0.0.1-127.0.0.4,127.0.1.1 (default 127.0.0.1 and one more per 10,000 subscribers)")
		baseline   = fs.Bool("baseline", false, "run the same scenario against a naive broadcaster in a process of its own, and print each figure as a ratio to it")
		jsonOnly   = fs.Bool("json", false, "print only the JSON line")
		serveNaive = fs.String("serve-naive", "", "serve the naive broadcaster on `address` and print its URL (what --baseline runs)")
	)
	fs.Var(&baseURLs, "url", "base `URL` of a hub: streams at /sse, publishes at /publish; repeat to spread the streams over several hubs, publishing through the first (default http://127.0.0.1:8080)")
	fs.Var(&streamURLs, "stream-url", "subscribe `URL` template, {channel} standing for the channel, for a server other than ssehub; may be repeated (default from --url)")
	fs.Var(&pids, "pid", "process `id` of a hub, for its memory and CPU from /proc; repeat for several hubs, the figures are summed")
	fs.IntVar(&o.Subscribers, "subscribers", 1000, "streams to open")
	fs.IntVar(&o.Channels, "channels", 1, "channels the streams and events are spread over")
	fs.IntVar(&o.Events, "events", 10000, "events to publish in all; -1 publishes none and only listens (see --expect)")
	fs.Float64Var(&o.Rate, "rate", 0, "events per second over all channels; 0 publishes as fast as --window allows")
	fs.IntVar(&o.Window, "window", bench.DefaultWindow, "events a channel may be published ahead of its slowest stream; 0 publishes flat out, whoever keeps up")
	fs.IntVar(&o.Publishers, "publishers", bench.DefaultPublishers, "publish connections, each pipelining its channels' events in order")
	fs.IntVar(&o.Inflight, "inflight", bench.DefaultInflight, "publish requests each publisher may have sent and not seen answered; 1 waits for each answer")
	fs.IntVar(&o.Size, "size", 0, "pad each event's data to about this many `bytes`")
	fs.IntVar(&o.Slow, "slow", 0, "streams that read slowly (see --slow-rate), as over a slow link; they must still get every event")
	fs.IntVar(&o.SlowRate, "slow-rate", bench.DefaultSlowRate, "`bytes` per second a slow stream reads")
	fs.IntVar(&o.Stalled, "stalled", 0, "streams that never read once open, as a hung client; the hub should cut them, and the others must not suffer")
	fs.DurationVar(&o.StalledWait, "stalled-wait", 0, "how long stalled streams stay stalled after the events are delivered, before they read to find out whether they were cut; over the hub's write timeout to see the cuts")
	fs.Float64Var(&o.ConnectRate, "connect-rate", 0, "new streams per second; 0 connects as fast as the hub accepts")
	fs.IntVar(&o.DialConcurrency, "dial-concurrency", bench.DefaultDialConcurrency, "streams connecting at once")
	fs.DurationVar(&o.Settle, "settle", bench.DefaultSettle, "idle time after connecting, before the hub's memory is read and publishing starts")
	fs.DurationVar(&o.Drain, "drain", bench.DefaultDrain, "how long to wait for missing events once deliveries stop")
	fs.IntVar(&o.Expect, "expect", 0, "with --events -1: events each stream waits for before the run ends")
	fs.DurationVar(&o.Hold, "hold", bench.DefaultHold, "with --events -1: the longest the run listens")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *serveNaive != "" {
		return bench.ServeNaive(ctx, *serveNaive, func(url string) { fmt.Fprintln(stdout, url) })
	}
	if o.Events == 0 {
		return errors.New("--events must be positive, or -1 to only listen")
	}
	if o.Subscribers <= 0 || o.Channels <= 0 {
		return errors.New("--subscribers and --channels must be positive")
	}
	if o.Window <= 0 {
		o.Window = -1 // no bound
	}
	if o.Slow < 0 || o.Stalled < 0 || o.SlowRate <= 0 {
		return errors.New("--slow and --stalled must not be negative, and --slow-rate must be positive")
	}
	if *sources != "" {
		var err error
		if o.Sources, err = bench.ParseSources(*sources); err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "bench: "))
		}
	}
	if limit := bench.FileLimit(); limit > 0 && o.Subscribers > limit-100 {
		fmt.Fprintf(stderr, "warning: %d subscribers need as many files and the limit is %d; run several bench processes with --events -1 beside one that publishes\n", o.Subscribers, limit)
	}
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return fmt.Errorf("invalid --pid %q", p)
		}
		o.PIDs = append(o.PIDs, pid)
	}
	o.Progress = stderr
	if len(baseURLs) == 0 {
		baseURLs = listFlag{"http://127.0.0.1:8080"}
	}
	for _, u := range baseURLs {
		stream, _ := bench.Targets(u)
		o.StreamURLs = append(o.StreamURLs, stream)
	}
	if len(streamURLs) > 0 {
		o.StreamURLs = streamURLs
	}
	o.PublishURL = *publishURL
	if o.PublishURL == "" {
		_, o.PublishURL = bench.Targets(baseURLs[0])
	}

	hub, err := bench.Run(ctx, o)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "bench: "))
	}
	var base *bench.Result
	if *baseline {
		if base, err = runBaseline(ctx, o, stderr); err != nil {
			return err
		}
	}
	c := bench.Compare(hub, base)
	if !*jsonOnly {
		if err := c.WriteTable(stdout); err != nil {
			return err
		}
	}
	return c.WriteJSON(stdout)
}

// runBaseline runs o against a naive broadcaster in a child process, this
// same program with --serve-naive, so that its memory and CPU are its own
// and its connections do not count against this process's file limit.
func runBaseline(ctx context.Context, o bench.Options, stderr io.Writer) (*bench.Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	srv, err := bench.StartProcess(ctx, exe, "bench", "--serve-naive", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	fmt.Fprintln(stderr, "== naive broadcaster")
	o.PIDs = []int{srv.PID}
	stream, publish := bench.Targets(srv.URL)
	o.StreamURLs, o.PublishURL = []string{stream}, publish
	// Let the hub's connections of the first run go before the second.
	if err := bench.Sleep(ctx, time.Second); err != nil {
		return nil, err
	}
	res, err := bench.Run(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("baseline: %s", strings.TrimPrefix(err.Error(), "bench: "))
	}
	return res, nil
}
