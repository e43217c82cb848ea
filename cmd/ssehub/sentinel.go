package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
)

// sentinelScheme starts a broker URL that names Redis Sentinel.
const sentinelScheme = "redis-sentinel://"

// sentinelURLForm is the form of a Sentinel broker URL, for messages.
const sentinelURLForm = "redis-sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[?db=N&password=...&sentinel_password=...]"

// isSentinelURL reports whether raw names Redis Sentinel.
func isSentinelURL(raw string) bool { return strings.HasPrefix(raw, sentinelScheme) }

// sentinelURL is a parsed redis-sentinel:// URL.
type sentinelURL struct {
	opt   redis.FailoverOptions
	shown string // the URL with its passwords replaced, for messages
}

// parseSentinelURL reads
// redis-sentinel://[user:password@]HOST:PORT[,HOST:PORT...]/MASTER_NAME
// with optional query parameters db (the database number), password
// (Redis's, instead of the one in the user part), sentinel_username and
// sentinel_password (what the sentinels ask for), and dial_timeout,
// read_timeout, write_timeout. The user and password authenticate with
// the master; the sentinels are asked without them unless
// sentinel_password is given.
func parseSentinelURL(raw string) (*sentinelURL, error) {
	rest := strings.TrimPrefix(raw, sentinelScheme)
	var query string
	rest, query, _ = strings.Cut(rest, "?")
	hosts, name, _ := strings.Cut(rest, "/")
	var userinfo string
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		userinfo, hosts = hosts[:i], hosts[i+1:]
	}
	s := &sentinelURL{}
	o := &s.opt
	if userinfo != "" {
		user, pass, _ := strings.Cut(userinfo, ":")
		var err1, err2 error
		o.Username, err1 = url.PathUnescape(user)
		o.Password, err2 = url.PathUnescape(pass)
		if err1 != nil || err2 != nil {
			return nil, errors.New("broker URL: the user part of the Sentinel URL is not valid; want " + sentinelURLForm)
		}
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, errors.New("broker URL: the query of the Sentinel URL is not valid")
	}
	// The URL as shown in messages: passwords replaced.
	shownUser := ""
	if o.Username != "" || o.Password != "" {
		shownUser = url.PathEscape(o.Username)
		if o.Password != "" {
			shownUser += ":xxxxx"
		}
		shownUser += "@"
	}
	shownQuery := url.Values{}
	for k, v := range q {
		if strings.HasSuffix(k, "password") {
			v = []string{"xxxxx"}
		}
		shownQuery[k] = v
	}
	s.shown = sentinelScheme + shownUser + hosts + "/" + name
	if len(shownQuery) > 0 {
		s.shown += "?" + shownQuery.Encode()
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("broker URL %q: %s; want %s", s.shown, fmt.Sprintf(format, args...), sentinelURLForm)
	}

	if hosts == "" {
		return nil, bad("no sentinel HOST:PORT")
	}
	for h := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return nil, bad("sentinel %q is not HOST:PORT", h)
		}
		o.SentinelAddrs = append(o.SentinelAddrs, h)
	}
	if o.MasterName, err = url.PathUnescape(name); err != nil || o.MasterName == "" || strings.Contains(o.MasterName, "/") {
		return nil, bad("no master name")
	}
	for k, v := range q {
		val := v[len(v)-1]
		switch k {
		case "db":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return nil, bad("invalid database %q", val)
			}
			o.DB = n
		case "password":
			o.Password = val
		case "sentinel_username":
			o.SentinelUsername = val
		case "sentinel_password":
			o.SentinelPassword = val
		case "dial_timeout", "read_timeout", "write_timeout":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return nil, bad("%s %q is not a duration such as 3s", k, val)
			}
			switch k {
			case "dial_timeout":
				o.DialTimeout = d
			case "read_timeout":
				o.ReadTimeout = d
			default:
				o.WriteTimeout = d
			}
		default:
			return nil, bad("unknown parameter %q (use db, password, sentinel_username, sentinel_password, dial_timeout, read_timeout or write_timeout)", k)
		}
	}
	return s, nil
}

// openSentinelBroker opens a Redis broker on the master that Sentinel
// names, with go-redis's failover client: it asks the sentinels for the
// master, and follows a failover to the replica they promote.
func openSentinelBroker(raw string, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	s, err := parseSentinelURL(raw)
	if err != nil {
		return nil, nil, err
	}
	redis.SetLogger(redisLogger{opt.logger})
	fo := s.opt
	fo.ContextTimeoutEnabled = true
	// One dial per attempt: go-redis otherwise dials five times at each
	// level, the master through each sentinel, which keeps a publish
	// waiting out its whole timeout while no master can be found, where
	// it should fail at once as not published. The broker and the
	// hub's clients retry by themselves.
	fo.DialerRetries = 1
	client := redis.NewFailoverClient(&fo)
	return newRedisBroker(client, opt)
}
