package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// errHelp tells main that help was asked for and printed: exit 0.
var errHelp = errors.New("help requested")

// usageError is a mistake on the command line: main prints it and exits 2,
// as the flag package does for its own mistakes.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// parseFlags parses args into fs, whose Usage prints the command's help.
// -h (or -help) prints the help to stdout and returns errHelp. A mistake
// returns one line that names it, with a hint (the flag meant, and where
// the flags are listed), rather than the whole usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard) // the flag package would print the usage
	err := fs.Parse(args)
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return errHelp
	}
	hint := "metrocast " + fs.Name() + " -h lists the flags"
	// The flag package's wording, stable since Go 1.0.
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		if near := nearestFlag(fs, name); near != "" {
			hint = "did you mean -" + near + "? " + hint
		}
		return &usageError{fmt.Sprintf("%s: unknown flag -%s (%s)", fs.Name(), name, hint)}
	}
	return &usageError{fmt.Sprintf("%s: %s (%s)", fs.Name(), err, hint)}
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help":
		return true
	}
	return false
}

// nearestFlag returns the flag of fs closest to name, or "" if none is
// close enough to be what was meant: within an edit or two (a third for a
// long name), underscores read as dashes and case ignored (-RING_SIZE is
// -ring-size).
func nearestFlag(fs *flag.FlagSet, name string) string {
	want := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	best, bestDist := "", max(2, len(want)/5)+1
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(want, f.Name); d < bestDist && d < len(want) {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printFlag writes one flag's line of help: its name, the kind of value it
// takes, what it does and its default when not the zero value.
func printFlag(w io.Writer, f *flag.Flag) {
	kind, usage := flag.UnquoteUsage(f)
	if kind == "value" { // a type of ours, or a TextVar
		kind = "string"
		if _, ok := f.Value.(*listFlag); ok {
			kind = "list"
		}
	}
	head := "  -" + f.Name
	if kind != "" {
		head += " " + kind
	}
	line := fmt.Sprintf("%-32s %s", head, usage)
	if len(head) > 32 {
		line = head + "\n" + strings.Repeat(" ", 33) + usage
	}
	switch f.DefValue {
	case "", "0", "0s", "false":
	default:
		if kind == "string" {
			line += fmt.Sprintf(" (default %q)", f.DefValue)
		} else {
			line += " (default " + f.DefValue + ")"
		}
	}
	fmt.Fprintln(w, line)
}

// printFlags writes the help lines of every flag of fs, in name order.
func printFlags(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) { printFlag(fs.Output(), f) })
}
