package redisurl_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/redisurl"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// open opens rawURL and closes the client when the test ends.
func open(t *testing.T, rawURL string, opts ...redisurl.Option) redis.UniversalClient {
	t.Helper()
	c, err := redisurl.Open(rawURL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestOpenStandalone(t *testing.T) {
	srv := redistest.Shared(t)
	c := open(t, "redis://"+srv.Addr()+"/3?client_name=redisurl-test&dial_timeout=2s")
	client, ok := c.(*redis.Client)
	if !ok {
		t.Fatalf("Open returned a %T, want *redis.Client", c)
	}
	o := client.Options()
	if o.Addr != srv.Addr() || o.DB != 3 || o.ClientName != "redisurl-test" || o.DialTimeout != 2*time.Second {
		t.Errorf("options: addr %q, db %d, client name %q, dial timeout %v", o.Addr, o.DB, o.ClientName, o.DialTimeout)
	}
	if !o.ContextTimeoutEnabled {
		t.Error("ContextTimeoutEnabled is not set")
	}

	// The client talks to database 3 of the server.
	key := "redisurl:" + t.Name()
	if err := c.Set(t.Context(), key, "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	db3 := srv.Client(t, func(o *redis.Options) { o.DB = 3 })
	t.Cleanup(func() { db3.Del(context.Background(), key) })
	if got, err := db3.Get(t.Context(), key).Result(); err != nil || got != "v" {
		t.Errorf("GET %s in database 3: %q, %v", key, got, err)
	}
}

func TestOpenCredentials(t *testing.T) {
	srv := redistest.Start(t)
	if err := srv.Client(t).Do(t.Context(), "ACL", "SETUSER", "app", "on", ">p@ss/word", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	if err := open(t, "redis://app:wrong@"+srv.Addr()+"?max_retries=-1").Ping(t.Context()).Err(); err == nil {
		t.Error("PING with a wrong password succeeded")
	}
	c := open(t, "redis://app:p%40ss%2Fword@"+srv.Addr())
	if who, err := c.Do(t.Context(), "ACL", "WHOAMI").Text(); err != nil || who != "app" {
		t.Errorf("ACL WHOAMI: %q, %v", who, err)
	}
}

func TestOpenUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "redis.sock")
	redistest.Start(t, redistest.WithArgs("--unixsocket", sock, "--unixsocketperm", "700"))
	c := open(t, "unix://"+sock+"?db=2")
	if o := c.(*redis.Client).Options(); o.Network != "unix" || o.Addr != sock || o.DB != 2 {
		t.Errorf("options: network %q, addr %q, db %d", o.Network, o.Addr, o.DB)
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
}

// A context's deadline ends a call to a server that does not answer,
// well before the client's read timeout.
func TestContextDeadlineBoundsCalls(t *testing.T) {
	srv := redistest.Start(t)
	c := open(t, "redis://"+srv.Addr()+"?read_timeout=30s&max_retries=-1")
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Pause(t)
	defer srv.Resume(t)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx).Err()
	if err == nil {
		t.Fatal("PING to a paused server succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("PING with a 100ms deadline returned after %v: %v", d, err)
	}
}

// certs writes a CA and a server certificate for 127.0.0.1 and localhost
// signed by it to dir, and returns the paths and the CA's pool.
func certs(t *testing.T, dir string) (caFile, certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redisurl test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey := newKey()
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return writePEM("ca.pem", "CERTIFICATE", caDER),
		writePEM("server.pem", "CERTIFICATE", srvDER),
		writePEM("server.key", "PRIVATE KEY", keyDER),
		pool
}

// freePort returns a TCP port that is free on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestOpenTLS(t *testing.T) {
	caFile, certFile, keyFile, pool := certs(t, t.TempDir())
	// The plain port stays open for the harness, which checks that the
	// server is up; the clients below use the TLS port only.
	tlsPort := strconv.Itoa(freePort(t))
	srv := redistest.Start(t, redistest.WithArgs(
		"--tls-port", tlsPort,
		"--tls-cert-file", certFile,
		"--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile,
		"--tls-auth-clients", "no",
	))
	tlsAddr := net.JoinHostPort("127.0.0.1", tlsPort)
	trustCA := redisurl.WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})

	t.Run("trusted CA", func(t *testing.T) {
		for _, host := range []string{"127.0.0.1", "localhost"} {
			c := open(t, "rediss://"+net.JoinHostPort(host, tlsPort)+"/1", trustCA)
			if o := c.(*redis.Client).Options(); o.TLSConfig == nil || o.TLSConfig.RootCAs != pool || o.DB != 1 {
				t.Fatalf("options for %s: TLS config %+v, db %d", host, o.TLSConfig, o.DB)
			}
			if err := c.Ping(t.Context()).Err(); err != nil {
				t.Fatalf("PING over TLS to %s: %v", host, err)
			}
			// The client speaks TLS: the server reports the connection on
			// its TLS port.
			info, err := c.ClientInfo(t.Context()).Result()
			if err != nil {
				t.Fatal(err)
			}
			if info.LAddr != net.JoinHostPort("127.0.0.1", tlsPort) {
				t.Errorf("connection on %s, want the TLS port %s", info.LAddr, tlsPort)
			}
		}
	})
	t.Run("unknown CA", func(t *testing.T) {
		err := open(t, "rediss://"+tlsAddr+"?max_retries=-1").Ping(t.Context()).Err()
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("PING to a server signed by an unknown CA: %v, want an unknown authority error", err)
		}
	})
	t.Run("skip_verify", func(t *testing.T) {
		c := open(t, "rediss://"+tlsAddr+"?skip_verify=true", trustCA)
		if !c.(*redis.Client).Options().TLSConfig.InsecureSkipVerify {
			t.Error("skip_verify=true did not turn verification off")
		}
		if err := c.Ping(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("plain client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		if err := open(t, "redis://"+tlsAddr+"?max_retries=-1", trustCA).Ping(ctx).Err(); err == nil {
			t.Error("a plain redis:// client talked to the TLS port")
		}
		// WithTLSConfig does not turn TLS on for a plain URL.
		if err := open(t, srv.URL(), trustCA).Ping(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOpenCluster(t *testing.T) {
	pool := x509.NewCertPool()
	for _, tt := range []struct {
		url                string
		opts               []redisurl.Option
		addrs              []string
		username, password string
		tls                bool
	}{
		{url: "redis+cluster://node1:7000", addrs: []string{"node1:7000"}},
		{url: "redis+cluster://node1,node2:7001,[::1]:7002", addrs: []string{"node1:6379", "node2:7001", "[::1]:7002"}},
		{url: "redis+cluster://node1:7000/?addr=node2:7001", addrs: []string{"node1:7000", "node2:7001"}},
		{url: "REDIS+CLUSTER://al:se%2Fcret@node1:7000,node2:7001?addr=node3:7002",
			addrs: []string{"node1:7000", "node2:7001", "node3:7002"}, username: "al", password: "se/cret"},
		{url: "rediss+cluster://:pw@node1.example.com:7000,node2.example.com:7000",
			addrs: []string{"node1.example.com:7000", "node2.example.com:7000"}, password: "pw", tls: true},
		{url: "rediss+cluster://node1:7000", opts: []redisurl.Option{redisurl.WithTLSConfig(&tls.Config{RootCAs: pool})},
			addrs: []string{"node1:7000"}, tls: true},
	} {
		t.Run(tt.url, func(t *testing.T) {
			c := open(t, tt.url, tt.opts...)
			cc, ok := c.(*redis.ClusterClient)
			if !ok {
				t.Fatalf("Open returned a %T, want *redis.ClusterClient", c)
			}
			o := cc.Options()
			if !slices.Equal(o.Addrs, tt.addrs) {
				t.Errorf("addresses %q, want %q", o.Addrs, tt.addrs)
			}
			if o.Username != tt.username || o.Password != tt.password {
				t.Errorf("credentials %q:%q, want %q:%q", o.Username, o.Password, tt.username, tt.password)
			}
			if (o.TLSConfig != nil) != tt.tls {
				t.Errorf("TLS config %+v, want TLS %v", o.TLSConfig, tt.tls)
			}
			if tt.opts != nil && o.TLSConfig.RootCAs != pool {
				t.Error("the configured TLS settings were not used")
			}
			if !o.ContextTimeoutEnabled {
				t.Error("ContextTimeoutEnabled is not set")
			}
		})
	}
	o, err := redisurl.Parse("redis+cluster://node1?dial_timeout=3&read_only=true")
	if err != nil {
		t.Fatal(err)
	}
	if co := o.(*redis.ClusterOptions); co.DialTimeout != 3*time.Second || !co.ReadOnly {
		t.Errorf("query parameters not applied: dial timeout %v, read only %v", co.DialTimeout, co.ReadOnly)
	}
}

func TestOpenSentinel(t *testing.T) {
	pool := x509.NewCertPool()
	for _, tt := range []struct {
		url                                string
		opts                               []redisurl.Option
		addrs                              []string
		master                             string
		db                                 int
		username, password                 string
		sentinelUsername, sentinelPassword string
		tls                                bool
	}{
		{url: "redis+sentinel://s1/mymaster", addrs: []string{"s1:26379"}, master: "mymaster"},
		{url: "redis+sentinel://s1:5000,s2,[::1]/mymaster/3", addrs: []string{"s1:5000", "s2:26379", "[::1]:26379"}, master: "mymaster", db: 3},
		{url: "redis+sentinel://s1/my%2Fmaster/?addr=s2:26380", addrs: []string{"s1:26379", "s2:26380"}, master: "my/master"},
		{url: "redis+sentinel://app:p%40ss@s1,s2/mymaster/1?sentinel_username=sen&sentinel_password=tinel",
			addrs: []string{"s1:26379", "s2:26379"}, master: "mymaster", db: 1,
			username: "app", password: "p@ss", sentinelUsername: "sen", sentinelPassword: "tinel"},
		{url: "rediss+sentinel://:pw@s1.example.com/mymaster", addrs: []string{"s1.example.com:26379"}, master: "mymaster", password: "pw", tls: true},
		{url: "rediss+sentinel://s1/mymaster", opts: []redisurl.Option{redisurl.WithTLSConfig(&tls.Config{RootCAs: pool})},
			addrs: []string{"s1:26379"}, master: "mymaster", tls: true},
	} {
		t.Run(tt.url, func(t *testing.T) {
			c := open(t, tt.url, tt.opts...)
			if _, ok := c.(*redis.Client); !ok {
				t.Fatalf("Open returned a %T, want *redis.Client", c)
			}
			parsed, err := redisurl.Parse(tt.url, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			o := parsed.(*redis.FailoverOptions)
			if !slices.Equal(o.SentinelAddrs, tt.addrs) {
				t.Errorf("Sentinel addresses %q, want %q", o.SentinelAddrs, tt.addrs)
			}
			if o.MasterName != tt.master || o.DB != tt.db {
				t.Errorf("master %q, db %d; want %q, %d", o.MasterName, o.DB, tt.master, tt.db)
			}
			if o.Username != tt.username || o.Password != tt.password {
				t.Errorf("master credentials %q:%q, want %q:%q", o.Username, o.Password, tt.username, tt.password)
			}
			if o.SentinelUsername != tt.sentinelUsername || o.SentinelPassword != tt.sentinelPassword {
				t.Errorf("Sentinel credentials %q:%q, want %q:%q",
					o.SentinelUsername, o.SentinelPassword, tt.sentinelUsername, tt.sentinelPassword)
			}
			if (o.TLSConfig != nil) != tt.tls {
				t.Errorf("TLS config %+v, want TLS %v", o.TLSConfig, tt.tls)
			}
			if tt.opts != nil && o.TLSConfig.RootCAs != pool {
				t.Error("the configured TLS settings were not used")
			}
			if !o.ContextTimeoutEnabled {
				t.Error("ContextTimeoutEnabled is not set")
			}
			// The master's client carries the master's credentials and db.
			co := c.(*redis.Client).Options()
			if co.Username != tt.username || co.Password != tt.password || co.DB != tt.db || !co.ContextTimeoutEnabled {
				t.Errorf("client options: credentials %q:%q, db %d, context timeouts %v",
					co.Username, co.Password, co.DB, co.ContextTimeoutEnabled)
			}
		})
	}
}

func TestContextTimeoutAlwaysEnabled(t *testing.T) {
	o, err := redisurl.Parse("redis+sentinel://s1/mymaster?context_timeout_enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	if !o.(*redis.FailoverOptions).ContextTimeoutEnabled {
		t.Error("context_timeout_enabled=false turned context timeouts off")
	}
}

func TestOpenInvalid(t *testing.T) {
	for _, tt := range []struct{ url, msg string }{
		{"", "empty"},
		{"localhost:6379", "no scheme"},
		{"http://localhost", `unknown scheme "http"`},
		{"redis://h1:6379,h2:6379", "names one host"},
		{"redis://localhost/x", `invalid database number: "x"`},
		{"redis://localhost/-1", "negative database number"},
		{"redis://localhost/0/1", "invalid URL path"},
		{"redis://localhost?unknown=1", "unexpected option: unknown"},
		{"redis://localhost?dial_timeout=soon", "invalid dial_timeout duration"},
		{"redis://localhost?pool_size=-1", "pool_size -1 out of range"},
		{"redis://localhost?pool_size=99999999999", "pool_size 99999999999 out of range"},
		{"redis://u:hunter2@localhost:port", `invalid port ":port"`},
		{"unix://", "empty unix socket path"},
		{"redis+cluster://", "no host"},
		{"redis+cluster://u:hunter2@", "no host"},
		{"redis+cluster://n1,,n2", `malformed host list "n1,,n2": empty host`},
		{"redis+cluster://n1,:7000", `no host name in ":7000"`},
		{"redis+cluster://n1:x", "malformed host list"},
		{"redis+cluster://n1:70000", `invalid port in "n1:70000"`},
		{"redis+cluster://n1/2", "a cluster URL has no path"},
		{"redis+cluster://n1?addr=n2", "unable to parse addr param: n2"},
		{"redis+cluster://n1?db=2", "unexpected option: db"},
		{"redis+sentinel://s1", "no master name"},
		{"redis+sentinel://s1/", "no master name"},
		{"redis+sentinel://s1?master_name=m", "no master name"},
		{"redis+sentinel://s1/m/1/2", "more than a master name"},
		{"redis+sentinel://s1/m/x", `invalid database number: "x"`},
		{"redis+sentinel://s1/m/-2", "negative database number"},
		{"redis+sentinel://s1/m?master_name=n", "parameter master_name is not accepted"},
		{"redis+sentinel://s1/m?password=hunter2", "parameter password is not accepted"},
		{"redis+sentinel://s1/m?route_by_latency=true", "locks are taken on the master"},
		{"redis+sentinel://s1/m?route_randomly=1", "locks are taken on the master"},
		{"redis+sentinel://s1/m?replica_only=true", "locks are taken on the master"},
		{"redis+sentinel://s1/m?max_active_conns=-4", "max_active_conns -4 out of range"},
		{"rediss+sentinel://u:hunter2@s1,s2/m?bogus=1", "unexpected option: bogus"},
	} {
		t.Run(tt.url, func(t *testing.T) {
			c, err := redisurl.Open(tt.url)
			if err == nil {
				c.Close()
				t.Fatal("accepted")
			}
			if c != nil {
				t.Errorf("a client came with the error %v", err)
			}
			if !errors.Is(err, redisurl.ErrInvalidURL) {
				t.Errorf("error %v does not wrap ErrInvalidURL", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "redisurl: invalid URL: ") || strings.Count(msg, "redisurl") != 1 || strings.Contains(msg, "redis: ") {
				t.Errorf("error %q does not say what happened once", msg)
			}
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q does not say %q", msg, tt.msg)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q shows the password", msg)
			}
		})
	}
}
