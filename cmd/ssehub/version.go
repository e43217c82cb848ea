package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is the release this binary was built from. Release builds set it
// with -ldflags "-X main.version=v1.2.3"; otherwise it comes from the module
// version recorded in the binary (go install ...@v1.2.3), or "devel".
var version string

// buildVersion returns the version and, when the build recorded them, the
// VCS revision and whether the tree had local changes.
func buildVersion() (v, revision string) {
	v = version
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if v == "" {
			v = "devel"
		}
		return v, ""
	}
	if v == "" {
		v = info.Main.Version
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if revision != "" && modified {
		revision += "+dirty"
	}
	return v, revision
}

func runVersion(_ context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newFlagSet("version", "version", stdout)
	if err := fs.parse(args); err != nil {
		return err
	}
	v, rev := buildVersion()
	fmt.Fprintf(stdout, "ssehub %s", v)
	if rev != "" {
		fmt.Fprintf(stdout, " (%s)", rev)
	}
	fmt.Fprintf(stdout, " %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
