// Package flock provides exclusive flock(2) locks on files, the way the
// engine's stores serialise work across processes (two vmctl processes, or
// vmctl and vmctld, sharing a data root).
//
// flock locks belong to the open file description, so two opens in one
// process exclude each other just as two processes do, and a lock goes away
// with the process that held it if it dies.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Lock is a held lock.
type Lock struct{ f *os.File }

// Acquire takes an exclusive lock on path, creating the file if needed. It
// polls so that ctx can cancel the wait; flock itself cannot be interrupted.
func Acquire(ctx context.Context, path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// TryAcquire takes an exclusive lock without waiting; ok is false if
// someone else holds it. With create false, a missing file is an error
// (os.ErrNotExist) rather than a new, free lock: callers use that to tell
// "nobody ever locked this" from "whoever locked this is gone".
func TryAcquire(path string, create bool) (l *Lock, ok bool, err error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return &Lock{f: f}, true, nil
}

// Release drops the lock: closing the last descriptor releases it.
func (l *Lock) Release() { l.f.Close() }
