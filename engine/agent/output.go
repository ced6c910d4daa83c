package agent

import (
	"context"
	"time"
)

// ReadFunc is Client.ReadStdout or Client.ReadStderr.
type ReadFunc func(ctx context.Context, p Process, max int, offset uint64) (Output, error)

// EmptyReadBackoff is the pause after an output read that returned nothing.
const EmptyReadBackoff = 10 * time.Millisecond

// PumpOutput reads one output stream of process p, chunk bytes at most per
// read, from stream offset from until its EOF or the end of ctx, handing
// each chunk to deliver. Each read acknowledges the chunks delivered before
// it (see the agent API), so a chunk whose answer never arrived is read
// again by whoever resumes from the same offset. A failed read (the run
// ended, or an answer the client refused) ends the stream.
func PumpOutput(ctx context.Context, read ReadFunc, p Process, chunk int, from uint64, deliver func([]byte)) {
	off := from
	for {
		out, err := read(ctx, p, chunk, off)
		if err != nil {
			return
		}
		if len(out.Data) > 0 {
			deliver(out.Data)
			off += uint64(len(out.Data))
		}
		if out.EOF {
			return
		}
		if len(out.Data) == 0 {
			// The agent's reads block until there is output, so an empty
			// answer is rare; a guest that gives nothing but empty answers
			// must not have the host spin on it.
			select {
			case <-ctx.Done():
				return
			case <-time.After(EmptyReadBackoff):
			}
		}
	}
}
