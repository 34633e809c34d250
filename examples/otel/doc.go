// Command otel shows the traces and metrics that otellock records: a lock
// taken and released inside a request span, a contended TryLock, a Lock
// given up by its context, and a lease lost because the work outlived it.
//
// It connects to REDIS_URL when set (any form that redisurl.Open accepts,
// such as redis://localhost:6379/0 or
// redis+sentinel://sentinel1,sentinel2/mymaster) and otherwise to an
// embedded in-memory Redis. Spans and metrics are printed to stdout:
//
//	go run ./examples/otel
//
// When OTEL_EXPORTER_OTLP_ENDPOINT is set, they are sent with OTLP over HTTP
// to that collector instead, configured by the standard OTEL_EXPORTER_OTLP_*
// variables:
//
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 go run ./examples/otel
package main
