// Package proto defines what the restart-sim load generators and the demo
// service say to each other: the HTTP request and answer, the frames of a
// long-lived TCP stream, the UDP datagrams and the lines of the shared file.
// Everything carries a number, so that loss and duplication can be counted,
// and every answer names the generation that gave it.
package proto
