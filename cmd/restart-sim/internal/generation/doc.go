//go:build linux

// Package generation is the demo service of restart-sim: one process per
// generation, started by the supervisor as the restart-sim binary itself
// with the hidden first argument [Command].
//
// Generation 0 creates the service's descriptors: an HTTP listener, a
// listener for long-lived streams, a UDP socket and the shared append-only
// file. Every later generation dials the hand-off socket of the current one
// and takes over all of them through graceful, with the established stream
// connections and their per-connection state in graceful.Meta; it then
// serves, says READY, and offers the set on its own hand-off socket. The old
// generation, told by graceful.Server.Done that the hand-off succeeded,
// drains (its streams and line writers were already paused for the
// hand-off; HTTP goes through graceful.HTTPDrainer) and exits. When the
// hand-off fails, it resumes what it paused and keeps serving.
//
// A generation reports to the supervisor over the harness control channel
// with the messages of package control, and can be told to misbehave
// (Config.Fault) so that the supervisor's rollback can be tested.
package generation
