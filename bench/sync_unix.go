//go:build unix

package main

import "syscall"

// syncDisks flushes the page cache's dirty pages to disk.
func syncDisks() { syscall.Sync() }
