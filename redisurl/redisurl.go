package redisurl

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrInvalidURL is returned, wrapped, by Open for a URL it cannot use.
var ErrInvalidURL = errors.New("redisurl: invalid URL")

// Default ports of the hosts in a Cluster or Sentinel host list.
const (
	defaultPort         = "6379"
	defaultSentinelPort = "26379"
)

// Option configures Open.
type Option interface{ apply(*config) }

type config struct {
	tls *tls.Config
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTLSConfig sets the TLS configuration of rediss, rediss+cluster and
// rediss+sentinel URLs, for example to trust a private CA (RootCAs) or to
// present a client certificate (Certificates). Open uses a clone of cfg.
// When cfg.ServerName is empty, each address dialled is verified against
// its own host name. skip_verify=true in the URL still turns verification
// off. The option is ignored for URLs without TLS, so one configuration
// serves both a plain URL in development and a TLS URL in production.
//
// Without this option, clients trust the system's CAs and, as go-redis
// sets it, verify every server against the host name of the URL's first
// host, including the other nodes of a cluster and the master found
// through Sentinel.
func WithTLSConfig(cfg *tls.Config) Option {
	return optionFunc(func(c *config) { c.tls = cfg })
}

// Open returns a client for the Redis deployment described by rawURL: a
// *redis.Client for a standalone server or a Sentinel-managed master, or a
// *redis.ClusterClient for a Redis Cluster. The package documentation lists
// the accepted forms. The client has ContextTimeoutEnabled set, so that a
// context's deadline bounds every Redis call.
//
// Open makes no network call: a server that is down shows in the client's
// first command, not here. A URL that cannot be used returns an error
// wrapping [ErrInvalidURL], and no client.
func Open(rawURL string, opts ...Option) (redis.UniversalClient, error) {
	var cfg config
	for _, o := range opts {
		o.apply(&cfg)
	}
	parsed, err := parse(rawURL, &cfg)
	if err != nil {
		return nil, err
	}
	switch o := parsed.(type) {
	case *redis.ClusterOptions:
		return redis.NewClusterClient(o), nil
	case *redis.FailoverOptions:
		return redis.NewFailoverClient(o), nil
	default:
		return redis.NewClient(o.(*redis.Options)), nil
	}
}

// parse returns the options of the client for rawURL: *redis.Options,
// *redis.ClusterOptions or *redis.FailoverOptions.
func parse(rawURL string, cfg *config) (any, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, invalid("empty")
	}
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, invalid("no scheme: it must start with redis://, rediss://, unix://, redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://")
	}
	var (
		o   any
		err error
	)
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "unix":
		o, err = standalone(rawURL, cfg)
	case "redis+cluster", "rediss+cluster":
		o, err = cluster(rawURL, cfg)
	case "redis+sentinel", "rediss+sentinel":
		o, err = sentinel(rawURL, cfg)
	default:
		err = invalid("unknown scheme %q", scheme)
	}
	if err != nil {
		return nil, err
	}
	return o, nil
}

func standalone(rawURL string, cfg *config) (*redis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, urlError(err)
	}
	if u.Scheme != "unix" && strings.Contains(u.Host, ",") {
		return nil, invalid("a %s URL names one host; use %s+cluster or %s+sentinel for several", u.Scheme, u.Scheme, u.Scheme)
	}
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, redisError(err)
	}
	if err := checkInts(o.DB, o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
		return nil, err
	}
	o.TLSConfig = tlsConfig(o.TLSConfig, cfg)
	o.ContextTimeoutEnabled = true
	return o, nil
}

func cluster(rawURL string, cfg *config) (*redis.ClusterOptions, error) {
	u, hosts, err := splitHosts(rawURL, defaultPort)
	if err != nil {
		return nil, err
	}
	if u.Path != "" && u.Path != "/" {
		return nil, invalid("a cluster URL has no path: Redis Cluster has only database 0")
	}
	o, err := redis.ParseClusterURL(rewrite(u, hosts, "/", nil).String())
	if err != nil {
		return nil, redisError(err)
	}
	if err := checkInts(0, o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
		return nil, err
	}
	o.TLSConfig = tlsConfig(o.TLSConfig, cfg)
	o.ContextTimeoutEnabled = true
	return o, nil
}

