package chaos_test

import (
	"os"
	"testing"

	"github.com/distlock/distlock/chaos"
)

// TestMain lets the test binary serve as the client processes that the
// scenarios start by re-executing it.
func TestMain(m *testing.M) {
	if chaos.IsClient() {
		os.Exit(chaos.ClientMain())
	}
	os.Exit(m.Run())
}
