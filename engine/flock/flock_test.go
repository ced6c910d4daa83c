package flock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLockExcludesWithinOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Acquire(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := TryAcquire(path, false); ok || err != nil {
		t.Fatalf("TryAcquire on a held lock = ok %v, err %v; want not ok", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire on a held lock = %v, want the context's deadline", err)
	}
	l.Release()
	l2, ok, err := TryAcquire(path, false)
	if !ok || err != nil {
		t.Fatalf("TryAcquire after Release = ok %v, err %v", ok, err)
	}
	l2.Release()
}

func TestTryAcquireCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	if _, _, err := TryAcquire(path, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("TryAcquire(missing, create=false) err = %v, want not-exist", err)
	}
	l, ok, err := TryAcquire(path, true)
	if !ok || err != nil {
		t.Fatalf("TryAcquire(missing, create=true) = ok %v, err %v", ok, err)
	}
	l.Release()
}
