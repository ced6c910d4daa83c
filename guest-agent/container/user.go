package container

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vmctl/vmctl/api/agent/contract"
)

// execUser is what a user given by name ("user[:group]", docker run -u)
// resolves to in the container's own /etc/passwd and /etc/group, as runc
// resolves it: a name must be there; a numeric UID need not (it then has
// GID 0 and HOME /); the user's supplementary groups are the groups that
// list it.
type execUser struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

func lookupUser(spec, passwdPath, groupPath string) (execUser, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	u := execUser{home: "/"}
	uid, uidErr := strconv.ParseUint(userPart, 10, 32)
	found := false
	name := ""
	err := eachLine(passwdPath, func(f []string) bool {
		if len(f) < 7 {
			return true
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return true
		}
		if f[0] == userPart || (uidErr == nil && id == uid) {
			gid, err := strconv.ParseUint(f[3], 10, 32)
			if err != nil {
				return true
			}
			u.uid, u.gid, u.home, name, found = uint32(id), uint32(gid), f[5], f[0], true
			return false
		}
		return true
	})
	if err != nil && uidErr != nil {
		return execUser{}, fmt.Errorf("unable to find user %s: %w", userPart, err)
	}
	switch {
	case found:
	case uidErr == nil:
		u.uid = uint32(uid)
	default:
		return execUser{}, fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)
	}
	if hasGroup {
		gid, gidErr := strconv.ParseUint(groupPart, 10, 32)
		gfound := false
		_ = eachLine(groupPath, func(f []string) bool {
			if len(f) < 3 {
				return true
			}
			if id, err := strconv.ParseUint(f[2], 10, 32); err == nil && (f[0] == groupPart || (gidErr == nil && id == gid)) {
				u.gid, gfound = uint32(id), true
				return false
			}
			return true
		})
		switch {
		case gfound:
		case gidErr == nil:
			u.gid = uint32(gid)
		default:
			return execUser{}, fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)
		}
	}
	if name != "" {
		_ = eachLine(groupPath, func(f []string) bool {
			if len(f) < 4 {
				return true
			}
			id, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil || uint32(id) == u.gid {
				return true
			}
			for _, m := range strings.Split(f[3], ",") {
				if m == name {
					u.groups = append(u.groups, uint32(id))
					break
				}
			}
			return true
		})
	}
	return u, nil
}

// eachLine calls fn with the colon-separated fields of each line of the
// file until fn returns false.
func eachLine(path string, fn func([]string) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !fn(strings.Split(line, ":")) {
			return nil
		}
	}
	return sc.Err()
}

// lookupGroups resolves docker's --group-add entries: numbers as they are,
// names in the group file.
func lookupGroups(entries []string, groupPath string) ([]uint32, error) {
	var out []uint32
	for _, e := range entries {
		if id, err := strconv.ParseUint(e, 10, 32); err == nil {
			out = append(out, uint32(id))
			continue
		}
		found := false
		_ = eachLine(groupPath, func(f []string) bool {
			if len(f) < 3 || f[0] != e {
				return true
			}
			if id, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				out, found = append(out, uint32(id)), true
				return false
			}
			return true
		})
		if !found {
			return nil, fmt.Errorf("unable to find group %s: no matching entries in group file", e)
		}
	}
	return out, nil
}

// groupAdd is a spec's --group-add entries (contract.AnnotationGroupAdd).
func groupAdd(s *specs.Spec) []string {
	v := s.Annotations[contract.AnnotationGroupAdd]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}
