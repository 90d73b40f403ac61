//go:build !linux

package graceful

import "net"

// serveFast is Linux's; elsewhere every listener is served through
// package net.
func (s *Server) serveFast(net.Listener) (handled bool, err error) { return false, nil }
