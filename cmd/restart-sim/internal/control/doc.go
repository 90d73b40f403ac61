// Package control defines the messages a generation of the restart-sim demo
// service sends its supervisor over the harness's control channel
// (harness.Control): the message type is the harness message's type and
// its data is a [Message].
//
// The supervisor sends nothing on it: it talks to a generation with signals
// (SIGTERM: drain and exit; SIGKILL: fault injection and rollback).
package control
