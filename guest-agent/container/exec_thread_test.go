package container

import (
	"testing"

	"golang.org/x/sys/unix"
)

// An exec's thread joins a container's namespaces and ends with its
// goroutine; the main thread, which the runtime parks instead of ending
// (and which /proc/self shows), must never be that thread.
func TestOnEndingThreadAvoidsMainThread(t *testing.T) {
	for i := 0; i < 200; i++ {
		done := make(chan int, 1)
		onEndingThread(func() { done <- unix.Gettid() })
		if tid := <-done; tid == unix.Getpid() {
			t.Fatalf("round %d: fn ran on the main thread", i)
		}
	}
}
