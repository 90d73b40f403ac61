//go:build race

package graceful_test

// raceEnabled: the race detector multiplies the memory a goroutine costs.
const raceEnabled = true
