package httpmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/distlock/distlock/httpmw"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
	"github.com/distlock/distlock/redisurl"
)

// post sends an empty POST and prints the status and body.
func post(url string) {
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%s: %s", resp.Status, body)
}

func ExampleSerialize() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-httpmw"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	deposit := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only one deposit per account runs at a time, across all replicas.
		lease := httpmw.LeaseFrom(r.Context())
		fmt.Fprintf(w, "deposit to %s under %v\n", r.PathValue("id"), lease.Keys())
	})
	serialize := httpmw.Serialize(m, httpmw.Namespace("account", httpmw.PathValue("id")),
		httpmw.WithWait(2*time.Second))
	mux := http.NewServeMux()
	mux.Handle("POST /accounts/{id}/deposit", serialize(deposit))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post(srv.URL + "/accounts/42/deposit")
	// Output: 200 OK: deposit to 42 under [account:42]
}

func ExampleSerialize_busy() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-httpmw"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// Another replica holds the order.
	ctx := context.Background()
	lease, err := m.TryLock(ctx, "order:7")
	if err != nil {
		panic(err)
	}
	defer lease.Unlock(ctx)

	mux := http.NewServeMux()
	mux.Handle("POST /orders/{id}/ship", httpmw.Serialize(m, httpmw.Namespace("order", httpmw.PathValue("id")))(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "shipped") })))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post(srv.URL + "/orders/7/ship")
	post(srv.URL + "/orders/8/ship")
	post(srv.URL + "/orders/%00/ship")
	// Output:
	// 409 Conflict: resource busy
	// 200 OK: shipped
	// 400 Bad Request: invalid lock key
}

// Serialize works with chi routers as it is.
func ExampleSerialize_chi() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-httpmw"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	r := chi.NewRouter()
	r.Route("/documents/{id}", func(r chi.Router) {
		r.Use(httpmw.Serialize(m, httpmw.Namespace("doc", httpmw.PathValue("id")),
			httpmw.WithSkipMethods(http.MethodGet)))
		r.Get("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "read without a lock:", httpmw.LeaseFrom(r.Context()) == nil)
		})
		r.Post("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "edit under", httpmw.LeaseFrom(r.Context()).Keys())
		})
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/documents/readme/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s: %s", resp.Status, body)
	post(srv.URL + "/documents/readme/")
	// Output:
	// 200 OK: read without a lock: true
	// 200 OK: edit under [doc:readme]
}

func ExampleNamespace() {
	key := httpmw.Namespace("invoice", httpmw.Header("X-Invoice"))
	r := httptest.NewRequest("POST", "/pay", nil)
	r.Header.Set("X-Invoice", "2024-17")
	fmt.Println(key(r))
	// Output: invoice:2024-17 <nil>
}

func ExampleKeyedPathValue() {
	client, err := redisurl.Open(os.Getenv("REDIS_URL"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	m, err := mutex.New(client, mutex.Config{Prefix: "example-httpmw-keyed"})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	// Accounts are numbers: "042" and "42" are the same account, and so the
	// same lock, the one accounts.Lock(ctx, 42) takes.
	accounts := keyed.New[int64](m, "account")
	parse := func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }
	deposit := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "deposit under %v\n", httpmw.LeaseFrom(r.Context()).Keys())
	})
	serialize := httpmw.Serialize(m, httpmw.KeyedPathValue(accounts, "id", parse))
	mux := http.NewServeMux()
	mux.Handle("POST /accounts/{id}/deposit", serialize(deposit))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post(srv.URL + "/accounts/042/deposit")
	post(srv.URL + "/accounts/abc/deposit")

	// While another replica holds account 42, both spellings are busy.
	lease, err := accounts.TryLock(context.Background(), 42)
	if err != nil {
		panic(err)
	}
	post(srv.URL + "/accounts/42/deposit")
	post(srv.URL + "/accounts/042/deposit")
	_ = lease.Unlock(context.Background())
	// Output:
	// 200 OK: deposit under [account:42]
	// 400 Bad Request: invalid path value "id"
	// 409 Conflict: resource busy
	// 409 Conflict: resource busy
}
