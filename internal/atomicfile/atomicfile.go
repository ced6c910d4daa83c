// Package atomicfile replaces files so that readers, and the file after a
// crash, hold the old content or the new, never a part of either.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data (mode perm): a temporary file in the same
// directory is written, synced and renamed over path, then the directory
// is synced so the rename survives a crash. On error path is unchanged and
// no temporary file remains.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir syncs a directory: its entries (a rename, a new file) are then
// on disk.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
