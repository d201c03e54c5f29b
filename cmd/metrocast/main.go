// Command metrocast runs a metrocast node and its tools.
//
//	metrocast serve [flags]           run a node (config file, METROCAST_<KEY>, flags)
//	metrocast config check FILE       validate a config file and print the effective config
//	metrocast push [flags]            send NDJSON from stdin to the ingest port, with acks
//	metrocast sub [flags] CITY...     print a city's frames as a client gets them, resuming on reconnect
//	metrocast token [flags]           mint a JWT for a client or a producer
//	metrocast version                 print the version
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(args)
	case "config":
		err = runConfig(args)
	case "push":
		err = runPush(args)
	case "sub":
		err = runSub(args)
	case "token":
		err = runToken(args, os.Stdout)
	case "version", "-version", "--version":
		fmt.Println("metrocast", versionString())
	case "help", "-h", "-help", "--help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "metrocast: unknown command %q\n\n", cmd)
		usage(os.Stderr)
		os.Exit(2)
	}
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "metrocast:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "metrocast:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: metrocast <command> [flags]

commands:
  serve     run a node (see 'metrocast serve -h'): -config FILE, METROCAST_<KEY>, flags
  config    'config check FILE' validates a config file and prints the effective config
  push      send NDJSON lines from stdin to the ingest port and print the acks
  sub       print the frames of cities as a client gets them: metrocast sub nairobi
  token     mint a JWT: metrocast token -sub alice -cities nairobi,lagos -ttl 1h
  version   print the version
`)
}

// versionString is what `metrocast version` prints: the version and, for
// a build from a checkout, the Go version.
func versionString() string {
	v := buildVersion()
	if version == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			v += " " + bi.GoVersion
		}
	}
	return v
}

// buildVersion is the version set at build time, or for a build from a
// checkout "dev-" and its commit ("-dirty" with changes), or "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "dev"
	}
	return "dev-" + rev + dirty
}
