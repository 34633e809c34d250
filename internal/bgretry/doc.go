// Package bgretry runs the background requests of distlock's lock types
// (the release of an acquire whose outcome is unknown, a queue leave) until
// they succeed.
package bgretry
