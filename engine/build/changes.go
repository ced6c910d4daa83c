package build

import (
	"strings"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/vmctl/vmctl/engine/errs"
)

// commitChanges are the instructions docker commit --change takes.
var commitChanges = map[string]bool{"cmd": true, "entrypoint": true, "env": true, "expose": true, "label": true,
	"onbuild": true, "user": true, "volume": true, "workdir": true, "stopsignal": true, "healthcheck": true, "shell": true}

// ApplyChanges applies docker commit's --change instructions ("CMD
// [...]", "ENV K=V"...) to cfg, as a build step of each would, with
// cfg's environment for expansion.
func ApplyChanges(cfg *v1.ConfigFile, changes []string) error {
	r := &run{lex: shell.NewLex('\\'), escape: '\\'}
	st := &state{cfg: cfg, args: map[string]string{}, shell: shellOf(cfg), cmdSet: true}
	for _, ch := range changes {
		res, err := parser.Parse(strings.NewReader(ch))
		if err != nil || len(res.AST.Children) != 1 {
			return errs.New(errdefs.ErrInvalidArgument, "invalid change %q: %v", ch, err)
		}
		node := res.AST.Children[0]
		if !commitChanges[strings.ToLower(node.Value)] {
			return errs.New(errdefs.ErrInvalidArgument, "%s is not a valid change command", strings.ToUpper(node.Value))
		}
		cmd, err := instructions.ParseCommand(node)
		if err != nil {
			return errs.New(errdefs.ErrInvalidArgument, "invalid change %q: %v", ch, err)
		}
		if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
			if err := e.Expand(r.expander(st)); err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "%s: %v", ch, err)
			}
		}
		if err := r.configure(st, cfg, cmd); err != nil {
			return err
		}
	}
	return nil
}
