package engine

// Accessors a long-running front end (vmctld) needs; the CLI does not.

// Config returns the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// DataRoot is where the engine keeps its persistent state.
func (e *Engine) DataRoot() string { return e.cfg.DataRoot }
