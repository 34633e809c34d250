// Package readme holds the test that keeps the Go code shown in README.md
// true: every Go block there must appear in a Go file that the project
// compiles and tests.
package readme
