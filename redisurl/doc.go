// Package redisurl builds a go-redis client from a URL, so that one
// setting (an environment variable such as REDIS_URL, a flag, a config
// entry) can name a standalone server, a Redis Cluster or a
// Sentinel-managed master:
//
//	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
//	if err != nil {
//		return err
//	}
//	defer client.Close()
//	m, err := mutex.New(client, mutex.Config{Prefix: "jobs"})
//
// # URL forms
//
// A standalone server, with go-redis's [redis.ParseURL]; the path is the
// database number (0 by default), the port defaults to 6379:
//
//	redis://localhost:6379/0
//	redis://user:secret@redis.internal:6379/2?dial_timeout=3s&pool_size=20
//
// The same over TLS (see [WithTLSConfig] to trust a private CA):
//
//	rediss://user:secret@redis.example.com:6380/0
//
// A server on a Unix socket; the database goes in a db parameter:
//
//	unix:///run/redis/redis.sock?db=1
//
// A Redis Cluster, with [redis.ParseClusterURL]: a comma-separated list of
// seed nodes (more can be given as addr parameters), no path, since a
// cluster has only database 0; the port defaults to 6379:
//
//	redis+cluster://node1:7000,node2:7001,node3:7002
//	rediss+cluster://user:secret@node1.example.com:7000?addr=node2.example.com:7000
//
// A master monitored by Redis Sentinel, with [redis.ParseFailoverURL]: a
// comma-separated list of Sentinels (their port defaults to 26379), then
// the master's name and optionally a database number in the path. The user
// info holds the master's credentials, as in a redis:// URL; the
// Sentinels' own credentials, if they need any, go in the
// sentinel_username and sentinel_password parameters:
//
//	redis+sentinel://sentinel1:26379,sentinel2:26379,sentinel3:26379/mymaster
//	rediss+sentinel://:secret@sentinel1,sentinel2/mymaster/3?sentinel_password=s3cret
//
// Query parameters set client options as documented by the go-redis parser
// of each form (dial_timeout, read_timeout, pool_size, max_retries,
// client_name, protocol, skip_verify...); an unknown parameter is an error.
// Passwords and other reserved characters must be percent-encoded.
//
// # Context deadlines
//
// Every client has ContextTimeoutEnabled set, whatever the URL says. A
// context's deadline or cancellation then ends a Redis call, instead of the
// call running until the client's own read and write timeouts: a lock
// acquired with a deadline gives up when the deadline passes, and a lease
// that must be extended or released before it expires is not held up by a
// slow connection.
//
// # Errors
//
// Open checks the whole URL before building a client and never dials:
// an empty URL, an unknown scheme, a malformed host list, a Sentinel URL
// without a master name, an unknown or invalid parameter all return an
// error wrapping [ErrInvalidURL]. Error messages never repeat the URL,
// which may hold a password.
package redisurl
