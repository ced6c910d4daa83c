package main

// docker network ls's rows for the docker CLI's formatter: the same
// fields and headers, so that --format strings written for docker work.

import (
	"slices"
	"strconv"
	"strings"

	"github.com/docker/cli/cli/command/formatter"
	"github.com/moby/moby/api/types/network"
)

const defaultNetworkFormat = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"

// networkFormat is the formatter format of a --format value.
func networkFormat(format string, quiet bool) formatter.Format {
	switch format {
	case "", formatter.TableFormatKey:
		if quiet {
			return formatter.DefaultQuietFormat
		}
		return defaultNetworkFormat
	case formatter.RawFormatKey:
		if quiet {
			return `network_id: {{.ID}}`
		}
		return `network_id: {{.ID}}\nname: {{.Name}}\ndriver: {{.Driver}}\nscope: {{.Scope}}\n`
	}
	return formatter.Format(format)
}

func newNetworkHeader() *networkRow {
	r := &networkRow{}
	r.Header = formatter.SubHeaderContext{
		"ID": "NETWORK ID", "Name": formatter.NameHeader, "Driver": formatter.DriverHeader,
		"Scope": formatter.ScopeHeader, "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL",
		"Labels": formatter.LabelsHeader, "CreatedAt": formatter.CreatedAtHeader,
	}
	return r
}

// networkRow is one network as templates see it.
type networkRow struct {
	formatter.HeaderContext
	trunc bool
	n     network.Summary
}

func (r *networkRow) MarshalJSON() ([]byte, error) { return formatter.MarshalJSON(r) }

func (r *networkRow) ID() string {
	if r.trunc {
		return formatter.TruncateID(r.n.ID)
	}
	return r.n.ID
}

func (r *networkRow) Name() string      { return r.n.Name }
func (r *networkRow) Driver() string    { return r.n.Driver }
func (r *networkRow) Scope() string     { return r.n.Scope }
func (r *networkRow) IPv4() string      { return strconv.FormatBool(r.n.EnableIPv4) }
func (r *networkRow) IPv6() string      { return strconv.FormatBool(r.n.EnableIPv6) }
func (r *networkRow) Internal() string  { return strconv.FormatBool(r.n.Internal) }
func (r *networkRow) CreatedAt() string { return r.n.Created.String() }

// Labels are the labels as k=v, sorted and joined by commas.
func (r *networkRow) Labels() string {
	kv := make([]string, 0, len(r.n.Labels))
	for k, v := range r.n.Labels {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return strings.Join(kv, ",")
}

func (r *networkRow) Label(name string) string { return r.n.Labels[name] }
