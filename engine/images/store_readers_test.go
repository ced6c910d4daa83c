package images

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Readers take no lock, so an image removed (and its blobs collected)
// while a reader goes through the index must not fail the reader: List
// and Resolve of other images go on as if it was gone already.
func TestReadersDuringRemove(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	addTagged(t, s, testImage(t, "kept", map[string]string{"k": "1"}), "kept:1")
	churn := testImage(t, "churn", map[string]string{"c": "1"})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Add(ctx, churn, "churn:1"); err != nil {
				t.Errorf("Add: %v", err)
				return
			}
			if _, err := s.Remove(ctx, "churn:1", RemoveOptions{}); err != nil {
				t.Errorf("Remove: %v", err)
				return
			}
		}
	}()
	deadline := time.Now().Add(8 * time.Second)
	var failures []error
	for n := 0; time.Now().Before(deadline) && len(failures) < 3; n++ {
		if _, err := s.List(ctx); err != nil {
			failures = append(failures, err)
		}
		if _, err := s.Resolve(ctx, "kept:1"); err != nil {
			failures = append(failures, err)
		}
	}
	close(stop)
	wg.Wait()
	for _, err := range failures {
		t.Errorf("a reader failed while another image was removed: %v", err)
	}
}
