package grpcmw_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/distlock/distlock/grpcmw"
	"github.com/distlock/distlock/internal/redistest"
	"github.com/distlock/distlock/keyed"
	"github.com/distlock/distlock/mutex"
)

// accountOf parses the service name of a health request as a positive
// decimal account number; leading zeros are allowed, so "042" and "42" are
// the same account.
func accountOf(r *healthpb.HealthCheckRequest) (int64, error) {
	if r.GetService() == "" {
		return 0, fmt.Errorf("%w: no account", grpcmw.ErrMissingKey)
	}
	n, err := strconv.ParseInt(r.GetService(), 10, 64)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("account %d is not positive", n)
	}
	return n, nil
}

// TestKeyedFromRequestLocksOneAccount checks that two spellings of one
// account lock one key, the one the Keyed locks, and that a handler locking
// the account through the Keyed joins the call's lease.
func TestKeyedFromRequestLocksOneAccount(t *testing.T) {
	redistest.RunBackends(t, func(t *testing.T, backend redistest.Backend) {
		m := backendMutex(t, backend, mutex.Config{})
		accounts := keyed.New[int64](m, "account")
		g := newGate()
		impl := &health{check: func(ctx context.Context, req *healthpb.HealthCheckRequest) error {
			lease := grpcmw.LeaseFrom(ctx)
			id, err := accountOf(req)
			if err != nil {
				return err
			}
			// Locking the account again through the Keyed joins the call's
			// lease instead of waiting for it.
			err = accounts.WithLock(ctx, id, func(ctx context.Context) error {
				if mutex.LeaseFromContext(ctx) != lease {
					return errors.New("did not join the call's lease")
				}
				return nil
			})
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			return g.check(ctx, req)
		}}
		c := serve(t, impl, unary(m, grpcmw.KeyedFromRequest(accounts, accountOf)))

		first := check(t, c, "042")
		require.Equal(t, "042", recv(t, g.started, "first handler"))
		st, err := accounts.Check(t.Context(), 42)
		require.NoError(t, err)
		assert.Equal(t, mutex.Locked, st, "the call holds the Keyed's key")

		_, err = c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "42"})
		assert.Equal(t, codes.Aborted, status.Code(err), "account 42 is account 042")

		other := check(t, c, "43")
		require.Equal(t, "43", recv(t, g.started, "another account"))
		close(g.release)
		require.NoError(t, recv(t, first, "first answer"))
		require.NoError(t, recv(t, other, "other answer"))
	})
}

func TestKeyedFromRequestBadValues(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	accounts := keyed.New[int64](m, "account")
	names := keyed.New[string](m, strings.Repeat("n", keyed.MaxNamespaceLen))
	var log errLog
	impl := &health{check: func(context.Context, *healthpb.HealthCheckRequest) error {
		t.Error("handler ran")
		return nil
	}}
	byAccount := serve(t, impl, unary(m, grpcmw.KeyedFromRequest(accounts, accountOf), log.hook()))
	byName := serve(t, impl, unary(m, grpcmw.KeyedFromRequest(names, func(r *healthpb.HealthCheckRequest) (string, error) {
		return strings.TrimSpace(r.GetService()), nil
	}), log.hook()))

	for _, tc := range []struct {
		c       healthpb.HealthClient
		service string
		problem string // in the error passed to the hook
	}{
		{byAccount, "abc", `strconv.ParseInt: parsing "abc": invalid syntax`},
		{byAccount, "-7", "account -7 is not positive"},
		// The Keyed refuses an empty key string.
		{byName, " ", "empty key string"},
		// The key is too long with the namespace.
		{byName, strings.Repeat("x", grpcmw.MaxKeyLen-10), "lock key: 311 bytes, longer than 256"},
		{byName, "a\x01", "lock key: control character at byte 66"},
	} {
		_, err := tc.c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: tc.service})
		st := status.Convert(err)
		assert.Equal(t, codes.InvalidArgument, st.Code(), tc.service)
		assert.Equal(t, "invalid lock key in request", st.Message(), tc.service)
		hooked := log.take()
		require.Len(t, hooked, 1, tc.service)
		var pe *grpcmw.ParseError
		require.ErrorAs(t, hooked[0], &pe, tc.service)
		assert.ErrorIs(t, hooked[0], grpcmw.ErrInvalidKey, tc.service)
		assert.ErrorContains(t, hooked[0], tc.problem, tc.service)
		assert.True(t, strings.HasPrefix(hooked[0].Error(), "grpcmw: invalid lock key: request: "), "%v", hooked[0])
	}

	// A key function that reports a missing value.
	_, err := byAccount.Check(t.Context(), &healthpb.HealthCheckRequest{})
	st := status.Convert(err)
	assert.Equal(t, codes.InvalidArgument, st.Code())
	assert.Equal(t, "missing lock key", st.Message())
	hooked := log.take()
	require.Len(t, hooked, 1)
	assert.ErrorIs(t, hooked[0], grpcmw.ErrMissingKey)
}

func TestKeyedFromRequestSetupErrors(t *testing.T) {
	m := newMutex(t, redistest.Shared(t), mutex.Config{})
	var log errLog
	impl := &health{check: func(context.Context, *healthpb.HealthCheckRequest) error {
		t.Error("handler ran")
		return nil
	}}
	for name, key := range map[string]grpcmw.KeyFunc{
		"nil Keyed":    grpcmw.KeyedFromRequest[*healthpb.HealthCheckRequest, int64](nil, accountOf),
		"bad Keyed":    grpcmw.KeyedFromRequest(keyed.New[int64](m, ""), accountOf),
		"zero Keyed":   grpcmw.KeyedFromRequest(&keyed.Keyed[int64]{}, accountOf),
		"no Locker":    grpcmw.KeyedFromRequest(keyed.New[int64](nil, "account"), accountOf),
		"nil key func": grpcmw.KeyedFromRequest[*healthpb.HealthCheckRequest](keyed.New[int64](m, "account"), nil),
		"in Namespace": grpcmw.Namespace("ns", grpcmw.KeyedFromRequest(keyed.New[int64](m, ""), accountOf)),
	} {
		c := serve(t, impl, unary(m, key, log.hook()))
		_, err := c.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "42"})
		st := status.Convert(err)
		assert.Equal(t, codes.Internal, st.Code(), name)
		assert.Equal(t, "lock misconfigured", st.Message(), name)
		hooked := log.take()
		require.Len(t, hooked, 1, name)
		assert.ErrorIs(t, hooked[0], mutex.ErrInvalid, name)
		assert.NotErrorIs(t, hooked[0], grpcmw.ErrInvalidKey, name)

		// Calls of other request types are not serialized, setup error or
		// not.
		k, ok, err := key(t.Context(), "/grpc.health.v1.Health/List", &healthpb.HealthListRequest{})
		assert.Empty(t, k, name)
		assert.False(t, ok, name)
		assert.NoError(t, err, name)
	}
}

func TestParseErrorWithoutCause(t *testing.T) {
	err := &grpcmw.ParseError{}
	assert.EqualError(t, err, "grpcmw: invalid lock key: request")
	assert.ErrorIs(t, err, grpcmw.ErrInvalidKey)
}
