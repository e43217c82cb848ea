package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
)

// redisClusterScheme starts a URL naming the nodes of a Redis Cluster.
const redisClusterScheme = "redis-cluster://"

// isRedisClusterURL reports whether raw names a Redis Cluster:
// redis-cluster://[user:password@]HOST:PORT[,HOST:PORT...][?options].
func isRedisClusterURL(raw string) bool { return strings.HasPrefix(raw, redisClusterScheme) }

// parseRedisClusterURL reads a redis-cluster:// URL into client options,
// and returns the URL with its password redacted, for messages. The query
// takes go-redis cluster options, as ?dial_timeout=3s&pool_size=20.
func parseRedisClusterURL(raw string) (*redis.ClusterOptions, string, error) {
	rest := strings.TrimPrefix(raw, redisClusterScheme)
	userinfo, hosts := "", rest
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		userinfo, hosts = rest[:i], rest[i+1:]
	}
	query := ""
	if i := strings.IndexAny(hosts, "/?"); i >= 0 {
		hosts, query = hosts[:i], hosts[i:]
	}
	shown := redisClusterScheme
	if userinfo != "" {
		user, _, _ := strings.Cut(userinfo, ":")
		shown += user + ":xxxxx@"
		if !strings.Contains(userinfo, ":") {
			shown = redisClusterScheme + userinfo + "@"
		}
	}
	shown += hosts + query
	bad := func(why string) error {
		return fmt.Errorf("broker URL %q: %s; want redis-cluster://[user:password@]HOST:PORT[,HOST:PORT...]", shown, why)
	}
	path, q, _ := strings.Cut(query, "?")
	if path != "" && path != "/" {
		return nil, "", bad("a cluster has no database number")
	}
	addrs := strings.Split(hosts, ",")
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, "", bad(fmt.Sprintf("%q is not HOST:PORT", a))
		}
	}
	// go-redis reads the rest: redis://userinfo@first?addr=second&...
	u := url.URL{Scheme: "redis", Host: addrs[0], RawQuery: q}
	if userinfo != "" {
		user, pass, hasPass := strings.Cut(userinfo, ":")
		user, err1 := url.PathUnescape(user)
		pass, err2 := url.PathUnescape(pass)
		if err1 != nil || err2 != nil {
			return nil, "", bad("the user or password is not URL-encoded")
		}
		if hasPass {
			u.User = url.UserPassword(user, pass)
		} else {
			u.User = url.User(user)
		}
	}
	values := u.Query()
	for _, a := range addrs[1:] {
		values.Add("addr", a)
	}
	u.RawQuery = values.Encode()
	opts, err := redis.ParseClusterURL(u.String())
	if err != nil {
		msg := err.Error()
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
		return nil, "", bad(msg)
	}
	return opts, shown, nil
}

// openRedisClusterBroker opens a Redis broker on a Redis Cluster with a
// client of its own: each channel on the shard that owns its hash slot,
// with sharded pub/sub.
func openRedisClusterBroker(raw string, opt brokerOptions) (ssehub.Broker, func(context.Context) error, error) {
	co, _, err := parseRedisClusterURL(raw)
	if err != nil {
		return nil, nil, err
	}
	redis.SetLogger(redisLogger{opt.logger})
	co.ContextTimeoutEnabled = true
	if !strings.Contains(raw, "dialer_retries=") {
		// A master that died refuses connections until its replica takes
		// over: each command tries it once, so that a publish answers 503
		// at once, and the next one, after the client reloads the slots,
		// reaches the new master. go-redis would dial it 5 times.
		co.DialerRetries = 1
	}
	client := redis.NewClusterClient(co)
	return newRedisBroker(client, opt)
}
