//go:build linux

// Package sim is restart-sim's main job: it parses the flags, runs the
// service (the demo, or the user's command) under the project's supervisor
// through package service, runs the loads through a baseline phase and a
// restart phase of restarts and injected faults, stops everything, checks
// the shared file, and builds the report. cmd/restart-sim/REPORT.md
// describes the run and the report.
package sim
