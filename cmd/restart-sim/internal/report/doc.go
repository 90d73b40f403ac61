// Package report holds what restart-sim measured and turns it into a
// verdict, a terminal report, a JSON document (whose JSON Schema is
// [Schema]) and a chart of latency over time.
//
// Latency figures count successful requests only, split by phase: the
// baseline phase (load, no restarts) and the restart phase. Failures are
// counted by cause instead (see [Outcome]).
package report
