package server

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// filterTerms decodes Docker's filters query parameter into key -> values
// (sorted). Current clients send {"key":{"value":true}}; clients before
// API 1.22 sent {"key":["value"]}; both are accepted, as dockerd does.
// Which keys are valid is up to the caller's domain filter.
func filterTerms(r *http.Request) (map[string][]string, error) {
	return decodeFilterTerms(r.URL.Query().Get("filters"))
}

// decodeFilterTerms is filterTerms of a filters value.
func decodeFilterTerms(raw string) (map[string][]string, error) {
	if raw == "" {
		return nil, nil
	}
	var sets map[string]map[string]bool
	if err := json.Unmarshal([]byte(raw), &sets); err == nil {
		out := make(map[string][]string, len(sets))
		for k, vs := range sets {
			list := make([]string, 0, len(vs))
			for v, on := range vs {
				if on {
					list = append(list, v)
				}
			}
			sort.Strings(list)
			out[k] = list
		}
		return out, nil
	}
	var lists map[string][]string
	if err := json.Unmarshal([]byte(raw), &lists); err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "invalid filters %q: want a JSON object of filter terms, as in {\"status\":{\"exited\":true}}", raw)
	}
	for _, vs := range lists {
		sort.Strings(vs)
	}
	return lists, nil
}

// parseTimestamp reads the since/until of GET /events: Unix seconds with
// an optional fraction ("1700000000.123456789", what docker clients send),
// or RFC 3339. Empty is the zero time.
func parseTimestamp(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	secs, frac, hasFrac := strings.Cut(v, ".")
	if s, err := strconv.ParseInt(secs, 10, 64); err == nil {
		var nanos int64
		if hasFrac {
			if len(frac) == 0 || len(frac) > 9 {
				return time.Time{}, errs.New(errdefs.ErrInvalidArgument, "invalid %s %q: want seconds since the epoch, with at most 9 decimals", name, v)
			}
			n, err := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
			if err != nil || n < 0 {
				return time.Time{}, errs.New(errdefs.ErrInvalidArgument, "invalid %s %q: want seconds since the epoch", name, v)
			}
			nanos = n
		}
		return time.Unix(s, nanos), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Time{}, errs.New(errdefs.ErrInvalidArgument, "invalid %s %q: want seconds since the epoch or an RFC 3339 time", name, v)
}

// labelsOrEmpty is labels, or an empty map: docker clients expect an
// object, not null.
func labelsOrEmpty(labels map[string]string) map[string]string {
	if labels == nil {
		return map[string]string{}
	}
	return labels
}
