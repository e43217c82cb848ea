package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/promhub"
)

// opsOptions are the serve flags for running the hub in production: logs,
// metrics and the drain on shutdown.
type opsOptions struct {
	logFormat       choiceFlag
	logLevel        slog.Level
	metricsAddr     string
	drain           time.Duration
	shutdownTimeout time.Duration

	registry *prometheus.Registry // nil when metrics are off
	prom     *promhub.Metrics     // nil when metrics are off
	hubDone  chan struct{}        // closed when closeHub returns
}

// metricsOff is the --metrics-addr value that turns metrics off.
const metricsOff = "off"

func addOpsFlags(fs *flagSet) *opsOptions {
	o := &opsOptions{
		logFormat: choiceFlag{value: "text", choices: []string{"text", "json"}},
		hubDone:   make(chan struct{}),
	}
	g := fs.group(groupOperations)
	g.Var(&o.logFormat, "log-format", "log `format`: text or json")
	g.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "least `level` logged: debug, info, warn or error")
	g.StringVar(&o.metricsAddr, "metrics-addr", "", "`address` to serve /metrics on; empty serves it on --addr, "+metricsOff+" disables it")
	g.DurationVar(&o.drain, "drain", 0, "on SIGTERM, end streams in waves over this `period`, telling clients to come back with jitter; 0s ends them at once")
	g.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits, after the drain, for publishes in flight and streams to end")
	return o
}

// check rejects values that parse but make no sense.
func (o *opsOptions) check() error {
	if o.drain < 0 {
		return fmt.Errorf("--drain %s is negative", o.drain)
	}
	return nil
}

// logger returns the logger the flags ask for, writing to w.
func (o *opsOptions) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: o.logLevel}
	if o.logFormat.value == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// setupMetrics creates the registry and the hub's metrics unless they are
// off. The registry also holds the Go runtime's and the process's metrics,
// and go_build_info.
func (o *opsOptions) setupMetrics() error {
	if o.metricsAddr == metricsOff {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	m, err := promhub.New(reg)
	if err != nil {
		return err
	}
	o.registry, o.prom = reg, m
	return nil
}

// hubMetrics returns the metrics for ssehub.Config, nil when they are off.
func (o *opsOptions) hubMetrics() ssehub.Metrics {
	if o.prom == nil {
		return nil
	}
	return o.prom
}

func (o *opsOptions) metricsHandler() http.Handler {
	return promhttp.HandlerFor(o.registry, promhttp.HandlerOpts{})
}

// handler returns what the main listener serves: the hub, and /metrics
// when metrics are on and have no listener of their own.
func (o *opsOptions) handler(hub http.Handler) http.Handler {
	if o.registry == nil || o.metricsAddr != "" {
		return hub
	}
	mux := http.NewServeMux()
	mux.Handle("/", hub)
	mux.Handle("GET /metrics", ssehub.RefuseBodies(o.metricsHandler()))
	return mux
}

// serveMetrics starts the metrics listener when --metrics-addr names one,
// and returns the func that stops it.
func (o *opsOptions) serveMetrics(logger *slog.Logger) (stop func(context.Context), err error) {
	if o.registry == nil || o.metricsAddr == "" {
		return func(context.Context) {}, nil
	}
	ln, err := net.Listen("tcp", o.metricsAddr)
	if err != nil {
		return nil, listenError("--metrics-addr", o.metricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metricsHandler())
	srv := &http.Server{
		Handler:           ssehub.RefuseBodies(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go srv.Serve(ln)
	logger.Info("metrics listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String()+"/metrics")
	return func(ctx context.Context) { srv.Shutdown(ctx) }, nil
}

// closeHub ends the hub on shutdown: streams end in waves over --drain. A
// second SIGINT or SIGTERM during the drain ends the remaining streams at
// once.
func (o *opsOptions) closeHub(ctx context.Context, hub *ssehub.Hub) error {
	defer close(o.hubDone)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		select {
		case <-sig:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := hub.Drain(ctx, o.drain)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// waitHub waits for closeHub to return, or for ctx.
func (o *opsOptions) waitHub(ctx context.Context) {
	select {
	case <-o.hubDone:
	case <-ctx.Done():
	}
}

// brokerMetrics returns the metrics for a broker's connection, nil when
// they are off.
func (o *opsOptions) brokerMetrics() ssehub.BrokerMetrics {
	if o.prom == nil {
		return nil
	}
	return o.prom
}

// choiceFlag is a string flag that takes one of a fixed set of values.
type choiceFlag struct {
	value   string
	choices []string
}

func (c *choiceFlag) String() string { return c.value }

func (c *choiceFlag) Set(v string) error {
	for _, ch := range c.choices {
		if v == ch {
			c.value = v
			return nil
		}
	}
	return fmt.Errorf("must be %s", strings.Join(c.choices, " or "))
}
