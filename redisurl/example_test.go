package redisurl_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/redisurl"
)

func ExampleOpen() {
	client, err := redisurl.Open("redis://localhost:6379/2?dial_timeout=3s")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	o := client.(*redis.Client).Options()
	fmt.Println(o.Addr, "db", o.DB, "dial timeout", o.DialTimeout, "context timeouts", o.ContextTimeoutEnabled)
	// Output: localhost:6379 db 2 dial timeout 3s context timeouts true
}

func ExampleOpen_cluster() {
	client, err := redisurl.Open("redis+cluster://node1:7000,node2:7001,node3")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	fmt.Printf("%T %q\n", client, client.(*redis.ClusterClient).Options().Addrs)
	// Output: *redis.ClusterClient ["node1:7000" "node2:7001" "node3:6379"]
}

func ExampleOpen_sentinel() {
	// Three Sentinels on the default port 26379, watching the master
	// "mymaster"; database 1, with the master's password.
	client, err := redisurl.Open("redis+sentinel://:secret@sentinel1,sentinel2,sentinel3/mymaster/1")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	fmt.Printf("%T db %d\n", client, client.(*redis.Client).Options().DB)
	// Output: *redis.Client db 1
}

func ExampleOpen_invalid() {
	_, err := redisurl.Open("redis+sentinel://sentinel1:26379,sentinel2:26379")
	fmt.Println(err)
	fmt.Println(errors.Is(err, redisurl.ErrInvalidURL))
	// Output:
	// redisurl: invalid URL: no master name: a sentinel URL ends in /<master name>[/<db>]
	// true
}

func ExampleWithTLSConfig() {
	// Trust the CA that signed the server's certificate; add its PEM
	// certificate with pool.AppendCertsFromPEM.
	pool := x509.NewCertPool()
	client, err := redisurl.Open("rediss://redis.example.com:6380/0",
		redisurl.WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	fmt.Println(client.(*redis.Client).Options().TLSConfig.RootCAs == pool)
	// Output: true
}
