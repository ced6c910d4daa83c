package main

import (
	"fmt"
	"os"

	"github.com/moby/moby/client"
)

// forEach runs op on every ref, as docker's commands that take several
// objects do: a failure is reported on one line and the next ref is tried;
// any failure makes the exit status 1. An unreachable daemon ends the loop
// at once, since every other ref would fail alike.
func forEach(refs []string, op func(ref string) error) error {
	var failed error
	for _, ref := range refs {
		if err := op(ref); err != nil {
			if client.IsErrConnectionFailed(err) {
				return err
			}
			fmt.Fprintln(os.Stderr, "vmctl: "+oneLine(err))
			failed = &statusError{code: 1}
		}
	}
	return failed
}
