// Command webpage serves a web page that subscribes to an ssehub hub with
// EventSource, together with the hub itself, on one address:
//
//	go run ./examples/webpage --addr 127.0.0.1:5000
//
// Open http://127.0.0.1:5000/ and publish to it:
//
//	echo '{"code":"ACK","msg":"cool message"}' |
//	  ssehub publish --url http://127.0.0.1:5000 --channel cool_channel --type cool
//
// Events of type "cool" on channel "cool_channel" are listed on the page;
// events without a type go to the browser's console.
//
// Flags:
//
//	--addr ADDR          address to listen on (default 127.0.0.1:5000)
//	--broker URL         memory: (default) or redis://host:port/db, which keeps
//	                     history across restarts
//	--cors-origin ORIGIN let pages on ORIGIN use the hub (repeatable)
//	--hub ORIGIN         serve only the page, subscribing to the hub at ORIGIN
//	--tls-cert FILE      serve HTTPS (and so HTTP/2) with this certificate
//	--tls-key FILE       and this key
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
)

//go:embed index.html
var indexHTML string

var pageTemplate = template.Must(template.New("index.html").Parse(indexHTML))

// shutdownTimeout bounds how long a shutdown waits for streams and
// requests in flight.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "webpage:", err)
		os.Exit(1)
	}
}

// options are the command line flags.
type options struct {
	addr        string
	broker      string
	hub         string
	corsOrigins []string
	tlsCert     string
	tlsKey      string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("webpage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:5000", "address to listen on")
	fs.StringVar(&o.broker, "broker", "memory:", "broker URL: memory: or redis://host:port/db")
	fs.StringVar(&o.hub, "hub", "", "origin of a hub on another origin to subscribe to; the page is then served alone")
	fs.Func("cors-origin", "origin whose pages may use the hub, e.g. http://127.0.0.1:5001 (repeatable)", func(s string) error {
		o.corsOrigins = append(o.corsOrigins, s)
		return nil
	})
	fs.StringVar(&o.tlsCert, "tls-cert", "", "certificate file (PEM) to serve HTTPS and HTTP/2")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key file (PEM) for --tls-cert")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return o, errors.New("--tls-cert and --tls-key go together")
	case o.hub != "" && len(o.corsOrigins) > 0:
		return o, errors.New("--cors-origin applies to a hub served here, not with --hub")
	}
	return o, nil
}

// run serves the page, and the hub unless --hub names another one, until
// ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	var hub *ssehub.Hub
	if o.hub == "" {
		broker, closeBroker, err := openBroker(o.broker, log)
		if err != nil {
			return err
		}
		defer closeBroker()
		// Detach: idle HTTP/1.1 streams hold no goroutine or buffers.
		hub, err = ssehub.New(ssehub.Config{Broker: broker, Logger: log, Detach: true})
		if err != nil {
			return err
		}
		// For an early return; after serve the hub is closed already.
		defer hub.Close(context.WithoutCancel(ctx))
	}
	handler, err := newHandler(hub, o.hub, o.corsOrigins)
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert, --tls-key: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	return serve(ctx, ln, handler, hub, tlsConfig, log)
}

// openBroker returns the broker that rawURL names and a function that
// closes it. For memory: it returns a nil Broker, so the hub creates and
// closes its own MemoryBroker. redis://[user:password@]host:port/db (or
// rediss:// for TLS) names a Redis server; hubs that share it share
// channels and history, and history survives a restart of the hub.
func openBroker(rawURL string, log *slog.Logger) (ssehub.Broker, func(), error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, errors.New("--broker is not a valid URL")
	}
	switch u.Scheme {
	case "memory":
		return nil, func() {}, nil
	case "redis", "rediss":
		opts, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, nil, fmt.Errorf("--broker %q: not a valid Redis URL", u.Redacted())
		}
		client := redis.NewClient(opts)
		b, err := redisbroker.New(client, redisbroker.Options{Logger: log})
		if err != nil {
			client.Close()
			return nil, nil, err
		}
		// The broker does not close the client it was given.
		return b, func() {
			b.Close(context.Background())
			client.Close()
		}, nil
	}
	return nil, nil, fmt.Errorf("--broker %q: unsupported scheme %q (use memory: or redis://)", u.Redacted(), u.Scheme)
}

// newHandler returns the example's routes on one ServeMux: the page at /,
// and the hub's /sse, /publish and /healthz when hub is not nil, allowing
// pages on corsOrigins to use them. hubOrigin, when set, is the origin of
// the hub the page subscribes to instead of its own.
func newHandler(hub *ssehub.Hub, hubOrigin string, corsOrigins []string) (http.Handler, error) {
	if hubOrigin != "" {
		norm, err := ssehub.NormalizeOrigin(hubOrigin)
		if err != nil {
			return nil, fmt.Errorf("--hub: %w", err)
		}
		hubOrigin = norm
	}
	var page bytes.Buffer
	if err := pageTemplate.Execute(&page, struct{ Hub string }{hubOrigin}); err != nil {
		return nil, err
	}
	body := page.Bytes()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write(body)
	})
	if hub != nil {
		var h http.Handler = hub
		if len(corsOrigins) > 0 {
			var err error
			if h, err = ssehub.CORS(corsOrigins, hub); err != nil {
				return nil, fmt.Errorf("--cors-origin: %w", err)
			}
		}
		// No method in these patterns: the hub answers wrong methods, and
		// CORS answers preflight requests.
		mux.Handle("/sse", h)
		mux.Handle("/publish", h)
		mux.Handle("/healthz", h)
	}
	return mux, nil
}

// serve serves handler on ln, over HTTPS (and so HTTP/2) when tlsConfig
// is not nil, until ctx ends; it then shuts the server down, closing hub
// (when not nil) so that open streams end.
func serve(ctx context.Context, ln net.Listener, handler http.Handler, hub *ssehub.Hub, tlsConfig *tls.Config, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if hub != nil {
		// Shutdown waits for handlers to return, and a stream returns only
		// once the hub closes.
		srv.RegisterOnShutdown(func() {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			hub.Close(ctx)
		})
	}
	ssehub.CloseFreshConns(srv)
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	served := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()
	log.LogAttrs(ctx, slog.LevelInfo, "serving", slog.String("url", scheme+"://"+ln.Addr().String()+"/"))

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
