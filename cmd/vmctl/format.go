package main

// Output formats shared by ps, images, inspect and events: Go templates
// with docker's functions and docker's "table" and "json" conventions.
// The row types and table layout are the docker CLI's own formatter, so
// that --format strings written for docker work unchanged.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/docker/cli/cli/command/formatter"
	"github.com/docker/cli/templates"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"
)

// formatError is a bad --format: vmctl's own failure, status 125.
func formatError(err error) error {
	return &statusError{code: 125, err: fmt.Errorf("invalid --format: %w", err)}
}

// parseFilters turns repeated --filter key=value flags into API filters.
func parseFilters(flags []string) (client.Filters, error) {
	f := client.Filters{}
	for _, kv := range flags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, &statusError{code: 125, err: fmt.Errorf("bad format of filter %q: want key=value", kv)}
		}
		f.Add(strings.ToLower(strings.TrimSpace(k)), v)
	}
	return f, nil
}

// writeContainers prints docker ps output: the default table, a
// "table ..." template with headers, a template per row, or "json".
func writeContainers(w io.Writer, list []container.Summary, format string, quiet, noTrunc bool) error {
	ctx := formatter.Context{Output: w, Format: formatter.NewContainerFormat(format, quiet, false), Trunc: !noTrunc}
	if err := formatter.ContainerWrite(ctx, list); err != nil {
		return formatError(err)
	}
	return nil
}

// writeImages prints docker images output in the same way.
func writeImages(w io.Writer, list []image.Summary, format string, quiet, noTrunc bool) error {
	if format == "" {
		format = formatter.TableFormatKey
	}
	ctx := formatter.ImageContext{Context: formatter.Context{Output: w, Format: formatter.NewImageFormat(format, quiet, false), Trunc: !noTrunc}}
	if err := formatter.ImageWrite(ctx, list); err != nil {
		return formatError(err)
	}
	return nil
}

// inspected is one object as the API returned it.
type inspected struct {
	typed any    // the decoded API type, for templates that use Go field names
	raw   []byte // the JSON, for templates that use JSON keys (.Id)
}

// writeInspect prints docker inspect output: an indented JSON array
// without a format, else the template once per object. As in docker, the
// template runs on the API type first and, if a field is not there, on the
// JSON as a map, so that both {{.ID}} and {{.Id}} work.
func writeInspect(w io.Writer, objs []inspected, format string) error {
	if format == "" {
		raws := make([]json.RawMessage, len(objs))
		for i, o := range objs {
			raws[i] = o.raw
		}
		b, err := json.MarshalIndent(raws, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	if format == formatter.JSONFormatKey {
		format = formatter.JSONFormat
	}
	tmpl, err := templates.Parse(format)
	if err != nil {
		return formatError(err)
	}
	var out bytes.Buffer
	for _, o := range objs {
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, o.typed); err != nil {
			buf.Reset()
			var raw any
			dec := json.NewDecoder(bytes.NewReader(o.raw))
			dec.UseNumber()
			if derr := dec.Decode(&raw); derr != nil {
				return fmt.Errorf("unable to read inspect data: %w", derr)
			}
			if err := tmpl.Option("missingkey=error").Execute(&buf, raw); err != nil {
				return &statusError{code: 1, err: fmt.Errorf("template: %w", err)}
			}
		}
		out.Write(buf.Bytes())
		out.WriteByte('\n')
	}
	_, err = out.WriteTo(w)
	return err
}

// eventTemplate parses an events --format; nil means docker's default line.
func eventTemplate(format string) (*template.Template, error) {
	switch format {
	case "":
		return nil, nil
	case formatter.JSONFormatKey:
		format = formatter.JSONFormat
	}
	tmpl, err := templates.Parse(format)
	if err != nil {
		return nil, formatError(err)
	}
	return tmpl, nil
}

// writeEvent prints one event: with a template, or as docker's default
// line "TIME TYPE ACTION ID (key=value, ...)".
func writeEvent(w io.Writer, tmpl *template.Template, m events.Message) error {
	if tmpl != nil {
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, m); err != nil {
			return formatError(err)
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(w)
		return err
	}
	var line strings.Builder
	if m.TimeNano != 0 {
		line.WriteString(time.Unix(0, m.TimeNano).Format("2006-01-02T15:04:05.000000000Z07:00") + " ")
	} else if m.Time != 0 {
		line.WriteString(time.Unix(m.Time, 0).Format("2006-01-02T15:04:05.000000000Z07:00") + " ")
	}
	fmt.Fprintf(&line, "%s %s %s", m.Type, m.Action, m.Actor.ID)
	if len(m.Actor.Attributes) > 0 {
		keys := make([]string, 0, len(m.Actor.Attributes))
		for k := range m.Actor.Attributes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		attrs := make([]string, len(keys))
		for i, k := range keys {
			attrs[i] = k + "=" + m.Actor.Attributes[k]
		}
		line.WriteString(" (" + strings.Join(attrs, ", ") + ")")
	}
	line.WriteByte('\n')
	_, err := io.WriteString(w, line.String())
	return err
}
