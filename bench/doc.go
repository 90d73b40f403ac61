// Package bench measures the graceful library against a hand-written
// golang.org/x/sys/unix floor and against other libraries of its field,
// side by side in one run. It is a module of its own, so that the peers it
// measures never become dependencies of the library.
//
// The benchmarks are in this package's test files; cmd/benchtable runs
// them in interleaved rounds, feeds the results through benchstat and
// writes RESULTS.md:
//
//	cd bench && go run ./cmd/benchtable
package bench