func sentinel(rawURL string, cfg *config) (*redis.FailoverOptions, error) {
	u, hosts, err := splitHosts(rawURL, defaultSentinelPort)
	if err != nil {
		return nil, err
	}
	var segments []string
	for _, s := range strings.Split(strings.Trim(u.EscapedPath(), "/"), "/") {
		seg, err := url.PathUnescape(s)
		if err != nil {
			return nil, urlError(err)
		}
		segments = append(segments, seg)
	}
	master, db := segments[0], "0"
	switch {
	case master == "":
		return nil, invalid("no master name: a sentinel URL ends in /<master name>[/<db>]")
	case len(segments) == 2:
		db = segments[1]
	case len(segments) > 2:
		return nil, invalid("path has more than a master name and a database number")
	}
	q := u.Query()
	for _, name := range []string{"master_name", "username", "password"} {
		if q.Has(name) {
			return nil, invalid("parameter %s is not accepted: the master name goes in the path, the master's credentials in the user info", name)
		}
	}
	sentinelUser, sentinelPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	q.Set("master_name", master)
	o, err := redis.ParseFailoverURL(rewrite(u, hosts, "/"+db, q).String())
	if err != nil {
		return nil, redisError(err)
	}
	if err := checkInts(o.DB, o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
		return nil, err
	}
	switch {
	case o.RouteByLatency, o.RouteRandomly, o.ReplicaOnly:
		return nil, invalid("route_by_latency, route_randomly and replica_only are not accepted: locks are taken on the master")
	}
	// ParseFailoverURL reads the user info as the Sentinels' credentials;
	// here it is the master's, as in a redis:// URL.
	o.Username, o.Password = "", ""
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	o.SentinelUsername, o.SentinelPassword = sentinelUser, sentinelPass
	o.TLSConfig = tlsConfig(o.TLSConfig, cfg)
	o.ContextTimeoutEnabled = true
	return o, nil
}

// splitHosts parses a URL whose host part may be a comma-separated list of
// host[:port], which net/url does not accept. It returns the URL without its
// host and the list, each host with a port (defPort when none is given).
func splitHosts(rawURL, defPort string) (*url.URL, []string, error) {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, list := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, list = authority[:i+1], authority[i+1:]
	}
	u, err := url.Parse(scheme + "://" + userinfo + tail)
	if err != nil {
		return nil, nil, urlError(err)
	}
	if list == "" {
		return nil, nil, invalid("no host")
	}
	var hosts []string
	for _, h := range strings.Split(list, ",") {
		if h == "" {
			return nil, nil, invalid("malformed host list %q: empty host", list)
		}
		hu, err := url.Parse("//" + h)
		if err != nil {
			return nil, nil, invalid("malformed host list %q: %v", list, errors.Unwrap(err))
		}
		host, port := hu.Hostname(), hu.Port()
		if host == "" {
			return nil, nil, invalid("malformed host list %q: no host name in %q", list, h)
		}
		if port == "" {
			port = defPort
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, nil, invalid("malformed host list %q: invalid port in %q", list, h)
		}
		hosts = append(hosts, net.JoinHostPort(host, port))
	}
	return u, hosts, nil
}

// rewrite returns the go-redis form of a cluster or sentinel URL: scheme
// redis or rediss, the first host as the URL's host and the others as addr
// parameters. q, if not nil, replaces u's query.
func rewrite(u *url.URL, hosts []string, path string, q url.Values) *url.URL {
	if q == nil {
		q = u.Query()
	}
	q["addr"] = slices.Concat(hosts[1:], q["addr"])
	scheme, _, _ := strings.Cut(strings.ToLower(u.Scheme), "+")
	return &url.URL{Scheme: scheme, User: u.User, Host: hosts[0], Path: path, RawQuery: q.Encode()}
}

// tlsConfig returns the TLS configuration of a client: none without TLS,
// else a clone of the configured one, or parsed (from the URL) when none is
// configured.
func tlsConfig(parsed *tls.Config, cfg *config) *tls.Config {
	if parsed == nil || cfg.tls == nil {
		return parsed
	}
	c := cfg.tls.Clone()
	if parsed.InsecureSkipVerify {
		c.InsecureSkipVerify = true
	}
	return c
}

// checkInts refuses a negative database number, and pool sizes that
// go-redis would panic on when it builds the client.
func checkInts(db, poolSize, minIdle, maxIdle, maxActive, pipelinePoolSize int) error {
	if db < 0 {
		return invalid("negative database number %d", db)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"pool_size", poolSize}, {"min_idle_conns", minIdle}, {"max_idle_conns", maxIdle}, {"max_active_conns", maxActive}} {
		if f.v < 0 || f.v > math.MaxInt32 {
			return invalid("%s %d out of range [0, %d]", f.name, f.v, math.MaxInt32)
		}
	}
	if pipelinePoolSize > math.MaxInt32 {
		return invalid("pipeline_pool_size %d out of range", pipelinePoolSize)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidURL}, args...)...)
}

// urlError reports a net/url error without the URL, which may hold a
// password.
func urlError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return invalid("%v", err)
}

// redisError reports an error of go-redis's parsers, which carries its own
// package prefix.
func redisError(err error) error {
	return invalid("%s", strings.TrimPrefix(err.Error(), "redis: "))
}
