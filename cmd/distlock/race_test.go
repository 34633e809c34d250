//go:build race

package main_test

// raceEnabled tells that the tests run with the race detector, so that
// the binary they build has it too.
const raceEnabled = true
