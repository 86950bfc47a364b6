//go:build !linux

package idscp2

import "net"

// sendQueueEmpty cannot tell on this platform, so the reader always hands
// writes to a flusher goroutine.
func sendQueueEmpty(net.Conn) bool { return false }
