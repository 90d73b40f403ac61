// Command mutants is a deliberately broken adapter: an independent
// implementation of the protocol (revision 1.1) on system calls and the
// wire package, with one fault switched on by --mutant NAME
// (conformance/internal/mutants lists them, each with the requirement it
// breaks). The conformance suite must fail each on its own requirement
// (its self-test checks that); --mutant none is the control, which must
// pass.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gracefulfd/graceful/conformance/internal/kit"
	"github.com/gracefulfd/graceful/conformance/internal/mutants"
)

func main() {
	name := flag.String("mutant", "none", "the fault to switch on")
	list := flag.Bool("list", false, "list the faults and exit")
	flag.Parse()
	if *list {
		for _, m := range mutants.Table {
			fmt.Printf("%-28s %-8s %s\n", m.Name, m.ID, m.What)
		}
		return
	}
	if _, ok := mutants.ByName(*name); !ok {
		fmt.Fprintf(os.Stderr, "mutants: unknown mutant %q (see --list)\n", *name)
		os.Exit(2)
	}
	e := &engine{fault: *name}
	os.Exit(kit.Main(e, kit.Options{
		Implementation:  "mutant " + *name,
		Features:        []string{"kv", "sessions", "dial", "authorize", "limits", "abstract"},
		ExitWithoutDone: *name == "exit-early",
	}))
}
