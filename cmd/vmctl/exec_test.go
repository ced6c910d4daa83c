package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/moby/moby/client"
	"github.com/spf13/pflag"
)

func TestExecRequest(t *testing.T) {
	t.Setenv("VMCTL_TEST_FROM_ENV", "here")
	tests := []struct {
		args    []string
		want    client.ExecCreateOptions
		wantErr string
	}{
		{
			args: []string{"c", "ls", "-l"},
			want: client.ExecCreateOptions{Cmd: []string{"ls", "-l"}, AttachStdout: true, AttachStderr: true},
		},
		{
			// Flags after CONTAINER are the command's, not exec's.
			args: []string{"-i", "-t", "c", "sh", "-i", "-t"},
			want: client.ExecCreateOptions{Cmd: []string{"sh", "-i", "-t"}, TTY: true, AttachStdin: true, AttachStdout: true, AttachStderr: true},
		},
		{
			// -d attaches nothing, -i included.
			args: []string{"-d", "-i", "c", "true"},
			want: client.ExecCreateOptions{Cmd: []string{"true"}},
		},
		{
			args: []string{"-e", "A=1", "-e", "VMCTL_TEST_FROM_ENV", "-e", "VMCTL_TEST_UNSET", "-w", "/tmp", "-u", "1000:1000", "c", "env"},
			want: client.ExecCreateOptions{
				Cmd: []string{"env"}, Env: []string{"A=1", "VMCTL_TEST_FROM_ENV=here", "VMCTL_TEST_UNSET"},
				WorkingDir: "/tmp", User: "1000:1000", AttachStdout: true, AttachStderr: true,
			},
		},
		{
			args: []string{"--privileged", "c", "id"},
			want: client.ExecCreateOptions{Cmd: []string{"id"}, Privileged: true, AttachStdout: true, AttachStderr: true},
		},
		{args: []string{"c", ""}, wantErr: "no command to run"},
	}
	for _, tt := range tests {
		o := &execOptions{}
		f := pflag.NewFlagSet("exec", pflag.ContinueOnError)
		o.addFlags(f)
		if err := f.Parse(tt.args); err != nil {
			t.Fatalf("parse %q: %v", tt.args, err)
		}
		if f.Arg(0) != "c" {
			t.Errorf("parse %q: container %q, want c", tt.args, f.Arg(0))
		}
		got, err := o.request(f.Args()[1:])
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("request(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("request(%q) = %+v, %v, want %+v", tt.args, got, err, tt.want)
		}
	}
}

// create takes run's options but not -d, and keeps --rm for the daemon.
func TestCreateFlags(t *testing.T) {
	root, _ := newRootCommand()
	create, _, err := root.Find([]string{"create"})
	if err != nil || create.Name() != "create" {
		t.Fatalf("find create: %v", err)
	}
	if create.Flags().Lookup("detach") != nil {
		t.Errorf("create has --detach; docker create has none")
	}
	for _, name := range []string{"rm", "interactive", "tty", "env", "name", "volume", "label", "pull", "memory", "privileged", "security-opt"} {
		if create.Flags().Lookup(name) == nil {
			t.Errorf("create lacks run's --%s", name)
		}
	}
	run, _, _ := root.Find([]string{"run"})
	if run.Flags().Lookup("detach") == nil {
		t.Errorf("run lost --detach")
	}
}

// Without a daemon each of these commands refuses in one line, with 125.
func TestNeedsDaemon(t *testing.T) {
	t.Setenv("VMCTL_HOST", "")
	for _, args := range [][]string{
		{"exec", "c", "true"},
		{"exec", "-it", "c", "sh"},
		{"restart", "c"},
		{"rename", "c", "d"},
		{"wait", "c"},
		{"create", "busybox"},
		{"attach", "c"},
	} {
		root, _ := newRootCommand()
		root.SetArgs(args)
		err := root.Execute()
		var se *statusError
		if !errors.As(err, &se) || se.code != 125 || !strings.Contains(err.Error(), args[0]+" needs a daemon") || strings.Contains(err.Error(), "\n") {
			t.Errorf("vmctl %q = %v, want status 125 and one line saying %s needs a daemon", args, err, args[0])
		}
	}
}

func TestDaemonFailure(t *testing.T) {
	var se *statusError
	if err := daemonFailure(errors.New("no such container: c")); !errors.As(err, &se) || se.code != 1 || err.Error() != "no such container: c" {
		t.Errorf("daemonFailure(daemon error) = %v, want status 1 with the message", err)
	}
	if err := daemonFailure(&statusError{code: 127}); !errors.As(err, &se) || se.code != 127 {
		t.Errorf("daemonFailure(status 127) = %v, want status 127 kept", err)
	}
	if daemonFailure(nil) != nil {
		t.Errorf("daemonFailure(nil) != nil")
	}
}
