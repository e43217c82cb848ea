package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/natsbroker"
)

// natsFlags are the flags of a NATS broker that its URL leaves out.
type natsFlags struct {
	stream   *string
	replicas *int
}

// addNATSFlags adds the NATS broker's flags; publish takes only the
// stream's name, since it uses the stream as the hubs configured it.
func addNATSFlags(fs *flagSet, publish bool) natsFlags {
	const streamUsage = "with a nats:// --broker: the JetStream `stream` of events, on subjects <stream in lower case>.<channel>"
	if publish {
		f := natsFlags{stream: fs.String("nats-stream", natsbroker.DefaultStream, streamUsage)}
		// The hubs' setting, read from the deployment's environment.
		fs.env("nats-stream", "SSEHUB_NATS_STREAM")
		return f
	}
	g := fs.group(groupBroker)
	return natsFlags{
		stream:   g.String("nats-stream", natsbroker.DefaultStream, streamUsage),
		replicas: g.Int("nats-replicas", 0, "with a nats:// --broker: `copies` of the stream; 0 is 3 on a cluster of 3 servers or more, else 1"),
	}
}

func (f natsFlags) options() natsOptions {
	o := natsOptions{stream: *f.stream}
	if f.replicas != nil {
		o.replicas = *f.replicas
	} else {
		o.publishOnly = true
	}
	return o
}

// natsOptions configure a NATS broker.
type natsOptions struct {
	stream   string
	replicas int
	// publishOnly: a publish without a hub. It connects once, failing at
	// once when no server answers, and keeps the stream's settings.
	publishOnly bool
}

// isNATSURL reports whether raw names NATS servers: nats://HOST:PORT, or
// tls:// for TLS, several separated by commas.
func isNATSURL(raw string) bool {
	return strings.HasPrefix(raw, "nats://") || strings.HasPrefix(raw, "tls://")
}

// splitNATSURL checks a comma-separated list of server URLs and returns
// it with passwords redacted, for messages.
func splitNATSURL(raw string) (urls []string, redacted string, err error) {
	var shown []string
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		u, perr := url.Parse(part)
		if perr != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" || u.Port() == "" {
			return nil, "", fmt.Errorf("broker URL %q: want nats://HOST:PORT (or tls://), several separated by commas", redactNATS(part))
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return nil, "", fmt.Errorf("broker URL %q: a NATS server URL has no path or query; see --nats-stream", u.Redacted())
		}
		urls = append(urls, part)
		shown = append(shown, u.Redacted())
	}
	return urls, strings.Join(shown, ","), nil
}

// redactNATS hides a password or token in a URL that may not parse.
func redactNATS(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "xxxxx" + raw[i:]
		}
	}
	return raw
}

// openNATSBroker opens a NATS JetStream broker with a connection of its
// own to the servers raw lists. A hub's connection is made even while no
// server answers, and retried for ever, so that the hub starts and
// reports itself unready until NATS is there.
func openNATSBroker(raw string, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	urls, shown, err := splitNATSURL(raw)
	if err != nil {
		return nil, nil, err
	}
	log := opt.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nopts := []nats.Option{
		nats.Name("ssehub"),
		nats.Timeout(2 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// While reconnecting, publishes fail at once and the broker sends
		// them again on the next connection, instead of a buffer holding
		// them past their deadline.
		nats.ReconnectBufSize(-1),
		// Detect a server that stopped answering within a minute.
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats: disconnected", "error", err.Error())
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "server", redactNATS(nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("nats: error", "error", err.Error())
		}),
	}
	if !opt.nats.publishOnly {
		nopts = append(nopts, nats.RetryOnFailedConnect(true))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cannot connect to NATS at %s: %v", ssehub.ErrUnavailable, shown, err)
	}
	stream := opt.nats.stream
	if stream == "" {
		stream = natsbroker.DefaultStream
	}
	b, err := natsbroker.New(nc, natsbroker.Options{
		Stream:       stream,
		Replicas:     opt.nats.replicas,
		HistorySize:  opt.historySize,
		HistoryAge:   opt.historyAge,
		HistoryBytes: opt.historyBytes,
		KeepStream:   opt.nats.publishOnly,
		Logger:       opt.logger,
		Metrics:      opt.metrics,
	})
	if err != nil {
		nc.Close()
		return nil, nil, errors.New(strings.TrimPrefix(err.Error(), "natsbroker: "))
	}
	closeAll := func(ctx context.Context) error {
		err := b.Close(ctx)
		nc.Close()
		return err
	}
	return b, closeAll, nil
}
