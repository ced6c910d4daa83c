// Package boltfile opens a bbolt database for one operation at a time, as
// the engine's stores do: the engine may run in several processes at once
// (vmctld and vmctl runs without a daemon), and bbolt locks its file for as
// long as it is open.
package boltfile

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// openTimeout bounds the wait for bbolt's own lock on the database. Only a
// process that opens it without taking PATH.lock first (a debugging tool)
// can make anyone wait for it; the stores' processes queue on PATH.lock.
const openTimeout = 2 * time.Second

// Use opens the database at path for fn: shared for readers, exclusive for
// writers, queued on path+".lock" with flock(2), so that waiting costs no
// polling (bbolt's own lock wait polls every 50 ms). what names the store
// in errors ("container store").
func Use(path, what string, readOnly bool, fn func(*bolt.DB) error) error {
	lf, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("%s lock: %w", what, err)
	}
	defer lf.Close()
	how := unix.LOCK_EX
	if readOnly {
		how = unix.LOCK_SH
	}
	for {
		err = unix.Flock(int(lf.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s lock: %w", what, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout, ReadOnly: readOnly})
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	ferr := fn(db)
	if err := db.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("%s %s: %w", what, path, err)
	}
	return ferr
}
