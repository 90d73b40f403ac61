//go:build linux

// Package generation is the demo service of restart-sim: one process per
// generation, started by the supervisor (package supervisor) as the
// restart-sim binary itself with the hidden first argument [Command], every
// generation with the same command line.
//
// A generation that finds nothing at the hand-off socket (the first one)
// creates the service's descriptors at the configured addresses: an HTTP
// listener, a listener for long-lived streams, a UDP socket and the shared
// append-only file, and stores them with the supervisor (FDSTORE=1). Every
// later generation dials the hand-off socket and takes over all of them
// through graceful, with the established stream connections and their
// per-connection state in graceful.Meta; after a crash, the supervisor
// serves its store there instead. It then serves, says READY to the old
// generation, places its own hand-off socket, and says READY=1 to the
// supervisor. The old generation, told by graceful.Server.Done that the
// hand-off succeeded, stops its streams and line writers (paused for the
// hand-off) and closes its hand-off socket; on the supervisor's SIGTERM it
// drains (HTTP goes through graceful.HTTPDrainer) and exits. When the
// hand-off fails, it resumes what it paused and keeps serving.
//
// A generation reports to restart-sim with the messages of package
// control, names itself by its process id in every answer and line, and
// can be told to fail its hand-off (Config.FaultFile, Faults), to panic
// (PanicSignal), or be built with a bug the verdict must catch
// (Config.Defect, Defects).
package generation
