package nested

import (
	"slices"
	"time"
)

// hostTSCkHz measures the host's TSC rate in kHz, or returns 0 when the
// measurement is implausible.
//
// Why L1 needs it: under TCG the guest's TSC is the host's TSC, and QEMU's
// microvm has no HPET or ACPI PM timer, so L1 Linux must calibrate the TSC
// against the emulated PIT. That calibration is timing-sensitive and fails
// often under TCG on a busy host; L1 then hangs after "tsc: Marking TSC
// unstable due to could not calculate TSC khz". Passing the rate as
// tsc_early_khz= skips the calibration.
func hostTSCkHz() uint64 {
	if !haveTSC {
		return 0
	}
	const samples, interval = 5, 10 * time.Millisecond
	var rates []float64
	for range samples {
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(interval)
		c1, t1 := rdtsc(), time.Now()
		if el := t1.Sub(t0); el > 0 && c1 > c0 {
			rates = append(rates, float64(c1-c0)/el.Seconds()/1000)
		}
	}
	if len(rates) == 0 {
		return 0
	}
	// The median drops samples stretched by a preemption between a clock
	// read and its counter read.
	slices.Sort(rates)
	khz := uint64(rates[len(rates)/2])
	if khz < 100_000 || khz > 10_000_000 { // 100 MHz .. 10 GHz
		return 0
	}
	return khz
}
