package main

import (
	"testing"
	"time"
)

func TestParseL1Output(t *testing.T) {
	tests := []struct {
		name     string
		out      string
		want     []l1Sample
		failures map[string]string
		wantErr  bool
	}{
		{"one each, with kernel noise", "[ 4.5] kvm: noise\nVMMBOOT vmm=qemu health_ms=2560 exit_ms=2872 rss_kb=39000 pss_kb=38990 guest_kb=47104\nVMMBOOT vmm=vmctl-vmm health_ms=1376 exit_ms=1704 rss_kb=9000 pss_kb=9000 guest_kb=40000\n",
			[]l1Sample{{"qemu", 2560 * time.Millisecond, 2872 * time.Millisecond, 39000, 38990, 47104}, {"vmctl-vmm", 1376 * time.Millisecond, 1704 * time.Millisecond, 9000, 9000, 40000}}, map[string]string{}, false},
		{"failure line", "VMMBOOT-FAIL vmm=vmctl-vmm boot=1 Health: context deadline exceeded\n", nil, map[string]string{"vmctl-vmm": "boot=1 Health: context deadline exceeded"}, false},
		{"truncated line", "VMMBOOT vmm=qemu health_ms=25\n", nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, failures, err := parseL1Output(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseL1Output() error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseL1Output() = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("sample %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			if len(failures) != len(tt.failures) {
				t.Errorf("failures = %v, want %v", failures, tt.failures)
			}
			for k, v := range tt.failures {
				if failures[k] != v {
					t.Errorf("failures[%s] = %q, want %q", k, failures[k], v)
				}
			}
		})
	}
}
