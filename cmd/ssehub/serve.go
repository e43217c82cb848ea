package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
)

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "serve [flags]", stdout)
	fs.about = "Runs the hub: streams at GET /sse?channel=NAME, publishing at POST /publish, " +
		"health at /healthz and /readyz, metrics at /metrics. Stop it with Ctrl-C or SIGTERM."
	fs.examples = []string{
		"ssehub serve",
		"ssehub serve --addr 0.0.0.0:8080 --broker redis://127.0.0.1:6379/0 --log-format json --drain 20s",
		"ssehub serve --jwt-secret-file secret --public 'public.*' --tls-cert cert.pem --tls-key key.pem",
	}
	fs.envEvery = true
	fs.groups = slices.Clone(serveGroups) // the headings of --help, in order
	listening, brokers, streams := fs.group(groupListening), fs.group(groupBroker), fs.group(groupStreams)
	history, limits := fs.group(groupHistory), fs.group(groupLimits)
	var (
		addr            = listening.String("addr", "127.0.0.1:8080", "`address` to listen on, host:port; 0.0.0.0:8080 for every interface")
		brokerURL       = brokers.String("broker", "memory:", "broker `URL`: memory:, redis://[user:password@]host:port/db, rediss://..., redis-sentinel://[user:password@]host:port[,host:port...]/master[?db=N], redis-cluster://[user:password@]host:port[,host:port...], or nats://host:port[,nats://host:port...] (tls://... for TLS)")
		publishTimeout  = brokers.Duration("publish-timeout", ssehub.DefaultPublishTimeout, "how long a publish waits for the broker before answering 504 (outcome unknown) or 503 (not published)")
		redisEnvelope   = brokers.String("redis-envelope", "invenio", redisEnvelopeUsage)
		redisWait       = brokers.Int("redis-wait-replicas", 0, redisWaitReplicasUsage)
		redisWaitFor    = brokers.Duration("redis-wait-timeout", redisbroker.DefaultWaitTimeout, redisWaitTimeoutUsage)
		heartbeat       = streams.Duration("heartbeat", ssehub.DefaultHeartbeat, "interval of heartbeat comments on idle streams; 0s disables them")
		retry           = streams.Duration("retry", ssehub.DefaultRetry, "reconnection delay told to clients when a stream opens")
		detach          = streams.Bool("detach", true, "take each HTTP/1.1 stream over from net/http once its headers are sent: a few KB per idle stream, and writes from a small pool")
		historySize     = history.Int("history-size", ssehub.DefaultHistorySize, "events kept per channel for replay; 0 keeps none")
		historyAge      = history.Duration("history-age", ssehub.DefaultHistoryAge, "how long events stay replayable")
		historyBytes    = history.Int64("history-bytes", ssehub.DefaultHistoryBytes, "memory the events kept for replay and for slow streams may take, in `bytes`, over all channels; one channel may take a quarter")
		maxMessageBytes = limits.Int("max-message-bytes", ssehub.DefaultMaxMessageBytes, "largest accepted message data, in bytes")
		maxChannels     = limits.Int("max-channels-per-connection", ssehub.DefaultMaxChannels, "most channels one stream may subscribe to")
		web             = addWebFlags(fs)
		sec             = addSecurityFlags(fs) // security.go
		ops             = addOpsFlags(fs)      // ops.go
	)
	natsFlags := addNATSFlags(fs, false) // nats.go
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := web.prepare(); err != nil {
		return err
	}
	if err := checkRedisEnvelope(*redisEnvelope); err != nil {
		return err
	}
	if err := checkRedisWait(fs, *redisWait, *redisWaitFor); err != nil {
		return err
	}
	if err := ops.check(); err != nil {
		return err
	}
	if *heartbeat == 0 {
		*heartbeat = -1
	}
	for _, c := range []struct {
		name string
		bad  bool
		want string
	}{
		{"history-size", *historySize < 0, "0 or more"},
		{"max-message-bytes", *maxMessageBytes <= 0, "1 or more"},
		{"max-channels-per-connection", *maxChannels <= 0, "1 or more"},
		{"heartbeat", *heartbeat < -1, "0s (off) or more"},
		{"retry", *retry < 0, "0s or more"},
		{"history-age", *historyAge < 0, "0s or more"},
		{"history-bytes", *historyBytes <= 0, "1 or more"},
		{"publish-timeout", *publishTimeout <= 0, "more than 0s"},
	} {
		if c.bad {
			return fmt.Errorf("%s: %q must be %s", fs.source(c.name), fs.Lookup(c.name).Value, c.want)
		}
	}
	// Streams keep up to that many events of a channel in memory, as
	// history or, with a remote broker, as the hub's own backlog.
	backlog := *historySize
	if *historySize == 0 {
		*historySize = -1
		backlog = 0
	}

	logger := ops.logger(stderr)
	if err := ops.setupMetrics(); err != nil {
		return err
	}
	broker, closeBroker, err := openBroker(ctx, *brokerURL, brokerOptions{
		historySize:  *historySize,
		historyAge:   *historyAge,
		historyBytes: *historyBytes,
		logger:       logger,
		metrics:      ops.brokerMetrics(),
		envelope:     *redisEnvelope,
		waitReplicas: *redisWait,
		waitTimeout:  *redisWaitFor,
		nats:         natsFlags.options(),
	})
	if err != nil {
		return err
	}
	cfg := ssehub.Config{
		Broker:          broker,
		Heartbeat:       *heartbeat,
		Retry:           *retry,
		Backlog:         backlog,
		BacklogBytes:    *historyBytes,
		MaxMessageBytes: *maxMessageBytes,
		MaxChannels:     *maxChannels,
		Detach:          *detach,
		Logger:          logger,
		Metrics:         ops.hubMetrics(),
		PublishTimeout:  *publishTimeout,
	}
	if err := sec.apply(&cfg); err != nil {
		closeBroker(ctx)
		return err
	}
	hub, err := ssehub.New(cfg)
	if err != nil {
		closeBroker(ctx)
		return err
	}

	handler, err := web.handler(hub)
	if err != nil {
		closeBroker(ctx)
		return err
	}
	handler = ops.handler(handler)
	stopMetrics, err := ops.serveMetrics(logger)
	if err != nil {
		closeBroker(ctx)
		return err
	}
	defer stopMetrics(context.WithoutCancel(ctx))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		closeBroker(ctx)
		return listenError(fs.source("addr"), *addr, err)
	}
	// No ReadTimeout or WriteTimeout: they would cut streams. The hub
	// bounds the read of publish bodies and each write to a stream itself.
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Shutdown waits for handlers to return, and a stream returns only
	// when the hub ends it. shutdownCtx is set before Shutdown runs this.
	var shutdownCtx context.Context
	hub.LimitConns(srv)
	srv.RegisterOnShutdown(func() { ops.closeHub(shutdownCtx, hub) })

	served := make(chan error, 1)
	go func() { served <- web.serve(srv, ln) }()
	logger.Info("listening", "addr", ln.Addr().String(), "url", web.url(ln), "broker", redactURL(*brokerURL))
	sec.logAccess(logger, cfg, ln.Addr())
	watched := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	go func() {
		defer close(watched)
		watchBroker(watchCtx, logger, broker, *brokerURL)
	}()

	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Info("shutting down")
		var cancel context.CancelFunc
		shutdownCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), ops.drain+ops.shutdownTimeout)
		defer cancel()
		err = srv.Shutdown(shutdownCtx)
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("shutdown: streams still open after %s", ops.drain+ops.shutdownTimeout)
			srv.Close()
		}
		// Detached streams are the hub's, not the server's: Shutdown does
		// not wait for them, the hub's Drain does.
		ops.waitHub(shutdownCtx)
	}
	stopWatch()
	<-watched
	if cerr := closeBroker(context.WithoutCancel(ctx)); err == nil && cerr != nil && !errors.Is(cerr, ssehub.ErrClosed) {
		err = cerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
