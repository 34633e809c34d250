//go:build !unix

package bench

import "time"

// processCPU returns 0: getrusage is not available on this system, so client
// CPU figures read as zero.
func processCPU() time.Duration { return 0 }
