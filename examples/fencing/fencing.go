package fencing

import (
	"context"
	"errors"
	"fmt"
)

var (
	// ErrStaleFence reports a write refused because a higher fence has
	// already written the value: the writer's lease is no longer the
	// newest, and it must stop acting on the protected resource.
	ErrStaleFence = errors.New("fencing: stale fence")

	// ErrNotFound reports that no value was ever written under an id or key.
	ErrNotFound = errors.New("fencing: not found")

	// ErrInvalid is wrapped by every error about bad input. Such errors are
	// returned before any database or Redis call.
	ErrInvalid = errors.New("fencing: invalid argument")
)

// Store keeps values guarded by fences. *SQLStore and *RedisStore implement
// it.
type Store interface {
	// Write stores value under id with fence, unless a higher fence has
	// written id; then it changes nothing and returns an error wrapping
	// ErrStaleFence. A fence equal to the stored one is accepted.
	Write(ctx context.Context, id string, value []byte, fence int64) error
	// Read returns the value stored under id and the fence that wrote it,
	// or an error wrapping ErrNotFound.
	Read(ctx context.Context, id string) (value []byte, fence int64, err error)
}

var (
	_ Store = (*SQLStore)(nil)
	_ Store = (*RedisStore)(nil)
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// checkWrite validates the arguments of a write.
func checkWrite(id string, fence int64) error {
	if err := checkID(id); err != nil {
		return err
	}
	if fence <= 0 {
		return invalidf("fence %d is not positive", fence)
	}
	return nil
}

func checkID(id string) error {
	if id == "" {
		return invalidf("empty id")
	}
	return nil
}

// stale returns the error of a write refused for its fence. detail, when
// not empty, is added to the message.
func stale(id string, fence int64, detail string) error {
	if detail != "" {
		detail = ", " + detail
	}
	return fmt.Errorf("%w: write to %q with fence %d refused%s", ErrStaleFence, id, fence, detail)
}
