package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ssehub/ssehub"
)

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "serve [flags]", stdout)
	var (
		addr            = fs.String("addr", "127.0.0.1:8080", "`address` to listen on")
		brokerURL       = fs.String("broker", "memory:", "broker `URL`: memory:, redis://[user:password@]host:port/db or rediss://...")
		heartbeat       = fs.Duration("heartbeat", ssehub.DefaultHeartbeat, "interval of heartbeat comments on idle streams; 0 disables")
		retry           = fs.Duration("retry", ssehub.DefaultRetry, "reconnection delay told to clients when a stream opens")
		historySize     = fs.Int("history-size", ssehub.DefaultHistorySize, "events kept per channel for replay; 0 keeps none")
		historyAge      = fs.Duration("history-age", ssehub.DefaultHistoryAge, "how long events stay replayable")
		historyBytes    = fs.Int64("history-bytes", ssehub.DefaultHistoryBytes, "memory the events kept for replay and for slow streams may take, in `bytes`, over all channels; one channel may take a quarter")
		publishTimeout  = fs.Duration("publish-timeout", ssehub.DefaultPublishTimeout, "how long a publish waits for the broker before answering 504 (outcome unknown) or 503 (not published)")
		maxMessageBytes = fs.Int("max-message-bytes", ssehub.DefaultMaxMessageBytes, "largest accepted message data, in bytes")
		maxChannels     = fs.Int("max-channels-per-connection", ssehub.DefaultMaxChannels, "most channels one stream may subscribe to")
		shutdownTimeout = fs.Duration("shutdown-timeout", 10*time.Second, "how long shutdown waits for publishes in flight and streams to end")
		redisEnvelope   = fs.String("redis-envelope", "invenio", redisEnvelopeUsage)
		detach          = fs.Bool("detach", true, "take each HTTP/1.1 stream over from net/http once its headers are sent: a few KB per idle stream, and writes from a small pool")
		web             = addWebFlags(fs)
		ops             = addOpsFlags(fs) // ops.go
	)
	sec := addSecurityFlags(fs) // security.go
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := web.prepare(); err != nil {
		return err
	}
	if err := checkRedisEnvelope(*redisEnvelope); err != nil {
		return err
	}
	if err := ops.check(); err != nil {
		return err
	}
	if *heartbeat == 0 {
		*heartbeat = -1
	}
	if *historySize < 0 || *historyBytes <= 0 || *maxMessageBytes <= 0 || *maxChannels <= 0 {
		return errors.New("--history-size must be >= 0 and --history-bytes, --max-message-bytes, --max-channels-per-connection > 0")
	}
	if *publishTimeout <= 0 {
		return errors.New("--publish-timeout must be > 0")
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
	broker, closeBroker, err := openBroker(ctx, *brokerURL, brokerOptions{historySize: *historySize, historyAge: *historyAge, historyBytes: *historyBytes, logger: logger, metrics: ops.brokerMetrics(), envelope: *redisEnvelope})
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
		return err
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

	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Info("shutting down")
		var cancel context.CancelFunc
		shutdownCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), ops.drain+*shutdownTimeout)
		defer cancel()
		err = srv.Shutdown(shutdownCtx)
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("shutdown: streams still open after %s", ops.drain+*shutdownTimeout)
			srv.Close()
		}
		// Detached streams are the hub's, not the server's: Shutdown does
		// not wait for them, the hub's Drain does.
		ops.waitHub(shutdownCtx)
	}
	if cerr := closeBroker(context.WithoutCancel(ctx)); err == nil && cerr != nil && !errors.Is(cerr, ssehub.ErrClosed) {
		err = cerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
