package redisurl

// Parse returns the options Open would build its client from:
// *redis.Options, *redis.ClusterOptions or *redis.FailoverOptions.
func Parse(rawURL string, opts ...Option) (any, error) {
	var cfg config
	for _, o := range opts {
		o.apply(&cfg)
	}
	return parse(rawURL, &cfg)
}
