package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ssehub/ssehub/auth"
	"github.com/ssehub/ssehub/sseclient"
)

// errDone stops a subscription that has printed the events it was asked for.
var errDone = errors.New("done")

func runSubscribe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("subscribe", "subscribe [flags]", stdout)
	fs.about = "Prints the events of a hub's stream as JSON lines, reconnecting and resuming " +
		"from the last event id when the stream drops."
	fs.examples = []string{
		"ssehub subscribe --channel news",
		"ssehub subscribe --url http://127.0.0.1:8080 --channel news --channel alerts --count 1",
		"ssehub subscribe --url 'http://127.0.0.1:8080/events?topic=news'",
	}
	var channels listFlag
	fs.Var(&channels, "channel", "`channel` to subscribe to; repeat for several (default sse)")
	var (
		lastID  = fs.String("last-event-id", "", "resume after this event `id`")
		hubURL  = fs.String("url", "http://127.0.0.1:8080", "`URL` of the hub, or of a stream itself (http://host/events?topic=news)")
		count   = fs.Int("count", 0, "exit after this many events; 0 runs until interrupted")
		quiet   = fs.Bool("quiet", false, "do not report connection problems on stderr")
		token   = fs.String("token", "", "bearer `token` for the hub (a JWT whose subscribe claim covers the channels)")
		tokFile = fs.String("token-file", "", "`file` holding the bearer token, which unlike --token other users cannot see in ps")
	)
	fs.env("url", "SSEHUB_URL")
	fs.oneOf("token", "token-file")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *tokFile != "" {
		tok, err := auth.ReadTokenFile(*tokFile)
		if err != nil {
			return fmt.Errorf("--token-file: %s", strings.TrimPrefix(err.Error(), "auth: "))
		}
		*token = tok
	}
	streamURL, err := streamURL(*hubURL, channels)
	if err != nil {
		return err
	}
	c := &sseclient.Client{URL: streamURL, LastEventID: *lastID, Header: bearerHeader(*token)}
	report := &connectionReporter{w: stderr, hubURL: *hubURL}
	if !*quiet {
		c.OnError = report.failed
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	n := 0
	err = c.Run(ctx, func(e sseclient.Event) error {
		report.last = ""
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
		msg := fmt.Sprintf("%s: %v", streamURL, se)
		switch {
		case httpsHint(*hubURL, se.Code, se.Message) != "":
			msg += "; " + httpsHint(*hubURL, se.Code, se.Message)
		case se.Code == http.StatusNotFound:
			msg += "; give the hub's base URL (http://127.0.0.1:8080) or its stream's URL"
		case se.Code == http.StatusUnauthorized && *token == "":
			msg += "; give a token with --token-file or --token"
		}
		return errors.New(msg)
	}
	return err
}

// connectionReporter reports subscribe's connection failures on stderr:
// the first with a hint when it knows one, and after that a failure only
// when it differs from the one before or an event came in between, so that
// a subscriber waiting for its hub does not fill the terminal.
type connectionReporter struct {
	w      io.Writer
	hubURL string
	last   string
}

func (r *connectionReporter) failed(err error) {
	msg := unwrapURLError(err).Error()
	if msg == r.last {
		return
	}
	r.last = msg
	if hint := reachHint(r.hubURL, err); hint != "" {
		msg += "; " + hint
	}
	fmt.Fprintf(r.w, "ssehub: subscribe: %s; retrying until interrupted\n", msg)
}

// streamURL builds the stream URL for channels from --url: a hub's base
// URL gets /sse, a stream's own URL is kept; the channels are added to its
// query.
func streamURL(hubURL string, channels []string) (string, error) {
	u, err := endpointURL(hubURL, "sse")
	if err != nil {
		return "", err
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
