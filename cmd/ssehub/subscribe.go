package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/ssehub/ssehub/sseclient"
)

// errDone stops a subscription that has printed the events it was asked for.
var errDone = errors.New("done")

func runSubscribe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("subscribe", "subscribe [flags]", stdout)
	var channels listFlag
	fs.Var(&channels, "channel", "`channel` to subscribe to; repeat for several (default sse)")
	var (
		lastID = fs.String("last-event-id", "", "resume after this event `id`")
		hubURL = fs.String("url", "http://127.0.0.1:8080", "`URL` of the hub")
		count  = fs.Int("count", 0, "exit after this many events; 0 runs until interrupted")
		quiet  = fs.Bool("quiet", false, "do not report reconnects on stderr")
		token  = fs.String("token", "", "bearer `token` for the hub (a JWT whose subscribe claim covers the channels)")
	)
	if err := fs.parse(args); err != nil {
		return err
	}
	streamURL, err := streamURL(*hubURL, channels)
	if err != nil {
		return err
	}
	c := &sseclient.Client{URL: streamURL, LastEventID: *lastID, Header: bearerHeader(*token)}
	if !*quiet {
		c.OnError = func(err error) {
			fmt.Fprintf(stderr, "ssehub: subscribe: %v; reconnecting\n", unwrapURLError(err))
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	n := 0
	err = c.Run(ctx, func(e sseclient.Event) error {
		line := struct {
			ID    string          `json:"id"`
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}{e.ID, e.Type, json.RawMessage(e.Data)}
		if !json.Valid(line.Data) {
			// Data that is not JSON (from a publisher that sends raw
			// strings) is printed as a JSON string.
			line.Data, _ = json.Marshal(e.Data)
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
		n++
		if *count > 0 && n >= *count {
			return errDone
		}
		return nil
	})
	if errors.Is(err, errDone) || errors.Is(err, context.Canceled) {
		return nil
	}
	var se *sseclient.StatusError
	if errors.As(err, &se) {
		return fmt.Errorf("%s: %v", *hubURL, se)
	}
	return err
}

// streamURL builds the stream URL of a hub for channels.
func streamURL(hubURL string, channels []string) (string, error) {
	u, err := url.Parse(hubURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--url %q is not an http(s) URL", hubURL)
	}
	if !strings.HasSuffix(u.Path, "/sse") {
		u = u.JoinPath("sse")
	}
	q := u.Query()
	for _, c := range channels {
		q.Add("channel", c)
	}
	// The stream's position before its first event: subscribe resumes
	// from it when the stream drops before anything arrived.
	if !q.Has("position") {
		q.Set("position", "1")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
