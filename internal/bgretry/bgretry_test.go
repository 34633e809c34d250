package bgretry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/distlock/distlock/internal/bgretry"
)

// Until calls the request again after each failure until it succeeds.
func TestUntilRetriesUntilSuccess(t *testing.T) {
	calls := 0
	bgretry.Until(context.Background(), func(ctx context.Context) error {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("an attempt without a deadline")
		}
		if calls < 3 {
			return errors.New("refused")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("%d calls, want 3", calls)
	}
}

// Until stops once ctx ends, but lets the first attempt run even then.
func TestUntilStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	start := time.Now()
	bgretry.Until(ctx, func(ctx context.Context) error {
		calls++
		if ctx.Err() != nil {
			t.Error("the first attempt got an ended context")
		}
		return errors.New("refused")
	})
	if calls != 1 || time.Since(start) > time.Second {
		t.Fatalf("%d calls in %v, want 1 at once", calls, time.Since(start))
	}
}
