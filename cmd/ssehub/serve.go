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
		brokerURL       = fs.String("broker", "memory:", "broker `URL`: memory:")
		heartbeat       = fs.Duration("heartbeat", ssehub.DefaultHeartbeat, "interval of heartbeat comments on idle streams; 0 disables")
		retry           = fs.Duration("retry", ssehub.DefaultRetry, "reconnection delay told to clients when a stream opens")
		historySize     = fs.Int("history-size", ssehub.DefaultHistorySize, "events kept per channel for replay (memory broker)")
		historyAge      = fs.Duration("history-age", ssehub.DefaultHistoryAge, "how long events stay replayable (memory broker)")
		queueSize       = fs.Int("queue-size", ssehub.DefaultQueueSize, "events that may wait for one subscriber before it is disconnected")
		maxMessageBytes = fs.Int("max-message-bytes", ssehub.DefaultMaxMessageBytes, "largest accepted message data, in bytes")
		maxChannels     = fs.Int("max-channels-per-connection", ssehub.DefaultMaxChannels, "most channels one stream may subscribe to")
		shutdownTimeout = fs.Duration("shutdown-timeout", 10*time.Second, "how long shutdown waits for publishes in flight and streams to end")
		web             = addWebFlags(fs)
	)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := web.prepare(); err != nil {
		return err
	}
	if *heartbeat == 0 {
		*heartbeat = -1
	}
	if *historySize < 0 || *queueSize <= 0 || *maxMessageBytes <= 0 || *maxChannels <= 0 {
		return errors.New("--history-size must be >= 0 and --queue-size, --max-message-bytes, --max-channels-per-connection > 0")
	}
	if *historySize == 0 {
		*historySize = -1
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	broker, closeBroker, err := openBroker(ctx, *brokerURL, brokerOptions{historySize: *historySize, historyAge: *historyAge, logger: logger})
	if err != nil {
		return err
	}
	hub, err := ssehub.New(ssehub.Config{
		Broker:          broker,
		Heartbeat:       *heartbeat,
		Retry:           *retry,
		QueueSize:       *queueSize,
		MaxMessageBytes: *maxMessageBytes,
		MaxChannels:     *maxChannels,
		Logger:          logger,
	})
	if err != nil {
		closeBroker(ctx)
		return err
	}

	handler, err := web.handler(hub)
	if err != nil {
		closeBroker(ctx)
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		closeBroker(ctx)
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Shutdown waits for handlers to return, and a stream returns only
	// when the hub ends it. shutdownCtx is set before Shutdown runs this.
	var shutdownCtx context.Context
	srv.RegisterOnShutdown(func() { hub.Close(shutdownCtx) })

	served := make(chan error, 1)
	go func() { served <- web.serve(srv, ln) }()
	logger.Info("listening", "addr", ln.Addr().String(), "url", web.url(ln), "broker", *brokerURL)

	select {
	case err = <-served:
	case <-ctx.Done():
		logger.Info("shutting down")
		var cancel context.CancelFunc
		shutdownCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), *shutdownTimeout)
		defer cancel()
		err = srv.Shutdown(shutdownCtx)
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("shutdown: streams still open after %s", *shutdownTimeout)
			srv.Close()
		}
	}
	if cerr := closeBroker(context.WithoutCancel(ctx)); err == nil && cerr != nil && !errors.Is(cerr, ssehub.ErrClosed) {
		err = cerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
