package distlockfx_test

import (
	"strings"
	"testing"

	"github.com/distlock/distlock/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// prefix returns a key prefix unique to the test.
func prefix(t testing.TB) string {
	return "t:" + strings.NewReplacer("/", ":", " ", "_").Replace(t.Name())
}
