//go:build !amd64

package nested

// Without a TSC to measure, L1 calibrates its own (see hostTSCkHz).
const haveTSC = false

func rdtsc() uint64 { return 0 }
