//go:build linux

// Package sim is restart-sim's main job: it parses the flags, starts the
// supervisor and generation 0, runs the loads through a baseline phase and
// a restart phase, stops everything, checks the shared file, and builds the
// report. cmd/restart-sim/REPORT.md describes the run and the report.
package sim
